"""The shape every SmolHub model shares: token ids in, logits (and losses) out.

A model folder subclasses `CausalLM` and says only what makes its architecture itself: its block
(`make_block`), its positions (`positions` / `embed`), and for MoE models the parameters a token does
not use. Embedding, the final norm, the tied head, the loss, activation checkpointing, the KV cache
and parameter counting live here once.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from smolhub_hub.errors import UserError
from smolhub_hub.kv_cache import KVCache


class ConfigMixin:
    """Dataclass configs that round-trip through JSON and reject unknown keys with a clear message."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UserError(f"{cls.__name__} has no field(s) {', '.join(unknown)}; "
                            "is this a checkpoint of another model family?")
        return cls(**d)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


@dataclass
class LMOutput:
    logits: torch.Tensor
    loss: torch.Tensor | None = None       # what to backpropagate: lm_loss + aux_loss
    lm_loss: torch.Tensor | None = None    # next-token cross-entropy alone, for logging and eval
    aux_loss: torch.Tensor | None = None   # e.g. MoE load balancing, already scaled by its coefficient


class CausalLM(nn.Module):
    config_class: ClassVar[type]
    family: ClassVar[str]
    # Residual-branch output projections get GPT-2's 1/sqrt(2 * n_layers) scaled init.
    residual_projections: ClassVar[tuple[str, ...]] = ("wo", "w_down", "proj")

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.dim)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(self.make_block(i) for i in range(config.n_layers))
        self.norm = self.make_final_norm()
        self.lm_head = nn.Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        self.gradient_checkpointing = False
        self.apply(self._init_weights)
        std = 0.02 / math.sqrt(2 * config.n_layers)
        for name, p in self.named_parameters():
            if name.endswith(".weight") and name.split(".")[-2] in self.residual_projections:
                nn.init.normal_(p, 0.0, std)

    # --- what a model folder provides -------------------------------------------------------------
    def make_block(self, layer_idx: int) -> nn.Module:
        """A block maps (x, positions, cache) to (x, aux_loss or None)."""
        raise NotImplementedError

    def make_final_norm(self) -> nn.Module:
        raise NotImplementedError

    def positions(self, start: int, length: int):
        """Whatever the blocks need to know about positions (RoPE cos/sin), or None."""
        return None

    def embed(self, idx: torch.Tensor, start: int) -> torch.Tensor:
        return self.tok_emb(idx)

    def inactive_params_per_token(self) -> int:
        """Parameters a token does not use (unchosen experts); 0 for dense models."""
        return 0

    # --- shared machinery ------------------------------------------------------------------------
    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, 0.0, 0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache=None) -> LMOutput:
        B, T = idx.shape
        start = 0
        if cache is not None:
            cache.check_room(T)
            start = cache.pos
        x = self.drop(self.embed(idx, start))
        pos = self.positions(start, T)
        aux_losses = []
        for block in self.blocks:
            if self.gradient_checkpointing and self.training and cache is None:
                x, aux = checkpoint(block, x, pos, None, use_reentrant=False)
            else:
                x, aux = block(x, pos, cache)
            if aux is not None:
                aux_losses.append(aux)
        if cache is not None:
            cache.advance(T)
        x = self.norm(x)
        if targets is None:
            # Generation needs only the last position: skip the (B, T, vocab) projection.
            return LMOutput(self.lm_head(x[:, -1:] if cache is not None else x))
        logits = self.lm_head(x)
        lm_loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
        aux_loss = torch.stack(aux_losses).sum() if aux_losses else None
        loss = lm_loss if aux_loss is None else lm_loss + aux_loss
        return LMOutput(logits, loss, lm_loss, aux_loss)

    @property
    def max_seq_len(self) -> int:
        return self.config.max_seq_len

    def new_cache(self, batch_size: int, max_len: int, device=None, dtype=None):
        c = self.config
        p = next(self.parameters())
        head_dim = getattr(c, "head_dim", None) or c.dim // c.n_heads
        return KVCache(c.n_layers, batch_size, getattr(c, "n_kv_heads", c.n_heads), max_len, head_dim,
                       device=device or p.device, dtype=dtype or p.dtype)

    def param_counts(self) -> dict[str, int]:
        total = sum(p.numel() for p in self.parameters())  # a tied matrix is counted once
        return {"total": total, "active": total - self.inactive_params_per_token()}

    def on_optimizer_step(self):
        """Called by the trainer after every optimizer step (never per micro-batch, never in eval)."""

    def on_step_skipped(self):
        """Called by the trainer instead of `on_optimizer_step` when a step's loss or gradient was not finite
        and no update was applied. Every submodule with an `on_step_skipped` drops what that step's forwards
        gathered (max attention logits, expert loads, routing statistics), so a skipped step leaves no trace."""
        for module in self.modules():
            if module is not self and hasattr(module, "on_step_skipped"):
                module.on_step_skipped()
