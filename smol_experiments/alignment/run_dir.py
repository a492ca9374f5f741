"""Output folders of the alignment stages (one stage per folder; reuse, resume or refuse by recorded settings,
see `smol_experiments.stages`), the inputs' fingerprints, and training that stops cleanly on a signal."""

from __future__ import annotations

from pathlib import Path

from smol_experiments.stages import RESUME, StopRequests, claim, fingerprint


def prepare_output_dir(output_dir: str | Path, stage: str, settings: dict,
                       overwrite: bool = False) -> tuple[str, str | None]:
    """Claim `output_dir` for `stage`: (FRESH / RESUME / REUSE, the checkpoint to resume from or None).
    A FRESH run calls `stages.begin` once its inputs are loaded."""
    from transformers.trainer_utils import get_last_checkpoint

    status = claim(Path(output_dir), stage, settings, overwrite=overwrite, flag="--output-dir")
    return status, get_last_checkpoint(str(output_dir)) if status == RESUME else None


def data_fingerprint(dataset: str) -> str:
    """sha256 of a local data file or of a folder's data files (a Hub id stands for itself)."""
    return fingerprint(dataset, ("*.json", "*.jsonl", "*.parquet"))


def stop_on_signal_callback(stop: StopRequests):
    """A Trainer callback: once a stop signal came, the current step ends with a checkpoint and training stops."""
    from transformers import TrainerCallback

    class SaveAndStop(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if stop.signum is not None:
                control.should_save = control.should_training_stop = True
            return control

    return SaveAndStop()


def train_and_save(trainer, tokenizer, output_dir: str, resume: str | None) -> dict:
    """Train (resuming when a checkpoint exists), save model + tokenizer at the top of `output_dir`, return metrics.

    A stop signal during training saves a checkpoint after the current step and raises StageInterrupted.
    """
    with StopRequests() as stop:
        trainer.add_callback(stop_on_signal_callback(stop))
        result = trainer.train(resume_from_checkpoint=resume)
    if stop.signum is not None:
        stop.interrupt(f" at step {trainer.state.global_step} of {trainer.state.max_steps} (checkpoint saved)")
    trainer.save_model(output_dir)
    tokenizer.save_pretrained(output_dir)
    margins = [log["rewards/margins"] for log in trainer.state.log_history if "rewards/margins" in log]
    metrics = {"train_loss": result.training_loss, "global_step": trainer.state.global_step, "resumed_from": resume}
    if margins:
        metrics["last_logged_reward_margin"] = margins[-1]
    return metrics
