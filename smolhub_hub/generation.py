"""Autoregressive generation with a KV cache: greedy, temperature, top-k and top-p sampling.

Temperature applies before top-k and top-p (a reference-project bug applied top-k to raw logits).
Generation stops at EOS per sequence; finished rows keep emitting EOS until all are done.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from smolhub_hub.errors import UserError

MIN_TEMPERATURE = 1e-5


@dataclass
class SamplingConfig:
    max_new_tokens: int = 100
    temperature: float = 0.7
    top_k: int | None = None
    top_p: float | None = None
    greedy: bool = False

    def validate(self) -> SamplingConfig:
        if self.max_new_tokens < 0:
            raise UserError(f"max new tokens must be >= 0 (got {self.max_new_tokens})")
        if self.temperature < 0 or self.temperature != self.temperature:
            raise UserError(f"temperature must be >= 0 (got {self.temperature}); use 0 or --greedy for greedy decoding")
        if self.top_k is not None and self.top_k < 1:
            raise UserError(f"top_k must be >= 1 (got {self.top_k}); leave it unset to disable top-k")
        if self.top_p is not None and not (0.0 < self.top_p <= 1.0):
            raise UserError(f"top_p must be in (0, 1] (got {self.top_p}); leave it unset to disable top-p")
        return self

    @property
    def is_greedy(self) -> bool:
        # Below 1e-5 the scaled logits overflow; the distribution is one-hot anyway.
        return self.greedy or self.temperature < MIN_TEMPERATURE


def sample_next(logits: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """logits: (B, V) -> next token ids (B,)."""
    if cfg.is_greedy:
        return logits.argmax(dim=-1)
    logits = logits.float() / cfg.temperature
    if cfg.top_k is not None and cfg.top_k < logits.size(-1):
        kth = torch.topk(logits, cfg.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p is not None and cfg.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        # Drop a token once the mass before it already reaches top_p (the first token always stays).
        drop_sorted = (cum - sorted_logits.softmax(-1)) >= cfg.top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate_tokens(model, idx: torch.Tensor, cfg: SamplingConfig, eos_id: int | None = None,
                    generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
    """Yield the next token of every row, step by step. idx: (B, T) prompt ids, all rows the same length."""
    cfg.validate()
    B, T = idx.shape
    if T == 0:
        raise UserError("the prompt is empty; give at least one token of text")
    limit = model.max_seq_len
    if T + cfg.max_new_tokens > limit:
        raise UserError(f"prompt ({T} tokens) + max new tokens ({cfg.max_new_tokens}) exceeds the model's "
                        f"context of {limit}; shorten the prompt or ask for fewer tokens")
    was_training = model.training
    model.eval()
    try:
        cache = model.new_cache(B, T + cfg.max_new_tokens)
        logits = model(idx, cache=cache).logits[:, -1]
        done = torch.zeros(B, dtype=torch.bool, device=idx.device)
        for i in range(cfg.max_new_tokens):
            nxt = sample_next(logits, cfg, generator)
            if eos_id is not None:
                nxt = nxt.masked_fill(done, eos_id)
                done |= nxt == eos_id
            yield nxt
            if eos_id is not None and bool(done.all()) or i == cfg.max_new_tokens - 1:
                break
            logits = model(nxt[:, None], cache=cache).logits[:, -1]
    finally:
        model.train(was_training)


def generate(model, idx: torch.Tensor, cfg: SamplingConfig, eos_id: int | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Prompt plus generated ids, (B, T + n). Rows that hit EOS are padded with EOS."""
    new = list(generate_tokens(model, idx, cfg, eos_id, generator))
    return torch.cat([idx, torch.stack(new, dim=1)], dim=1) if new else idx
