"""StoryLlama: the Llama architecture at small scale, read top to bottom in this file.

    token ids (B, T)
      -> token embedding                                       (B, T, dim)
      -> n_layers x LlamaBlock:  x = x + attention(RMSNorm(x))   grouped-query attention, rotary positions
                                 x = x + SwiGLU(RMSNorm(x))
      -> RMSNorm -> output head (tied to the embedding)         (B, T, vocab) -> next-token cross-entropy

Numerically the same function as transformers' `LlamaForCausalLM` with the same weights (`StoryLlama/convert.py`,
checked in tests/StoryLlama/test_hf_parity.py). The attention and the feed-forward defined here are imported by the
families built on them (SmolMixtral, StoryKimi, SmolTransformer), as transformers' modular Mixtral imports Mistral's.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from smolhub_hub.kv_cache import KVCache
from smolhub_hub.layers import RMSNorm, RotaryEmbedding, apply_rope, causal_attention
from smolhub_hub.losses import head_and_loss
from smolhub_hub.modeling import CausalLM, LMOutput, init_normal, residual_std
from StoryLlama.config import StoryLlamaConfig

QKV_NAMES = ("wq", "wk", "wv")


class GroupedQueryAttention(nn.Module):
    """Causal self-attention with `n_kv_heads` key/value heads shared by groups of query heads (GQA,
    https://arxiv.org/abs/2305.13245): 1 = multi-query, n_heads = plain multi-head attention.

    The query, key and value projections are one fused `wqkv` linear (rows: queries, then keys, then values), so a
    decoded token costs one matmul instead of three and RoPE rotates queries and keys in one call (gpt-fast fuses
    them the same way). Checkpoints with separate `wq` / `wk` / `wv` load unchanged (a load hook fuses them);
    `unfused_state_dict` gives that separate layout, which the converters map onto transformers' q/k/v_proj.
    `rope` is None for learned absolute positions (SmolTransformer).
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
        self.wo = nn.Linear(n_heads * self.head_dim, dim, bias=bias)  # writes into the residual stream
        self.resid_dropout = nn.Dropout(dropout)
        self.register_load_state_dict_pre_hook(_fuse_separate_qkv)

    @property
    def qkv_sizes(self) -> tuple[int, int, int]:
        """Output rows of the query, key and value parts of `wqkv`."""
        return self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim, self.n_kv_heads * self.head_dim

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                cache: KVCache | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        H, Hkv = self.n_heads, self.n_kv_heads
        # One matmul for q, k and v, viewed as H + 2 * Hkv heads. split, not slicing: a split's backward is one
        # concatenation, a slice's a zero-fill of the whole.
        qk, v = self.wqkv(x).view(B, T, H + 2 * Hkv, self.head_dim).split([H + Hkv, Hkv], dim=2)
        qk, v = qk.transpose(1, 2), v.transpose(1, 2)               # (B, H + Hkv, T, hd), (B, Hkv, T, hd)
        if rope is not None:
            qk = apply_rope(qk, *rope)                               # queries and keys rotated together
        q, k = qk.split([H, Hkv], dim=1)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)                # (B, Hkv, cached + T, hd)
        # Dropout only while training: eval and generation are deterministic (a reference-project bug).
        y = causal_attention(q, k, v, self.dropout if self.training else 0.0, self.impl)  # (B, H, T, hd)
        return self.resid_dropout(self.wo(y.transpose(1, 2).reshape(B, T, -1)))


def _fuse_separate_qkv(module, state_dict, prefix, *args):
    """load_state_dict pre-hook: `wq`/`wk`/`wv` (older checkpoints, importers) -> the fused `wqkv`."""
    for kind in ("weight", "bias"):
        names = [f"{prefix}{w}.{kind}" for w in QKV_NAMES]
        if all(n in state_dict for n in names):
            state_dict[f"{prefix}wqkv.{kind}"] = torch.cat([state_dict.pop(n) for n in names])


def unfused_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """`model.state_dict()` with every attention's fused `wqkv` split into `wq`, `wk`, `wv` (views).

    The layout the converters map one to one onto transformers' q_proj / k_proj / v_proj; loading such a
    dict back into the model fuses it again.
    """
    state = model.state_dict()
    for name, m in model.named_modules():
        if isinstance(m, GroupedQueryAttention):
            for kind in ("weight", "bias"):
                fused = state.pop(f"{name}.wqkv.{kind}", None)
                if fused is not None:
                    for w, part in zip(QKV_NAMES, fused.split(m.qkv_sizes), strict=True):
                        state[f"{name}.{w}.{kind}"] = part
    return state


class SwiGLU(nn.Module):
    """Llama's feed-forward, down(silu(gate(x)) * up(x)) (Shazeer, https://arxiv.org/abs/2002.05202)."""

    def __init__(self, dim: int, hidden: int, bias: bool = False):
        super().__init__()
        self.w_gate = nn.Linear(dim, hidden, bias=bias)
        self.w_up = nn.Linear(dim, hidden, bias=bias)
        self.w_down = nn.Linear(hidden, dim, bias=bias)  # writes into the residual stream

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))


class LlamaBlock(nn.Module):
    def __init__(self, c: StoryLlamaConfig, layer_idx: int):
        super().__init__()
        self.attn_norm = RMSNorm(c.dim, c.norm_eps)
        self.attn = GroupedQueryAttention(c.dim, c.n_heads, c.n_kv_heads, layer_idx, c.head_dim,
                                          dropout=c.dropout, impl=c.attn_impl)
        self.ffn_norm = RMSNorm(c.dim, c.norm_eps)
        self.ffn = SwiGLU(c.dim, c.ffn_width)

    def forward(self, x, rope, cache=None):
        x = x + self.attn(self.attn_norm(x), rope, cache)  # pre-norm: the residual stream itself is never normed
        return x + self.ffn(self.ffn_norm(x))


class StoryLlama(CausalLM):
    def __init__(self, config: StoryLlamaConfig):
        super().__init__()
        self.config = c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.dim)
        self.drop = nn.Dropout(c.dropout)
        self.rope = RotaryEmbedding(c.head_dim, c.max_seq_len, c.rope_base)
        self.blocks = nn.ModuleList(LlamaBlock(c, i) for i in range(c.n_layers))
        self.norm = RMSNorm(c.dim, c.norm_eps)
        self.lm_head = nn.Linear(c.dim, c.vocab_size, bias=False)
        if c.tie_embeddings:  # one matrix reads and writes tokens (Press & Wolf, https://arxiv.org/abs/1608.05859)
            self.lm_head.weight = self.tok_emb.weight
        init_normal(self)
        for block in self.blocks:
            init_normal(block.attn.wo, block.ffn.w_down, std=residual_std(c.n_layers))

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None) -> LMOutput:
        B, T = idx.shape
        start = 0 if cache is None else cache.reserve(T)   # a cache holds the tokens before these
        x = self.drop(self.tok_emb(idx))                    # (B, T, dim)
        rope = self.rope(start, T)                          # cos, sin tables of positions start .. start + T
        for block in self.blocks:
            x = self.run_block(block, x, rope, cache)       # (B, T, dim)
        if cache is not None:
            cache.advance(T)
        x = self.norm(x)
        if targets is None:  # generation reads the last position only: skip the (B, T, vocab) projection
            return LMOutput(self.lm_head(x[:, -1:] if cache is not None else x))
        logits, loss = head_and_loss(x, self.lm_head, targets, self.loss_chunk_size)
        return LMOutput.with_losses(logits, loss)

    def new_cache(self, batch_size: int, max_len: int, device=None, dtype=None) -> KVCache:
        c, p = self.config, self.tok_emb.weight  # the embedding is never quantized
        return KVCache(c.n_layers, batch_size, c.n_kv_heads, max_len, c.head_dim,
                       device=device or p.device, dtype=dtype or p.dtype)
