"""Building blocks shared by the model folders: norms, rotary embeddings, attention, feed-forwards.

Conventions follow Hugging Face transformers where a choice is arbitrary (RoPE's rotate-half layout,
RMSNorm computed in fp32), so that exported weights need no permutation.
"""

from __future__ import annotations

import math

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
    """cos/sin tables indexed by *token position* (the reference StoryLlama indexed by dimension)."""

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
        emb = torch.cat([freqs, freqs], dim=-1)
        self.register_buffer("cos", emb.cos().float(), persistent=False)
        self.register_buffer("sin", emb.sin().float(), persistent=False)

    def forward(self, start: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        if start + length > self.cos.shape[0]:  # RoPE extrapolates: grow the table on demand
            self._build(2 * (start + length))
        return self.cos[start:start + length], self.sin[start:start + length]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, H, T, D); cos/sin: (T, D). Computed in fp32, returned in x's dtype."""
    xf = x.float()
    return (xf * cos + rotate_half(xf) * sin).to(x.dtype)


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


class GroupedQueryAttention(nn.Module):
    """Multi-head attention with `n_kv_heads` key/value heads (1 = MQA, n_heads = MHA).

    `rope` is None for models with learned absolute positions (SmolTransformer).
    """

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, layer_idx: int, head_dim: int | None = None,
                 bias: bool = False, dropout: float = 0.0, impl: str = "sdpa"):
        super().__init__()
        if n_heads % n_kv_heads:
            raise ValueError(f"n_heads ({n_heads}) must be a multiple of n_kv_heads ({n_kv_heads})")
        if head_dim is None and dim % n_heads:
            raise ValueError(f"dim ({dim}) must be a multiple of n_heads ({n_heads})")
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.head_dim = head_dim or dim // n_heads
        self.layer_idx, self.dropout, self.impl = layer_idx, dropout, impl
        self.wq = nn.Linear(dim, n_heads * self.head_dim, bias=bias)
        self.wk = nn.Linear(dim, n_kv_heads * self.head_dim, bias=bias)
        self.wv = nn.Linear(dim, n_kv_heads * self.head_dim, bias=bias)
        self.wo = nn.Linear(n_heads * self.head_dim, dim, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x, rope=None, cache=None):
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)
        # Dropout only while training: eval and generation are deterministic (a reference-project bug).
        y = causal_attention(q, k, v, self.dropout if self.training else 0.0, self.impl)
        return self.resid_dropout(self.wo(y.transpose(1, 2).reshape(B, T, -1)))


class SwiGLU(nn.Module):
    """Llama's feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, dim: int, hidden: int, bias: bool = False):
        super().__init__()
        self.w_gate = nn.Linear(dim, hidden, bias=bias)
        self.w_up = nn.Linear(dim, hidden, bias=bias)
        self.w_down = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x):
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))


class GeluMLP(nn.Module):
    """The classic transformer feed-forward (GPT-2): fc -> GELU -> proj."""

    def __init__(self, dim: int, hidden: int, bias: bool = True, approximate: str = "tanh", dropout: float = 0.0):
        super().__init__()
        self.fc = nn.Linear(dim, hidden, bias=bias)
        self.proj = nn.Linear(hidden, dim, bias=bias)
        self.approximate = approximate
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.proj(F.gelu(self.fc(x), approximate=self.approximate)))


def llama_ffn_hidden(dim: int, multiple_of: int = 64, multiplier: float = 1.0) -> int:
    """Llama's SwiGLU width: 2/3 of 4*dim (same parameters as a 4*dim GELU MLP), rounded up."""
    hidden = int(multiplier * int(2 * 4 * dim / 3))
    return multiple_of * math.ceil(hidden / multiple_of)
