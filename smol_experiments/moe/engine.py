"""Training pieces shared by continued pretraining and specialization.

Device, precision, AdamW and its learning-rate schedule, and the metrics file are smolhub_hub's, as the
trainers of the model folders use them: one toolkit. What is particular to these stages lives here: their
shared settings, the losses, and loading an upcycled model.

Weights stay fp32 (the optimizer's master copy); on a GPU the forward pass runs under bf16 autocast.
Losses are computed here rather than by `labels=`: transformers' Mixtral adds its own aux loss (pooled
over all layers) to `loss`, and we want the LM loss and a per-layer, padding-aware balance loss apart.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from smolhub_hub.config import opt
from smolhub_hub.errors import UserError
from smolhub_hub.training.distributed import pick_device
from smolhub_hub.training.metrics import MetricsLog
from smolhub_hub.training.precision import amp_dtype, autocast

PRECISIONS = {"auto": "auto", "bf16": "bfloat16", "fp32": "float32"}  # --precision → smolhub_hub's dtype names
BETAS = (0.9, 0.95)


@dataclass
class StageConfig:
    """The settings continued pretraining and specialization share; each stage's config adds its own."""

    grad_clip: float = opt(1.0, "max gradient norm", above=0)
    balance_coef: float = opt(0.01, "weight of the load-balancing loss", min=0)
    log_every: int = opt(10, "steps between training-loss rows", min=1, recorded=False)
    active_min_share: float = opt(0.01, "an expert is active if chosen for at least this share of tokens",
                                  min=0, max=1)
    precision: str = opt("auto", "auto (bf16 autocast on a GPU that has it, else fp32), bf16 or fp32",
                         choices=tuple(PRECISIONS))
    wandb_project: str = opt("", "log to this wandb project (empty: off)", recorded=False)
    overwrite: bool = opt(False, "redo the run if --output holds one made with other settings (otherwise "
                          "refused; a finished run with the same settings is reused)", recorded=False)


def device_and_autocast(precision: str) -> tuple[torch.device, contextlib.AbstractContextManager]:
    """This machine's device (a GPU if there is one) and the autocast for --precision. Never fp16: these loops
    keep no loss scaler, so a GPU without bf16 trains in fp32. On a CPU, auto is fp32 even where the trainers'
    auto picks bf16 (native bf16 CPUs): these stages' CPU runs are the tests and --quick, whose thresholds were
    set in fp32, and bf16 on a CPU was not measured for them."""
    device = pick_device()
    requested = "float32" if precision == "auto" and device == "cpu" else PRECISIONS[precision]
    dtype = amp_dtype(requested, device)
    return torch.device(device), autocast(device, None if dtype is torch.float16 else dtype)


@contextlib.contextmanager
def metrics_log(out: Path, resume_step: int | None, cfg) -> Iterator[MetricsLog]:
    """smolhub_hub's MetricsLog on `out`/metrics.csv (rows after `resume_step` dropped: they are logged again),
    mirrored to wandb when --wandb-project is set."""
    run = None
    if cfg.wandb_project:
        from smolhub_hub.extras import require

        wandb = require("wandb", "--wandb-project (leave it empty to log locally only)")
        run = wandb.init(project=cfg.wandb_project, config=dataclasses.asdict(cfg),
                         mode=os.environ.get("WANDB_MODE", "online"))
    try:
        yield MetricsLog(out, resume_step, run)
    finally:
        if run is not None:
            run.finish()


def routing_metrics(result: dict) -> dict[str, float]:
    """An evaluation's routing as metric rows: the balance loss, active share, router entropy and the load of
    every layer's experts (`val/moe/layer<l>/load_e<e>`, the names smolhub_hub's trainers log)."""
    loads = {f"val/moe/layer{layer}/load_e{e}": v for layer, shares in enumerate(result["expert_load"])
             for e, v in enumerate(shares)}
    return {"val/balance_loss": result["balance_loss"], "val/active_share": result["active_share"],
            "val/router_entropy": result["router_entropy"], **loads}


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
