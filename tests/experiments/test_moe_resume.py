"""Continued pretraining stops cleanly on SIGTERM and resumes to exactly the run it would have been."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import signal

import pytest
import torch
from safetensors.torch import load_file

from smol_experiments.moe import continued_pretraining, engine
from smol_experiments.moe.fixtures import save_tiny_moe


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_sigterm_checkpoint_then_resume_matches_unbroken_run(tmp_path, monkeypatch, capsys):
    moe = save_tiny_moe(tmp_path / "upcycled")
    args = lambda out: ["--preset", "quick", "--model", str(moe), "--output", str(out), "--steps", "12",
                        "--eval-every", "4", "--log-every", "2", "--max-documents", "300", "--seq-len", "64"]
    unbroken = continued_pretraining.main(args(tmp_path / "a"))

    real_step, calls = engine.clip_and_step, []

    def preempt_at_step_7(*a):
        calls.append(1)
        if len(calls) == 7:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(*a)

    monkeypatch.setattr(engine, "clip_and_step", preempt_at_step_7)
    assert continued_pretraining.main(args(tmp_path / "b")) == {"stopped_at_step": 7}
    assert (tmp_path / "b" / "checkpoint" / "training_state.pt").is_file()
    monkeypatch.setattr(engine, "clip_and_step", real_step)
    resumed = continued_pretraining.main(args(tmp_path / "b"))

    assert resumed == unbroken
    a, b = (load_file(tmp_path / d / "model" / "model.safetensors") for d in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [(tmp_path / d / "metrics.csv").read_text().splitlines() for d in ("a", "b")]
    assert [r.split(",")[0] for r in rows[0]] == [r.split(",")[0] for r in rows[1]]  # no step lost or repeated
    # Evaluations match exactly; only the training-loss row that straddles the restart averages fewer steps.
    assert [r for r in rows[0] if ",,,,,,," in r] == [r for r in rows[1] if ",,,,,,," in r]
    assert not (tmp_path / "b" / "checkpoint").exists()

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:  # a finished run is never overwritten by accident
        continued_pretraining.main(args(tmp_path / "b"))
    assert exit_info.value.code == 2 and "--overwrite" in capsys.readouterr().err
