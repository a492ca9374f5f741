"""The MoE stages train with smolhub_hub's toolkit: its device and precision rule, its AdamW, its schedule and its
metrics.csv, which smolhub_hub's readers and `smolhub compare` read like a trainer's run."""

import json

import pytest
import torch

from smol_experiments.moe import continued_pretraining, engine
from smol_experiments.moe.cli import parse_config
from smol_experiments.moe.continued_pretraining import PretrainConfig
from smol_experiments.moe.specialize import SpecializeConfig
from smolhub_hub import cli
from smolhub_hub.errors import UserError
from smolhub_hub.training.metrics import curves, read_metrics
from smolhub_hub.training.schedule import lr_factor

CPT = ["--preset", "quick", "--steps", "4", "--eval-every", "2", "--log-every", "1", "--max-documents", "150",
       "--seq-len", "64", "--warmup-steps", "2"]


@pytest.fixture(scope="module")
def cpt_run(tiny_moe, tmp_path_factory):
    out = tmp_path_factory.mktemp("toolkit") / "cpt"
    return out, continued_pretraining.run([*CPT, "--model", str(tiny_moe), "--output", str(out)])


def test_metrics_are_smolhub_metrics_and_compare_reads_them(cpt_run, tmp_path, capsys):
    out, summary = cpt_run
    rows = read_metrics(out / "metrics.csv")  # the trainers' reader: refuses any other layout
    assert {r["name"] for r in rows} >= {"train/loss", "train/lr", "train/grad_norm", "val/loss", "val/balance_loss"}
    c = curves(out / "metrics.csv")
    assert c["val/loss"][0] == [0, 2, 4] and c["val/loss"][1] == [0, 2 * 8 * 64, 4 * 8 * 64]  # steps, tokens
    lr = json.loads((out / "config.json").read_text())["lr"]
    assert c["train/lr"][2] == pytest.approx([lr * lr_factor(s - 1, 2, 4, 0.1) for s in range(1, 5)], rel=1e-5)

    png = tmp_path / "compare.png"
    cli.main(["compare", str(out), "--plot", str(png)])
    row = capsys.readouterr().out.splitlines()[2].split()
    assert row[:5] == ["cpt", "-", "-", "-", "4"]  # run, family, params, active (a transformers model), steps
    assert float(row[7]) == pytest.approx(summary["val_loss_after"], abs=1e-4)
    assert png.stat().st_size > 10_000


def test_device_precision_and_optimizer_are_smolhub_hubs(tiny_moe, monkeypatch):
    device, ctx = engine.device_and_autocast("auto")
    if device.type == "cpu":
        assert not isinstance(ctx, torch.autocast)  # fp32 on a CPU, as the trainers' --dtype auto
    monkeypatch.setattr(engine, "amp_dtype", lambda requested, device: torch.float16)
    assert not isinstance(engine.device_and_autocast("auto")[1], torch.autocast)  # no loss scaler here: never fp16

    from smolhub_hub.training.optim import adamw

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    opt = adamw(model.parameters(), 1e-3, 0.1, engine.BETAS, "cpu")
    assert opt.defaults["fused"]  # torch's fused kernel on a CPU too, as the trainers use it
    assert [(len(g["params"]), g["weight_decay"]) for g in opt.param_groups] == [(1, 0.1), (3, 0.0)]


def test_stage_flags_come_from_the_trainers_generator(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = parse_config(PretrainConfig, ["--output", "~/cpt", "--no-overwrite", "--grad-clip", "0.5"], "p", "", {})
    assert (cfg.output, cfg.overwrite, cfg.grad_clip) == (str(tmp_path / "cpt"), False, 0.5)
    for config in (PretrainConfig, SpecializeConfig):  # a shared setting, declared once, checked the same way
        with pytest.raises(UserError, match=r"--grad-clip must be > 0 \(got 0.0\)"):
            parse_config(config, ["--grad-clip", "0"], "p", "", {})
