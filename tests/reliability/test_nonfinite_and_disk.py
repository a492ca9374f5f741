"""In-process faults: NaN / inf losses, gradients and activations, fp16 overflow, a really full disk (a small
tmpfs, when run as root) under checkpoints and data caches, and a permission error after a checkpoint's rename.
Training says what happened in one line, a skipped step leaves no trace, nothing half-written stays behind, and
the last good checkpoint is never lost or replaced by a non-finite one."""

import dataclasses
import errno
import json
import os

import pytest
import torch

from smolhub_hub import checkpoint as ck
from smolhub_hub.training import main
from StoryKimi.config import FAMILY as KIMI
from StoryLlama.config import FAMILY
from StoryLlama.model import StoryLlama
from tests.reliability.conftest import assert_same_weights, latest, run_args, weights
from tests.reliability.disk import fill, free_bytes, small_disk


def building(family, cls):
    """`family` building `cls`, a test's subclass that no module path names."""
    family = dataclasses.replace(family)
    object.__setattr__(family, "model_class", lambda: cls)
    return family


def faulty_family(family=FAMILY, nan_loss=(), inf_grad=(), poisoned_input=None, poisoned_update=None):
    """`family` whose n-th training forward (one per step attempt here) returns a NaN loss (`nan_loss`), leaves
    an inf gradient while the loss stays finite (`inf_grad`), or runs on embeddings multiplied by
    `poisoned_input[n]` (NaN or inf: every activation of that attempt, attention logits and router inputs
    included, is non-finite); after optimizer step `poisoned_update`, a weight becomes NaN."""
    poisoned_input = poisoned_input or {}

    class Faulty(family.model_class()):
        attempts, updates, poison = 0, 0, None

        def __init__(self, config):
            super().__init__(config)
            self.tok_emb.register_forward_hook(lambda m, args, x: x if Faulty.poison is None else x * Faulty.poison)

        def forward(self, idx, targets=None, cache=None):
            if not self.training or targets is None:
                return super().forward(idx, targets, cache)
            n, Faulty.attempts = Faulty.attempts, Faulty.attempts + 1
            Faulty.poison = poisoned_input.get(n)
            if n in inf_grad:
                self.loss_chunk_size = 0  # the full logits, to hook their gradient
            out = super().forward(idx, targets, cache)
            Faulty.poison = None
            if n in nan_loss:
                return dataclasses.replace(out, loss=out.loss * float("nan"), lm_loss=out.lm_loss * float("nan"))
            if n in inf_grad:
                out.logits.register_hook(lambda g: g * float("inf"))
            return out

        def on_optimizer_step(self):
            super().on_optimizer_step()
            Faulty.updates += 1
            if Faulty.updates == poisoned_update:
                with torch.no_grad():
                    self.norm.weight.fill_(float("nan"))

    return building(family, Faulty)


def train(family, out, steps, capsys, *extra):
    summary = main(family, run_args(family.name, out, steps, ["--max-bad-steps", "3", *extra]))
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


def filling_family(disk, at_attempt: int, leave: int):
    """StoryLlama whose n-th training forward fills `disk` but for `leave` bytes: the disk runs full mid-run."""

    class Filling(StoryLlama):
        attempts = 0

        def forward(self, idx, targets=None, cache=None):
            if self.training and targets is not None:
                Filling.attempts += 1
                if Filling.attempts == at_attempt:
                    fill(disk, leave)
            return super().forward(idx, targets, cache)

    return building(FAMILY, Filling)


def one_error_line(capsys, stop) -> str:
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err
    [line] = [x for x in err.splitlines() if x.startswith("error:")]
    return line


def test_a_really_full_disk_stops_a_checkpoint_write_in_one_line_and_keeps_the_last_one(tmp_path, capsys):
    from StoryLlama.inference import load_model

    with small_disk(tmp_path / "disk", "8m") as disk:
        run = disk / "run"
        # Full after step 3's checkpoint, with room left for metrics rows but not for step 6's weights.
        with pytest.raises(SystemExit) as stop:
            train(filling_family(disk, at_attempt=4, leave=64 << 10), run, 12, capsys)
        assert one_error_line(capsys, stop) == (
            f"error: could not write a checkpoint to {run} (No space left on device (os error 28)); free disk "
            "space or fix permissions. The previous checkpoint is intact.")
        assert latest(run).name == "step_0000003" and not list(run.glob(".step_*"))
        assert free_bytes(disk) > 32 << 10  # what the failed write had written is freed
        assert load_model(str(run), device="cpu")
        (disk / "filler").unlink()  # what the message says to do; then the run continues
        assert train(FAMILY, run, 12, capsys, "--resume")[0]["step"] == 12


def test_a_really_full_disk_while_the_data_cache_is_written_leaves_no_half_cache(tmp_path, capsys):
    with small_disk(tmp_path / "disk", "128k") as disk:
        with pytest.raises(SystemExit) as stop:
            train(FAMILY, tmp_path / "run", 3, capsys, "--cache-dir", str(disk))
        assert one_error_line(capsys, stop) == (
            f"error: could not write the data cache in {disk} (No space left on device); free disk space, "
            "or point --cache-dir at a disk with room")
        assert list(disk.iterdir()) == []


def test_a_permission_error_after_the_rename_stops_clearly_and_keeps_the_last_checkpoint(tmp_path, capsys,
                                                                                       monkeypatch):
    """Simulated: root ignores permissions, so EACCES is raised by _fsync_dir once step 6 is renamed in."""
    real = ck._fsync_dir

    def failing(run_dir):
        if (run_dir / "step_0000006").exists():
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))
        return real(run_dir)

    monkeypatch.setattr(ck, "_fsync_dir", failing)
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        train(FAMILY, run, 12, capsys)
    assert one_error_line(capsys, stop) == (
        f"error: could not write a checkpoint to {run} (Permission denied); free disk space or fix permissions. "
        "The previous checkpoint is intact.")
    assert latest(run).name == "step_0000003"
    assert not list(run.glob(".step_*.tmp"))
    from StoryLlama.inference import load_model
    assert load_model(str(run), device="cpu")


def test_a_skipped_step_leaves_no_trace_in_qk_clip_or_expert_loads(tmp_path, capsys):
    """Reference bug: a skipped step's NaN max logit and expert load stayed behind; the next good step's QK-clip
    scaled the weights by NaN, every later step failed, and the NaN weights were saved as "the last good state".
    Now the run equals one in which the poisoned attempts never happened."""
    extra = ["--qk-clip-tau", "1", "--bias-update-rate", "0.01"]  # tau 1: every step clips some head
    train(faulty_family(KIMI), tmp_path / "clean", 8, capsys, *extra)
    family = faulty_family(KIMI, poisoned_input={2: float("nan"), 5: float("inf")})
    summary, io = train(family, tmp_path / "skipped", 8, capsys, *extra)
    assert summary["step"] == 8 and summary["skipped_steps"] == 2, io.out
    assert_same_weights(tmp_path / "clean", tmp_path / "skipped")


def test_a_non_finite_state_is_never_saved_as_the_last_good_one(tmp_path, capsys):
    """Reference bug: the stop after --max-bad-steps saved whatever the weights were, NaN included."""
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        train(faulty_family(poisoned_update=4), run, 12, capsys)  # after step 4 every step is non-finite
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err
    assert "error: 3 non-finite steps in a row at step 4: training stopped; the weights or optimizer state are " \
           f"not finite, so they were not saved; {run} keeps its earlier checkpoints" in err
    assert latest(run).name == "step_0000003"
    assert all(torch.isfinite(w).all() for w in weights(run).values())


def test_an_fp16_overflow_is_skipped_and_the_loss_scale_backs_off(tmp_path, capsys):
    """Reference bug: the GradScaler was not updated on a skipped step, so the next step crashed ("unscale_() has
    already been called on this optimizer since the last update()"). fp16 runs on a CPU too (torch's CPU
    autocast and GradScaler), so this is the engine's real fp16 path."""
    summary, io = train(faulty_family(inf_grad={2}), tmp_path / "run", 6, capsys, "--dtype", "float16")
    assert summary["step"] == 6 and summary["skipped_steps"] == 1, io.err
    assert "non-finite loss or gradient at step 2; update skipped (1 in a row)" in io.out
    scaler = ck.load_training_state(latest(tmp_path / "run"))["scaler"]
    assert scaler["scale"] == 2.0 ** 15  # 2^16 halved once (growing again takes 2000 clean steps)
    assert all(torch.isfinite(w).all() for w in weights(tmp_path / "run").values())
