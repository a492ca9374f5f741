"""Training pieces shared by continued pretraining and specialization.

Weights stay fp32 (the optimizer's master copy); on a GPU the forward pass runs under bf16 autocast.
Losses are computed here rather than by `labels=`: transformers' Mixtral adds its own aux loss (pooled
over all layers) to `loss`, and we want the LM loss and a per-layer, padding-aware balance loss apart.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from smolhub_hub.errors import UserError


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device, precision: str):
    """bf16 autocast on a GPU for 'auto'/'bf16'; plain fp32 otherwise (CPU bf16 is slower, not faster)."""
    if precision not in ("auto", "bf16", "fp32"):
        raise UserError(f"--precision must be auto, bf16 or fp32, not '{precision}'.")
    if device.type == "cuda" and precision in ("auto", "bf16") and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if precision == "bf16" and device.type != "cuda":
        raise UserError("--precision bf16 needs a GPU with bf16; use --precision auto on CPU.")
    return contextlib.nullcontext()


def make_optimizer(params: list[torch.nn.Parameter], lr: float, weight_decay: float, device: torch.device):
    """AdamW; no weight decay on vectors (norms); fused kernel on GPU."""
    params = [p for p in params if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=device.type == "cuda")


def lr_at(step: int, total: int, warmup: int, peak: float, min_ratio: float) -> float:
    """Linear warmup then cosine decay to `min_ratio * peak`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def forward(model, input_ids: torch.Tensor, mask: torch.Tensor | None, ctx):
    """Logits and per-layer router logits. `mask=None` for packed windows (all tokens real)."""
    with ctx:
        out = model(input_ids=input_ids, attention_mask=mask, output_router_logits=True, use_cache=False)
    return out.logits, out.router_logits


def token_losses(logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor | None):
    """Next-token cross-entropy per position (batch, seq-1) and the mask of real targets."""
    target_real = torch.ones_like(input_ids[:, 1:], dtype=torch.bool) if mask is None else mask[:, 1:].bool()
    losses = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), input_ids[:, 1:], reduction="none")
    return losses * target_real, target_real


def lm_loss(logits, input_ids, mask) -> torch.Tensor:
    losses, real = token_losses(logits, input_ids, mask)
    return losses.sum() / real.sum().clamp(min=1)


def clip_and_step(model_params, optimizer, max_norm: float) -> torch.Tensor:
    """Clip, step, zero; returns the pre-clip norm as a tensor (read it only when logging: no host sync)."""
    norm = torch.nn.utils.clip_grad_norm_(model_params, max_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return norm.detach()


def check_finite(value: float, step: int):
    if not math.isfinite(value):
        raise UserError(f"non-finite loss or gradient norm by step {step}; lower the learning rate.")


class MetricsLog:
    """One CSV row per logged step (blank where a column does not apply), mirrored to wandb if enabled."""

    def __init__(self, path: Path, columns: list[str], wandb_project: str = "", run_config: dict | None = None,
                 append: bool = False):
        self.path, self.columns = Path(path), columns
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not append:
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(columns)
        self.wandb = None
        if wandb_project:
            from smolhub_hub.extras import require

            wandb = require("wandb", "--wandb-project (leave it empty to log locally only)")
            self.wandb = wandb.init(project=wandb_project, config=run_config or {},
                                    mode=os.environ.get("WANDB_MODE", "online"))

    def log(self, row: dict):
        unknown = set(row) - set(self.columns)
        assert not unknown, f"columns missing from the log: {unknown}"
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([row.get(c, "") for c in self.columns])
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in row.items() if k != "step"}, step=int(row["step"]))

    def log_wandb_only(self, values: dict, step: int):
        """Values too many for the CSV columns (e.g. load of every layer × expert)."""
        if self.wandb is not None:
            self.wandb.log(values, step=step)

    def close(self):
        if self.wandb is not None:
            self.wandb.finish()


def load_moe(path: str, device: torch.device):
    """An upcycled MixtralForCausalLM (fp32 master weights) and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as e:
        raise UserError(f"could not load a model from '{path}' ({str(e).splitlines()[0]}). "
                        "Create one with `python -m smol_experiments.moe.upcycle --output DIR`.") from None
    if model.config.model_type != "mixtral":
        raise UserError(f"'{path}' is a {model.config.model_type} model, not an upcycled Mixtral MoE; "
                        "run `python -m smol_experiments.moe.upcycle` on it first.")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device), tokenizer
