"""The one-command pipeline (`run_pipeline --quick`), its resume after SIGTERM, and the command-line contract of
every MoE script."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from smol_experiments.moe import analyze, continued_pretraining, run_pipeline, specialize, upcycle
from smolhub_hub.training import metrics

REPO = Path(__file__).resolve().parents[2]


CPT = "--steps 40 --eval-every 10 --log-every 5 --max-documents 450 --seq-len 64"
SPEC = "--stage-a-steps 6 --stage-b-steps 6 --eval-every 3 --train-docs 40 --heldout-docs 8 --max-len 64"


def _sigterm_after_first_checkpoint(cmd: list[str], output: Path) -> subprocess.CompletedProcess:
    """Run the real command and send it SIGTERM once continued pretraining has saved its first checkpoint."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, cwd=output, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while proc.poll() is None and not (output / "cpt" / "checkpoint").is_dir() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def _weights_time(folder: Path) -> int:
    return (folder / "model.safetensors").stat().st_mtime_ns


def test_quick_pipeline_stops_on_sigterm_and_the_same_command_continues(tmp_path, monkeypatch, capsys):
    # The real --quick command (shorter stages, same code path), preempted during continued pretraining.
    argv = ["--quick", "--output", str(tmp_path), "--cpt-args", CPT, "--specialize-args", SPEC]
    stopped = _sigterm_after_first_checkpoint([sys.executable, "-m", "smol_experiments.moe.run_pipeline", *argv],
                                              tmp_path)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    last_line = stopped.stderr.strip().splitlines()[-1]
    assert last_line.startswith("stopped by SIGTERM at step") and "of 40 (checkpoint saved)" in last_line
    assert last_line.endswith(f"rerun: python -m smol_experiments.moe.run_pipeline --quick --output {tmp_path} "
                              f"--cpt-args '{CPT}' --specialize-args '{SPEC}'")
    assert not (tmp_path / "specialize").exists()  # the pipeline stopped with its interrupted stage
    upcycled = _weights_time(tmp_path / "upcycled")

    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # --quick would leave one thread to later tests
    summary = run_pipeline.main(argv)  # the same command again, here in-process
    out = capsys.readouterr().out
    assert "upcycle: reusing the finished run" in out and "resuming from the checkpoint at step" in out
    assert _weights_time(tmp_path / "upcycled") == upcycled
    assert json.loads((tmp_path / "pipeline_summary.json").read_text()) == summary
    assert summary["parity"]["greedy_identical"] and summary["parity"]["max_abs_logit_diff"] < 1e-5
    cpt = summary["continued_pretraining"]
    assert cpt["val_loss_after"] < cpt["val_loss_before"]
    curves = metrics.curves(tmp_path / "cpt" / "metrics.csv")  # smolhub_hub's reader, as for the trainers' runs
    assert curves["val/loss"][0] == [0, 10, 20, 30, 40]
    assert curves["train/loss"][0] == list(range(5, 41, 5))  # none lost or repeated
    assert all(0 < v <= 1 for name in ("val/active_share", "val/router_entropy") for v in curves[name][2])
    loads = [name for name in curves if name.startswith("val/moe/layer")]
    assert len(loads) == 4 * 3 and all(curves[name][0] == [0, 10, 20, 30, 40] for name in loads)  # layers x experts
    assert (tmp_path / "report" / "report.html").stat().st_size > 50_000
    from transformers import AutoModelForCausalLM

    specialized_model = AutoModelForCausalLM.from_pretrained(tmp_path / "specialize" / "model")
    assert type(specialized_model).__name__ == "MixtralForCausalLM"

    # Changed settings: refused, naming what differs; --overwrite redoes that stage and the one after it only.
    changed = argv[:4] + [CPT + " --lr 1e-3"] + argv[5:]
    with pytest.raises(SystemExit) as exit_info:
        run_pipeline.main(changed)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "lr 0.002 → 0.001" in err and "--overwrite" in err
    specialized = _weights_time(tmp_path / "specialize" / "model")
    monkeypatch.setattr(analyze, "build_report", lambda *a, **k: tmp_path / "report" / "report.html")  # time
    redone = run_pipeline.main(changed + ["--overwrite"])
    assert _weights_time(tmp_path / "upcycled") == upcycled
    assert _weights_time(tmp_path / "specialize" / "model") != specialized
    assert redone["continued_pretraining"]["val_loss_after"] != cpt["val_loss_after"]


@pytest.mark.parametrize("module", [upcycle, continued_pretraining, specialize, analyze, run_pipeline])
def test_every_script_has_help(module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    assert "usage: python -m smol_experiments.moe." in capsys.readouterr().out


def test_user_mistakes_give_one_line_and_exit_code_2(tmp_path, capsys):
    cases = [
        (continued_pretraining, ["--model", str(tmp_path / "nope")], "upcycle"),
        (specialize, ["--model", str(tmp_path), "--steps-typo"], "--steps-typo"),
        (specialize, ["--model", str(tmp_path), "--stage-a-steps", "1", "--target-mass", "1.5"], "target-mass"),
        (specialize, ["--data", "wikipedia"], "--data"),
        (continued_pretraining, ["--batch-size", "0"], "--batch-size must be >= 1"),
        (continued_pretraining, ["--lr", "-1"], "--lr must be > 0"),
        (continued_pretraining, ["--precision", "fp8"], "--precision"),
        (continued_pretraining, ["--steps", "ten"], "--steps"),
        (upcycle, ["--output", str(tmp_path / "u"), "--num-experts", "0"], "--num-experts"),
        (analyze, ["--specialize", str(tmp_path)], "routing_after.json"),
        (run_pipeline, ["--quick", "--output", str(tmp_path / "p"), "--cpt-args", "--lr '1e-3"], "--cpt-args"),
        (run_pipeline, ["--seed", "-1"], "--seed"),
        (run_pipeline, ["--output", str(tmp_path / "a-file" / "run")], "is a file"),
        (upcycle, ["--output", str(tmp_path / "u"), "--prompt", " "], "--prompt"),
        (run_pipeline, ["--quick", "--real"], "not allowed with argument"),
        (run_pipeline, ["--quick", "--data-dir", str(tmp_path / "d"), "--output", str(tmp_path / "p")], "--data-dir"),
        (run_pipeline, ["--data-dir", "data", "--output", str(tmp_path / "p")], "--data-dir"),  # the default, given
        (upcycle, ["--output", str(tmp_path / "u"), "--parity-docs", "0"], "--parity-docs"),
    ]
    (tmp_path / "a-file").write_text("not a folder")

    for module, argv, needle in cases:
        with pytest.raises(SystemExit) as exit_info:
            module.main(argv)
        assert exit_info.value.code == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and needle in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # refused before anything was written


def test_paths_expand_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert continued_pretraining.parse_config(continued_pretraining.PretrainConfig, ["--output", "~/cpt"], "p", "",
                                              {}).output == str(tmp_path / "cpt")
    assert upcycle.main_args(["--output", "~/up", "--model", "~/dense"]).model == str(tmp_path / "dense")
