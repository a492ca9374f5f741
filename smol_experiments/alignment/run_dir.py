"""Output folders of the stages: one stage per folder, resume from its last checkpoint, never overwrite.

Each stage writes `stage.json` ({"stage": "sft", "done": false, ...}) before it writes anything else.
A folder that belongs to another stage, or that holds files of unknown origin, is refused; a folder
whose stage finished is refused too (its model is the result; pick a new folder to train again).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from smolhub_hub.errors import UserError

MARKER = "stage.json"


def read_marker(output_dir: str | Path) -> dict | None:
    path = Path(output_dir) / MARKER
    return json.loads(path.read_text()) if path.is_file() else None


def is_done(output_dir: str | Path, stage: str) -> bool:
    marker = read_marker(output_dir)
    return bool(marker and marker.get("stage") == stage and marker.get("done"))


def prepare_output_dir(output_dir: str | Path, stage: str, settings: dict) -> str | None:
    """Claim `output_dir` for `stage`; returns the checkpoint to resume from, or None for a fresh start."""
    from transformers.trainer_utils import get_last_checkpoint

    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--output-dir {out} is a file; give a folder.")
    marker = read_marker(out)
    if marker is None:
        if out.exists() and any(out.iterdir()):
            raise UserError(f"--output-dir {out} is not empty and was not made by a {stage} run; use a new folder.")
        out.mkdir(parents=True, exist_ok=True)
        write_marker(out, {"stage": stage, "done": False, "settings": settings})
        return None
    if marker.get("stage") != stage:
        raise UserError(
            f"--output-dir {out} holds a '{marker.get('stage')}' run; {stage} will not write there. Use a new folder."
        )
    if marker.get("done"):
        raise UserError(f"--output-dir {out} already holds a finished {stage} model; use a new folder to train again.")
    return get_last_checkpoint(str(out))


def write_marker(output_dir: str | Path, marker: dict) -> None:
    (Path(output_dir) / MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def mark_done(output_dir: str | Path, metrics: dict) -> None:
    marker = read_marker(output_dir) or {}
    write_marker(output_dir, {**marker, "done": True, "metrics": metrics})


def model_fingerprint(model: str) -> str:
    """sha256 of a local model's weights (a Hub id stands for itself): an older model at the same path won't match."""
    path = Path(model)
    if not path.is_dir():
        return model
    digest = hashlib.sha256()
    for weights in sorted(path.glob("*.safetensors")):
        with open(weights, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def train_and_save(trainer, tokenizer, output_dir: str, resume: str | None) -> dict:
    """Train (resuming when a checkpoint exists), save model + tokenizer at the top of `output_dir`, return metrics."""
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(output_dir)
    tokenizer.save_pretrained(output_dir)
    margins = [log["rewards/margins"] for log in trainer.state.log_history if "rewards/margins" in log]
    metrics = {"train_loss": result.training_loss, "global_step": trainer.state.global_step, "resumed_from": resume}
    if margins:
        metrics["last_logged_reward_margin"] = margins[-1]
    return metrics
