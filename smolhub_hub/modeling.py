"""What every SmolHub model promises the shared tools (trainer, generation, export, demo), and nothing more.

Each model folder's `model.py` builds its own modules and owns its forward pass, nanoGPT-style:

    class StoryLlama(CausalLM):
        def __init__(self, config): ...           # tok_emb, blocks, norm, lm_head (tied when configured), init
        def forward(self, idx, targets=None, cache=None) -> LMOutput: ...
        def new_cache(self, batch_size, max_len, device=None, dtype=None): ...

`CausalLM` adds the few plain methods the tools call, each with a default that suits a dense model and is
overridden where a model differs (mixture-of-experts models list their `moe_layers`; StoryKimi updates its
router biases in `on_optimizer_step`). It never calls back into a subclass to build or run the network.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from smolhub_hub.errors import UserError
from smolhub_hub.kv_cache import KVCache
from smolhub_hub.moe_kernels import MoELayer, moe_routing_stats

INIT_STD = 0.02  # GPT-2's weight init


class ConfigMixin:
    """Dataclass configs that round-trip through JSON and reject unknown keys with a clear message."""

    RENAMED: ClassVar[dict[str, str]] = {}  # a key older config.json files saved -> the field's name now

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        d = {cls.RENAMED.get(k, k): v for k, v in d.items()}
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
    logits: torch.Tensor | None            # (B, T, vocab); (B, 1, vocab) with a cache; None if the loss was chunked
    loss: torch.Tensor | None = None       # what to backpropagate: lm_loss + aux_loss
    lm_loss: torch.Tensor | None = None    # next-token cross-entropy alone, for logging and eval
    aux_loss: torch.Tensor | None = None   # e.g. MoE load balancing, already scaled by its coefficient

    @classmethod
    def with_losses(cls, logits, lm_loss: torch.Tensor, aux_loss: torch.Tensor | None = None) -> LMOutput:
        return cls(logits, lm_loss if aux_loss is None else lm_loss + aux_loss, lm_loss, aux_loss)


def init_normal(*modules: nn.Module, std: float = INIT_STD):
    """GPT-2's init, as nanoGPT writes it: every Linear and Embedding weight inside `modules` from N(0, std), Linear
    biases zero. Norms keep their ones, and modules with weights of their own (routers, stacked experts) initialise
    them in their constructor."""
    for module in modules:
        for m in module.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)


def residual_std(n_layers: int) -> float:
    """GPT-2's std for the projections that write into the residual stream: 2 per block add to it, so each gets
    1/sqrt(2 * n_layers) of the usual std and the stream's variance does not grow with depth (GPT-2 paper, 2.3)."""
    return INIT_STD / math.sqrt(2 * n_layers)


class CausalLM(nn.Module):
    """Token ids in, `LMOutput` out. A subclass sets `self.config` and defines `forward` and `new_cache`."""

    config: Any
    # Set by the trainer (--grad-checkpointing): `run_block` recomputes each block's activations in the backward pass.
    gradient_checkpointing: bool = False
    # Set by the trainer (--loss-chunk-size): > 0 computes the training loss without the full logits (losses.py).
    loss_chunk_size: int = 0

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache=None) -> LMOutput:
        raise NotImplementedError

    def new_cache(self, batch_size: int, max_len: int, device=None, dtype=None) -> KVCache:
        """The generation cache this architecture reads and writes (on the model's device and dtype by default)."""
        raise NotImplementedError

    def run_block(self, block: nn.Module, x: torch.Tensor, *args):
        """`block(x, *args)`; under activation checkpointing (training, no cache) its activations are not kept but
        recomputed in the backward pass: less memory for ~30% more compute."""
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, x, *args, use_reentrant=False)
        return block(x, *args)

    @property
    def max_seq_len(self) -> int:
        """The longest prompt + generation the model serves (generation refuses more up front)."""
        return self.config.max_seq_len

    def moe_layers(self) -> dict[int, MoELayer]:
        """The mixture-of-experts feed-forwards, keyed by block index; {} for a dense model."""
        return {}

    def param_counts(self) -> dict[str, int]:
        """{"total", "active"}: a tied matrix counts once; "active" leaves out the experts a token is not sent to."""
        total = sum(p.numel() for p in self.parameters())
        inactive = sum(m.inactive_params_per_token() for m in self.moe_layers().values())
        return {"total": total, "active": total - inactive}

    def routing_stats(self) -> dict[str, float]:
        """Routing telemetry since the last call, `moe/layer<block>/<name>` and means over layers ({} if dense)."""
        return moe_routing_stats(self.moe_layers())

    def on_optimizer_step(self):
        """Called by the trainer after every optimizer step (never per micro-batch, never in eval)."""

    def on_step_skipped(self):
        """Called instead of `on_optimizer_step` when a step's loss or gradient was not finite and no update was
        applied: what that step's forwards gathered (routing statistics, ...) is dropped, so it leaves no trace."""
        for layer in self.moe_layers().values():
            layer.on_step_skipped()
