"""Learning-rate and sequence-length schedules, as pure functions of the step."""

from __future__ import annotations

import math


def lr_factor(step: int, warmup: int, total: int, min_ratio: float, restarts: int = 0) -> float:
    """Linear warmup to 1, then cosine down to `min_ratio`; with restarts, the cosine repeats
    (restarts + 1) times over the remaining steps (SGDR-style warm restarts)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup, 1)
    cycle = span / (restarts + 1)
    t = ((step - warmup) % cycle) / cycle if step - warmup < span else 1.0
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def scale_lr(optimizers, factor: float) -> None:
    """Set every param group's lr to its base lr × `factor`. The base lr is the group's `initial_lr` (the key
    torch's LR schedulers use), remembered from its lr the first time: groups with different base rates
    (Muon's and AdamW's) keep their ratio, and a resumed optimizer brings its base rates back with its state."""
    for opt in optimizers:
        for g in opt.param_groups:
            g["lr"] = g.setdefault("initial_lr", g["lr"]) * factor


SEQ_LEN_WARMUP_START = 64


def seq_len_at(step: int, full: int, warmup_steps: int, start: int = SEQ_LEN_WARMUP_START, multiple: int = 8) -> int:
    """Progressive sequence length: `start` tokens at step 0 growing linearly to `full`."""
    if warmup_steps <= 0 or step >= warmup_steps or full <= start:
        return full
    n = start + (full - start) * step / warmup_steps
    return min(full, max(start, int(n) // multiple * multiple))
