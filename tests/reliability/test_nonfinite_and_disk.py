"""In-process faults: NaN / inf losses and gradients, and checkpoint writes that fail (no space,
permission denied). Training says what happened in one line and never loses the last good checkpoint."""

import dataclasses
import errno
import json
import os

import pytest
import torch

from smolhub_hub import checkpoint as ck
from smolhub_hub.training import main
from StoryLlama.config import FAMILY
from StoryLlama.model import StoryLlama
from tests.reliability.conftest import latest, run_args, weights


def faulty_family(nan_loss=(), inf_grad=()):
    """StoryLlama whose n-th training forward (one per step attempt here) returns a NaN loss, or
    whose n-th backward leaves an inf gradient while the loss stays finite."""

    class Faulty(StoryLlama):
        attempts = 0

        def forward(self, idx, targets=None, cache=None):
            out = super().forward(idx, targets, cache)
            if not self.training or targets is None:
                return out
            n, Faulty.attempts = Faulty.attempts, Faulty.attempts + 1
            if n in nan_loss:
                return dataclasses.replace(out, loss=out.loss * float("nan"), lm_loss=out.lm_loss * float("nan"))
            if n in inf_grad:
                out.logits.register_hook(lambda g: g * float("inf"))
            return out

    return dataclasses.replace(FAMILY, model_class=lambda: Faulty)


def train(family, out, steps, capsys, *extra):
    summary = main(family, run_args("StoryLlama", out, steps, ["--max-bad-steps", "3", *extra]))
    return summary, capsys.readouterr()


def test_non_finite_steps_are_skipped_and_counted(tmp_path, capsys):
    family = faulty_family(nan_loss={3, 4}, inf_grad={7})
    summary, io = train(family, tmp_path / "run", 9, capsys)
    assert summary["step"] == 9 and summary["skipped_steps"] == 3
    assert "non-finite loss or gradient at step 3; update skipped (2 in a row)" in io.out
    assert "at step 5; update skipped (1 in a row)" in io.out  # attempt 7 is step 5 after two skips
    state = json.loads((latest(tmp_path / "run") / "training_state.json").read_text())
    assert ["skipped_steps", 3] in state["__dict__"]
    assert all(torch.isfinite(w).all() for w in weights(tmp_path / "run").values())


def test_n_non_finite_steps_in_a_row_stop_with_the_last_good_state(tmp_path, capsys):
    family = faulty_family(nan_loss=set(range(7, 100)))
    with pytest.raises(SystemExit) as stop:
        train(family, tmp_path / "run", 12, capsys)
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert "error: 3 non-finite steps in a row at step 7: training stopped; the last good state is saved" in err
    assert "Traceback" not in err
    ckpt = latest(tmp_path / "run")
    assert ckpt.name == "step_0000007" and ck.load_training_state(ckpt)["step"] == 7
    assert all(torch.isfinite(w).all() for w in weights(tmp_path / "run").values())


@pytest.mark.parametrize("code, where", [(errno.ENOSPC, "save_file"), (errno.EACCES, "_fsync_dir")])
def test_a_failing_checkpoint_write_stops_clearly_and_keeps_the_last_one(tmp_path, capsys, monkeypatch, code,
                                                                         where):
    real = getattr(ck, where)

    def failing(*args, **kw):
        # save_file(tensors, path) writes into the new folder; _fsync_dir(run_dir) runs after its rename.
        path = args[1] if where == "save_file" else args[0]
        if "step_0000006" in str(path) or (path / "step_0000006").exists():
            raise OSError(code, os.strerror(code))
        return real(*args, **kw)

    monkeypatch.setattr(ck, where, failing)
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        train(FAMILY, run, 12, capsys)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        f"error: could not write a checkpoint to {run} ({os.strerror(code)}); free disk space or "
        "fix permissions. The previous checkpoint is intact."]
    assert latest(run).name == "step_0000003"
    assert not list(run.glob(".step_*.tmp"))  # a failed write frees what it had written
    from StoryLlama.inference import load_model
    assert load_model(str(run), device="cpu")
