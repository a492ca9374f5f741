"""Continued pretraining and specialization stop cleanly on a signal and resume to exactly the run they would
have been; a finished run is reused only with the same settings."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import signal

import pytest
import torch
from safetensors.torch import load_file

from smol_experiments.moe import continued_pretraining, engine, specialize
from smolhub_hub.training.metrics import read_metrics
from tests.smol_experiments.interrupt import signal_at_call


def signal_at_step(monkeypatch, step: int, signum=signal.SIGTERM):
    return signal_at_call(monkeypatch, engine, "clip_and_step", step, signum)


def same_weights(a, b) -> bool:
    a, b = load_file(a / "model" / "model.safetensors"), load_file(b / "model" / "model.safetensors")
    return all(torch.equal(a[k], b[k]) for k in a)


def test_sigterm_checkpoint_then_resume_matches_unbroken_run(tmp_path, tiny_moe, monkeypatch, capsys):
    def args(out):
        return ["--preset", "quick", "--model", str(tiny_moe), "--output", str(out), "--steps", "12",
                "--eval-every", "4", "--log-every", "2", "--max-documents", "300", "--seq-len", "64"]

    unbroken = continued_pretraining.main(args(tmp_path / "a"))

    real_step = signal_at_step(monkeypatch, 7)
    with pytest.raises(SystemExit) as exit_info:
        continued_pretraining.main(args(tmp_path / "b"))
    assert exit_info.value.code == 128 + signal.SIGTERM
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("stopped by SIGTERM at step 7 of 12") and "rerun: python -m smol_experiments.moe." in err
    assert (tmp_path / "b" / "checkpoint" / "training_state.pt").is_file()
    assert not json.loads((tmp_path / "b" / "stage.json").read_text())["done"]
    monkeypatch.setattr(engine, "clip_and_step", real_step)
    resumed = continued_pretraining.main(args(tmp_path / "b"))

    assert "resuming from the checkpoint at step 7" in capsys.readouterr().out
    assert resumed == unbroken and resumed["val_set_sha256"]
    assert same_weights(tmp_path / "a", tmp_path / "b")
    rows = [read_metrics(tmp_path / d / "metrics.csv") for d in ("a", "b")]
    assert [(r["step"], r["name"]) for r in rows[0]] == [(r["step"], r["name"]) for r in rows[1]]  # none lost/repeated
    # Evaluations match exactly; only the training-loss row that straddles the restart averages fewer steps.
    evaluations = [[r for r in run if r["name"].startswith("val/")] for run in rows]
    assert evaluations[0] == evaluations[1]
    assert not (tmp_path / "b" / "checkpoint").exists()

    # The same command again reuses the finished run; other settings are refused, naming what differs.
    monkeypatch.setattr(engine, "clip_and_step", lambda *a: pytest.fail("a finished run must not train again"))
    assert continued_pretraining.main(args(tmp_path / "b")) == unbroken
    assert continued_pretraining.main(args(tmp_path / "b") + ["--overwrite"]) == unbroken  # nothing changed
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        continued_pretraining.main(args(tmp_path / "b") + ["--lr", "1e-3"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert "lr 0.002 → 0.001" in err and "--overwrite" in err


def test_an_interrupted_run_with_other_settings_is_refused(tmp_path, tiny_moe, monkeypatch, capsys):
    args = ["--preset", "quick", "--model", str(tiny_moe), "--output", str(tmp_path), "--steps", "6",
            "--eval-every", "3", "--max-documents", "300", "--seq-len", "64"]
    signal_at_step(monkeypatch, 2, signal.SIGINT)  # Ctrl-C saves like SIGTERM does
    with pytest.raises(SystemExit) as exit_info:
        continued_pretraining.main(args)
    assert exit_info.value.code == 128 + signal.SIGINT and (tmp_path / "checkpoint").is_dir()
    capsys.readouterr()
    with pytest.raises(SystemExit):
        continued_pretraining.main(args + ["--data", "builtin", "--steps", "8"])  # not resumed on other data
    err = capsys.readouterr().err
    assert "unfinished" in err and "data" in err and "steps 6 → 8" in err
    assert (tmp_path / "checkpoint").is_dir()


def test_specialization_resumes_exactly_across_its_stages(tmp_path, tiny_moe, monkeypatch, capsys):
    def args(out):
        return ["--preset", "quick", "--model", str(tiny_moe), "--output", str(out), "--train-docs", "40",
                "--heldout-docs", "6", "--max-len", "48", "--eval-batch-size", "18", "--stage-a-steps", "4",
                "--stage-b-steps", "4", "--eval-every", "2", "--log-every", "2", "--precision", "fp32"]

    unbroken = specialize.main(args(tmp_path / "a"))
    real_step = signal_at_step(monkeypatch, 6)  # the second step of stage B
    with pytest.raises(SystemExit):
        specialize.main(args(tmp_path / "b"))
    assert "at step 6 (stage B" in capsys.readouterr().err
    monkeypatch.setattr(engine, "clip_and_step", real_step)
    assert specialize.main(args(tmp_path / "b")) == unbroken
    assert "resuming from the checkpoint at step 6 (stage B)" in capsys.readouterr().out
    assert same_weights(tmp_path / "a", tmp_path / "b")
    rows = [[(r["step"], r["tokens"], r["name"]) for r in read_metrics(tmp_path / d / "metrics.csv")] for d in "ab"]
    assert rows[0] == rows[1]  # every row once, in order, with the same token counts: nothing lost or repeated
    for row in unbroken["domains"].values():
        low, high = row["routing_accuracy_after_ci"]
        assert low <= row["routing_accuracy_after"] <= high and row["heldout_loss_change_ci"][0] <= row[
            "heldout_loss_change"] <= row["heldout_loss_change_ci"][1]
