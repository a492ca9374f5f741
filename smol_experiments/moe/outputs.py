"""Checkpoints of the MoE training stages (their folders are claimed through `smol_experiments.stages`).

A checkpoint is written to a temporary folder and renamed, so a crash while saving never destroys the
previous one. A resumed run drops the metric rows logged after its checkpoint (smolhub_hub's MetricsLog).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from smol_experiments.stages import fingerprint
from smolhub_hub.data.sources import LOCAL_SUFFIXES

CHECKPOINT = "checkpoint"
STATE = "training_state.pt"


def data_fingerprint(source: str) -> str:
    """sha256 of a local text file or folder (what `data.load_texts` reads); a Hub id or a name stands for itself."""
    return fingerprint(source, tuple(f"**/*{suffix}" for suffix in LOCAL_SUFFIXES))


def has_checkpoint(out: Path) -> bool:
    return (out / CHECKPOINT / STATE).is_file()


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
