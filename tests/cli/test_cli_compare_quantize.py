"""`smolhub compare` and `smolhub quantize`: numbers from the runs, int8 folders that load without pickle."""

import csv
import json

import pytest
import torch

from smolhub_hub import checkpoint as ckpt_io
from smolhub_hub import cli
from smolhub_hub.compare import compare, format_table
from smolhub_hub.inference import generate_text, load_model
from smolhub_hub.quantize import quantize_checkpoint
from smolhub_hub.quantized_folder import WEIGHTS, load_quantized
from smolhub_hub.registry import available_families, get_family
from tests.helpers import run_cli, tiny_run_args


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("cmp")
    out = []
    for name, lr in (("fast", "3e-3"), ("slow", "3e-4")):
        run_cli("StoryLlama/trainer.py", *tiny_run_args(base / name, steps=10,
                                                         extra=["--dim", "64", "--n-layers", "2", "--lr", lr]),
                check=True)
        out.append(base / name)
    return out


def _last(run, name):
    rows = [r for r in csv.DictReader(open(run / "metrics.csv")) if r["name"] == name]
    return float(rows[-1]["value"])


def test_compare_table_and_plot(runs, tmp_path, capsys):
    png = tmp_path / "cmp.png"
    cli.main(["compare", *map(str, runs), "--plot", str(png)])
    out = capsys.readouterr().out
    assert png.stat().st_size > 10_000
    header, rule, *rows = out.splitlines()[:4]
    assert header.split()[:4] == ["run", "family", "lr", "params"] and rows[0].startswith("fast")
    for run, s in zip(runs, compare(list(map(str, runs))), strict=False):
        cfg = ckpt_io.read_config(ckpt_io.resolve_checkpoint(run))
        assert s.train_loss == _last(run, "train/loss") and s.val_loss == _last(run, "val/loss")
        assert s.tokens == cfg["tokens_seen"] and s.params_total == cfg["param_counts"]["total"] and s.tokens_per_s > 0
    table = list(csv.DictReader(format_table(compare([str(r) for r in runs]), "csv").splitlines()))
    assert [r["run"] for r in table] == ["fast", "slow"] and float(table[0]["val loss"]) < float(table[1]["val loss"])


def test_compare_missing_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["compare", str(tmp_path / "nope"), "--plot", "none"])
    assert e.value.code == 2 and "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("scheme, library, int8_type", [("int8", "torch", "Int8Linear"),
                                                        ("weight-only", "torchao", "Int8Tensor")])
def test_quantize_reports_and_reloads_without_pickle(scheme, library, int8_type, runs, tmp_path, capsys):
    out = tmp_path / "int8"
    argv = ["quantize", str(runs[0]), str(out), "--eval-batches", "2", "--bench-tokens", "16"]
    cli.main(argv + ([] if scheme == "int8" else ["--scheme", scheme]))  # int8 is the default
    printed = capsys.readouterr().out
    assert "size" in printed and "tokens/s" in printed and "held-out" in printed and "greedy" in printed
    report = json.loads((out / "quantization_report.json").read_text())
    assert report["library"].split()[0] == library and report["scheme"] == scheme
    assert report["after"]["bytes"] < 0.6 * report["before"]["bytes"]
    assert abs(report["after"]["heldout_loss"] - report["before"]["heldout_loss"]) < 0.05
    assert len(report["after"]["greedy_tokens"]) == 16 and 0 <= report["greedy_tokens_equal"] <= 16
    assert {p.suffix for p in out.iterdir()} <= {".json", ".safetensors"}
    model, ref = load_model(out), load_model(runs[0], device="cpu")
    wqkv = model.blocks[0].attn.wqkv
    assert int8_type in (type(wqkv).__name__, type(wqkv.weight).__name__)  # torchao's Int8Tensor, not torch.ao's
    x = torch.randint(0, 500, (1, 24))
    assert (model(x).logits - ref(x).logits).abs().max() < 0.1
    text = generate_text(model, "Once upon a time", max_length=8, greedy=True)
    cli.main(["generate", str(out), "--prompt", "Once upon a time", "--max-length", "8", "--greedy"])
    assert capsys.readouterr().out.strip() == text
    with pytest.raises(SystemExit) as e:
        cli.main(["quantize", str(runs[0]), str(out), "--no-eval"])
    assert e.value.code == 2 and "is not empty" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["export", str(out), str(tmp_path / "hf")])
    assert e.value.code == 2 and "export the checkpoint it was made from" in capsys.readouterr().err


def _random_checkpoint(family, runs, tmp_path):
    """Quick-preset weights of `family` with the tokenizer and data config of a trained run."""
    src = ckpt_io.read_config(ckpt_io.resolve_checkpoint(runs[0]))
    fam = get_family(family)
    mcfg = fam.resolve("quick")[0].replace(vocab_size=512)
    torch.manual_seed(0)
    m = fam.model_class()(mcfg)
    tok = load_model(runs[0], device="cpu").tokenizer
    return ckpt_io.save_checkpoint(tmp_path / "run", 1, m, {**src, "family": family, "model": mcfg.to_dict(),
                                                            "param_counts": m.param_counts()}, tok)


def _relative_error(q, ref, x):
    return ((q(x).logits - ref(x).logits).abs().max() / ref(x).logits.abs().max()).item()


@pytest.mark.parametrize("family", available_families())
def test_quantize_and_stage_every_family(family, runs, tmp_path):
    """Quick-preset weights of each registered family: int8 logits follow fp32, the staged repo loads in
    transformers."""
    from transformers import AutoModelForCausalLM

    from smolhub_hub.publish import stage

    ckpt = _random_checkpoint(family, runs, tmp_path)
    report = quantize_checkpoint(str(ckpt), tmp_path / "q", evaluate=False, bench_tokens=4)
    assert report["quantized_modules"] > 0 and (tmp_path / "q" / WEIGHTS).exists()
    q, ref = load_quantized(tmp_path / "q"), load_model(ckpt, device="cpu")
    x = torch.randint(0, 500, (2, 16))
    assert _relative_error(q, ref, x) < 0.05
    assert len(generate_text(q, "Once", max_length=4, greedy=True)) > 0  # the KV-cache path too
    repo = stage(str(ckpt), tmp_path / "repo", "me/x")
    assert (repo / "smolhub" / "model.safetensors").exists()
    if family == "SmolTransformer":  # its quick preset uses RMSNorm, which GPT-2 lacks: pushed natively only
        assert not (repo / "config.json").exists() and "no transformers export" in (repo / "README.md").read_text()
        return
    hf = AutoModelForCausalLM.from_pretrained(repo).eval()
    assert (hf(x).logits - ref(x).logits).abs().max() < 1e-3


def test_dynamic_int8_activations_follow_fp32(runs, tmp_path):
    ckpt = _random_checkpoint("StoryLlama", runs, tmp_path)
    report = quantize_checkpoint(str(ckpt), tmp_path / "q", evaluate=False, bench_tokens=4, scheme="dynamic")
    q = load_quantized(tmp_path / "q")
    assert report["scheme"] == "dynamic" and q.checkpoint_config["quantization"]["config"].startswith("Int8Dynamic")
    assert _relative_error(q, load_model(ckpt, device="cpu"), torch.randint(0, 500, (2, 16))) < 0.05


def test_a_folder_quantized_by_an_older_smolhub_is_refused_with_the_fix(runs, tmp_path):
    """Folders of the torch.ao layout (format smolhub-int8-1): one clear line, never random weights."""
    from safetensors.torch import save_file

    from smolhub_hub.errors import UserError

    out = tmp_path / "int8"
    out.mkdir()
    cfg = ckpt_io.read_config(ckpt_io.resolve_checkpoint(runs[0]))
    cfg["quantization"] = {"format": "smolhub-int8-1", "modules": ["lm_head"]}
    (out / "config.json").write_text(json.dumps(cfg))
    save_file({"lm_head.q": torch.zeros(4, 4, dtype=torch.int8)}, out / WEIGHTS)
    with pytest.raises(UserError, match="older SmolHub.*quantize the checkpoint again"):
        load_model(out)


def test_the_documented_transformers_int8_route_from_an_export(runs, tmp_path):
    """docs: `smolhub export`, then transformers quantizes it with torchao on load, saves and reloads it."""
    from torchao.quantization import Int8WeightOnlyConfig
    from transformers import AutoModelForCausalLM, TorchAoConfig

    out = cli.export_to_hf(str(runs[0]), tmp_path / "hf")
    q = AutoModelForCausalLM.from_pretrained(out, quantization_config=TorchAoConfig(Int8WeightOnlyConfig()))
    q.save_pretrained(tmp_path / "hf-int8")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "hf-int8").eval()
    assert type(reloaded.model.layers[0].self_attn.q_proj.weight).__name__ == "Int8Tensor"
    assert _relative_error(reloaded, load_model(runs[0], device="cpu"), torch.randint(0, 500, (1, 16))) < 0.05
