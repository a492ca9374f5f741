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


class GroupedQueryAttention(nn.Module):
    """Multi-head attention with `n_kv_heads` key/value heads (1 = MQA, n_heads = MHA).

    The query, key and value projections are one fused `wqkv` linear (rows: queries, then keys, then
    values), so a decoded token costs one matmul instead of three, and RoPE rotates the queries and
    keys together. Checkpoints with separate `wq` / `wk` / `wv` load unchanged (fused on load);
    `unfused_state_dict` gives the separate layout that exporters map to other libraries.
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
        self.wqkv = nn.Linear(dim, sum(self.qkv_sizes), bias=bias)
        self.wo = nn.Linear(n_heads * self.head_dim, dim, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)
        self.register_load_state_dict_pre_hook(_fuse_separate_qkv)

    @property
    def qkv_sizes(self) -> tuple[int, int, int]:
        """Output rows of the query, key and value parts of `wqkv`."""
        return self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim, self.n_kv_heads * self.head_dim

    def forward(self, x, rope=None, cache=None):
        B, T, _ = x.shape
        H, Hkv = self.n_heads, self.n_kv_heads
        # split, not slicing: a split's backward is one concatenation, a slice's a zero-fill of the whole.
        qk, v = self.wqkv(x).view(B, T, H + 2 * Hkv, self.head_dim).split([H + Hkv, Hkv], dim=2)
        qk, v = qk.transpose(1, 2), v.transpose(1, 2)
        if rope is not None:
            qk = apply_rope(qk, *rope)
        q, k = qk.split([H, Hkv], dim=1)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)
        # Dropout only while training: eval and generation are deterministic (a reference-project bug).
        y = causal_attention(q, k, v, self.dropout if self.training else 0.0, self.impl)
        return self.resid_dropout(self.wo(y.transpose(1, 2).reshape(B, T, -1)))


QKV_NAMES = ("wq", "wk", "wv")


def _fuse_separate_qkv(module, state_dict, prefix, *args):
    """load_state_dict pre-hook: `wq`/`wk`/`wv` (older checkpoints, importers) -> the fused `wqkv`."""
    for kind in ("weight", "bias"):
        names = [f"{prefix}{w}.{kind}" for w in QKV_NAMES]
        if all(n in state_dict for n in names):
            state_dict[f"{prefix}wqkv.{kind}"] = torch.cat([state_dict.pop(n) for n in names])


def unfused_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """`model.state_dict()` with every attention's fused `wqkv` split into `wq`, `wk`, `wv` (views).

    The layout exporters map one to one onto transformers' q_proj / k_proj / v_proj; loading such a
    dict back into the model fuses it again.
    """
    state = model.state_dict()
    for name, m in model.named_modules():
        if isinstance(m, GroupedQueryAttention):
            for kind in ("weight", "bias"):
                fused = state.pop(f"{name}.wqkv.{kind}", None)
                if fused is not None:
                    for w, part in zip(QKV_NAMES, fused.split(m.qkv_sizes)):
                        state[f"{name}.{w}.{kind}"] = part
    return state


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
