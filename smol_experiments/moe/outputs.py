"""Output folders: one stage per folder, never silently overwritten, resumable while unfinished.

A stage writes `stage.json` ({"stage": ..., "done": false}) before anything else and marks it done at the
end. A folder of another stage, or with files of unknown origin, is refused; a finished one is refused
unless `--overwrite`. Checkpoints are written to a temporary folder and renamed, so a crash while saving
never destroys the previous checkpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from smolhub_hub.errors import UserError

MARKER = "stage.json"
CHECKPOINT = "checkpoint"
STATE = "training_state.pt"


def claim(out: Path, stage: str, settings: dict, overwrite: bool) -> bool:
    """Make `out` this stage's folder; True when an unfinished run with a checkpoint should be resumed."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--output {out} is a file; give a folder.")
    marker = json.loads((out / MARKER).read_text()) if (out / MARKER).is_file() else None
    if marker is not None and marker.get("stage") != stage:
        raise UserError(f"--output {out} holds a '{marker.get('stage')}' run; use another folder.")
    if marker is None and out.exists() and any(out.iterdir()):
        raise UserError(f"--output {out} is not empty and was not made by {stage}; use a new folder.")
    if marker is not None and marker.get("done"):
        if not overwrite:
            raise UserError(f"--output {out} already holds a finished {stage} run; use a new folder or --overwrite.")
        shutil.rmtree(out)
        marker = None
    out.mkdir(parents=True, exist_ok=True)
    if marker is None:
        (out / MARKER).write_text(json.dumps({"stage": stage, "done": False, "settings": settings}, indent=2))
        return False
    return (out / CHECKPOINT / STATE).is_file()


def mark_done(out: Path, summary: dict):
    marker = json.loads((out / MARKER).read_text())
    (out / MARKER).write_text(json.dumps({**marker, "done": True, "summary": summary}, indent=2))


def save_checkpoint(out: Path, model, tokenizer, state: dict):
    """model + tokenizer + training state (tensors and plain values only: loads with weights_only=True)."""
    tmp, final = out / (CHECKPOINT + ".tmp"), out / CHECKPOINT
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    torch.save(state, tmp / STATE)
    old = out / (CHECKPOINT + ".old")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def load_state(out: Path) -> dict:
    return torch.load(out / CHECKPOINT / STATE, weights_only=True)


def truncate_csv(path: Path, last_step: int):
    """Drop rows logged after the checkpoint, so a resumed run does not log a step twice."""
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:1] + [l for l in lines[1:] if int(l.split(",", 1)[0]) <= last_step]))
