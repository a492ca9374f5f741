"""AdamW with decay on 2-D weights only; torch's fused kernel wherever torch has one (CPU and CUDA)."""

from __future__ import annotations

import torch


def adamw_param_groups(named_params, weight_decay: float):
    decay, no_decay = [], []
    for _, p in named_params:
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


FUSED_ADAMW_DEVICES = ("cpu", "cuda", "mps")


def fused_adamw(device) -> bool:
    """Whether torch's fused (single-kernel) AdamW runs on `device`. On a CPU it takes ~1/6 of the
    default multi-tensor step's time (bench: 2.9 vs 16.8 ms for 3.6M parameters, one thread)."""
    return torch.device(device).type in FUSED_ADAMW_DEVICES


def build_adamw(model, cfg, device: str) -> torch.optim.AdamW:
    # named_parameters() yields a tied matrix once, so it sits in exactly one group.
    groups = adamw_param_groups(model.named_parameters(), cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused_adamw(device))


def build_optimizers(model, cfg, device: str) -> list[torch.optim.Optimizer]:
    """The model's own optimizers when it defines them (StoryKimi: Muon + AdamW), else AdamW.
    Each group remembers its base learning rate as `initial_lr`; the schedule scales that."""
    if hasattr(model, "configure_optimizers"):
        opts = model.configure_optimizers(cfg)
        opts = list(opts) if isinstance(opts, (list, tuple)) else [opts]
    else:
        opts = [build_adamw(model, cfg, device)]
    for opt in opts:
        for g in opt.param_groups:
            g.setdefault("initial_lr", g["lr"])
    return opts
