"""The generic pieces every model.py imports: RMSNorm, rotary position embeddings, the attention call.

What makes an architecture itself (its attention module, its feed-forward, its router) lives in its folder;
these are the few operations they all share. Conventions follow Hugging Face transformers where a choice is
arbitrary (RoPE's rotate-half layout, RMSNorm computed in fp32), so that exported weights need no permutation.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 (as Llama does) so bf16 activations do not lose the small variances.
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def make_norm(kind: str, dim: int, eps: float, bias: bool = True) -> nn.Module:
    if kind == "rmsnorm":
        return RMSNorm(dim, eps)
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps, bias=bias)
    raise ValueError(f"unknown norm '{kind}' (choose rmsnorm or layernorm)")


class RotaryEmbedding(nn.Module):
    """cos/sin tables indexed by *token position* (the reference StoryLlama indexed by dimension).

    `forward(start, length)` returns `(cos, sin_rot)` for those positions, where `sin_rot` is the sine
    table with its first half negated: `apply_rope` then rotates with one `roll` instead of
    rotate-half's split, negate and concatenate (the same values up to rounding, fewer kernels per token).
    """

    def __init__(self, head_dim: int, max_seq_len: int, base: float = 10000.0):
        super().__init__()
        if head_dim < 2 or head_dim % 2:
            raise ValueError(f"RoPE needs an even head dimension (got {head_dim}); choose --dim and --n-heads "
                             "so that dim / n_heads is even")
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
        self.register_buffer("inv_freq", inv_freq.float(), persistent=False)
        self.max_seq_len = max_seq_len
        self._build(max_seq_len)

    def _build(self, length: int):
        t = torch.arange(length, dtype=torch.float64, device=self.inv_freq.device)
        freqs = torch.outer(t, self.inv_freq.double())
        self.register_buffer("cos", torch.cat([freqs, freqs], dim=-1).cos().float(), persistent=False)
        self.register_buffer("sin_rot", torch.cat([-freqs, freqs], dim=-1).sin().float(), persistent=False)

    def forward(self, start: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        if start + length > self.cos.shape[0]:  # RoPE extrapolates: grow the table on demand
            self._build(2 * (start + length))
        return self.cos[start:start + length], self.sin_rot[start:start + length]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin_rot: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE (transformers' layout): x * cos + rotate_half(x) * sin, for x (..., T, D) and the
    (T, D) tables of `RotaryEmbedding`. rotate_half(x) * sin == roll(x, D/2) * sin_rot exactly, since
    sin_rot is sin with its first half negated. Computed in fp32, returned in x's dtype."""
    xf = x.float()
    return torch.addcmul(xf * cos, xf.roll(x.shape[-1] // 2, -1), sin_rot).to(x.dtype)


def causal_attention(q, k, v, dropout_p: float = 0.0, impl: str = "sdpa") -> torch.Tensor:
    """q: (B, Hq, Tq, D); k, v: (B, Hkv, Tk, D) with Tk >= Tq (a KV cache may precede the queries).

    Query i sits at absolute position Tk - Tq + i and sees keys 0 .. Tk - Tq + i. GQA is handled by
    SDPA itself (`enable_gqa`), so keys and values are never materialised per query head.
    """
    tq, tk = q.shape[-2], k.shape[-2]
    if impl == "flash_attn" and q.is_cuda:
        from flash_attn import flash_attn_func  # optional dependency, imported where used

        out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                              dropout_p=dropout_p, causal=True)  # bottom-right aligned, as below
        return out.transpose(1, 2)
    gqa = q.shape[1] != k.shape[1]
    if tq == tk:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True, enable_gqa=gqa)
    if tq == 1:  # one new token attends to everything cached
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, enable_gqa=gqa)
    offset = tk - tq
    mask = torch.ones(tq, tk, dtype=torch.bool, device=q.device).tril(diagonal=offset)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, enable_gqa=gqa)
