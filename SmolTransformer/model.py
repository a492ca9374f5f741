"""SmolTransformer: the classic decoder-only transformer (GPT-2's shape), as nanoGPT writes it.

    token ids (B, T)
      -> token embedding + learned position embedding            (B, T, dim)
      -> n_layers x TransformerBlock:  x = x + attention(norm(x))   multi-head, causal
                                       x = x + MLP(norm(x))         fc -> GELU -> proj
      -> norm -> output head (tied to the token embedding)          (B, T, vocab) -> next-token cross-entropy

The norm is RMSNorm by default, or LayerNorm with or without biases. With the `gpt2` preset it is numerically the
same function as transformers' `GPT2LMHeadModel` (`SmolTransformer/convert.py`, tests/SmolTransformer/
test_hf_parity.py). The attention is StoryLlama's with as many key/value heads as query heads, biases when
configured, and no rotary positions (the positions are in the embedding).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from smolhub_hub.errors import UserError
from smolhub_hub.kv_cache import KVCache
from smolhub_hub.layers import make_norm
from smolhub_hub.losses import head_and_loss
from smolhub_hub.modeling import CausalLM, LMOutput, init_normal, residual_std
from SmolTransformer.config import SmolTransformerConfig
from StoryLlama.model import GroupedQueryAttention


class GeluMLP(nn.Module):
    """GPT-2's feed-forward: proj(gelu(fc(x))), 4 * dim wide by default."""

    def __init__(self, dim: int, hidden: int, bias: bool = True, approximate: str = "tanh", dropout: float = 0.0):
        super().__init__()
        self.fc = nn.Linear(dim, hidden, bias=bias)
        self.proj = nn.Linear(hidden, dim, bias=bias)  # writes into the residual stream
        self.approximate = approximate  # "tanh": GPT-2's gelu_new
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x), approximate=self.approximate)))


class TransformerBlock(nn.Module):
    def __init__(self, c: SmolTransformerConfig, layer_idx: int):
        super().__init__()
        self.attn_norm = make_norm(c.norm, c.dim, c.norm_eps, bias=c.bias)
        # Multi-head attention = grouped-query attention with as many key/value heads as query heads.
        self.attn = GroupedQueryAttention(c.dim, c.n_heads, c.n_heads, layer_idx, c.head_dim, bias=c.bias,
                                          dropout=c.dropout, impl=c.attn_impl)
        self.ffn_norm = make_norm(c.norm, c.dim, c.norm_eps, bias=c.bias)
        self.ffn = GeluMLP(c.dim, c.ffn_width, bias=c.bias, approximate=c.gelu_approximate, dropout=c.dropout)

    def forward(self, x, cache=None):
        x = x + self.attn(self.attn_norm(x), None, cache)  # pre-norm, as GPT-2 (not the original post-norm)
        return x + self.ffn(self.ffn_norm(x))


class SmolTransformer(CausalLM):
    def __init__(self, config: SmolTransformerConfig):
        super().__init__()
        self.config = c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.dim)
        self.pos_emb = nn.Embedding(c.max_seq_len, c.dim)  # one learned vector per position (nanoGPT's wpe)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(TransformerBlock(c, i) for i in range(c.n_layers))
        self.norm = make_norm(c.norm, c.dim, c.norm_eps, bias=c.bias)
        self.lm_head = nn.Linear(c.dim, c.vocab_size, bias=False)
        if c.tie_embeddings:  # one matrix reads and writes tokens (Press & Wolf, https://arxiv.org/abs/1608.05859)
            self.lm_head.weight = self.tok_emb.weight
        init_normal(self)
        for block in self.blocks:
            init_normal(block.attn.wo, block.ffn.proj, std=residual_std(c.n_layers))

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None) -> LMOutput:
        B, T = idx.shape
        start = 0 if cache is None else cache.reserve(T)  # a cache holds the tokens before these
        end = start + T
        if end > self.config.max_seq_len:
            raise UserError(f"SmolTransformer has learned positions for {self.config.max_seq_len} tokens; "
                            f"positions up to {end} were asked. Use a shorter input (or --seq-len), "
                            "or train a model with a larger --max-seq-len.")
        # A slice of the position table, not an embedding lookup: no index tensor to build each step.
        x = self.drop(self.tok_emb(idx) + self.pos_emb.weight[start:end])  # (B, T, dim) + (T, dim)
        for block in self.blocks:
            x = self.run_block(block, x, cache)                               # (B, T, dim)
        if cache is not None:
            cache.advance(T)
        x = self.norm(x)
        if targets is None:  # generation reads the last position only: skip the (B, T, vocab) projection
            return LMOutput(self.lm_head(x[:, -1:] if cache is not None else x))
        logits, loss = head_and_loss(x, self.lm_head, targets, self.loss_chunk_size)
        return LMOutput.with_losses(logits, loss)

    def new_cache(self, batch_size: int, max_len: int, device=None, dtype=None) -> KVCache:
        c, p = self.config, self.tok_emb.weight  # the embedding is never quantized
        return KVCache(c.n_layers, batch_size, c.n_heads, max_len, c.head_dim,
                       device=device or p.device, dtype=dtype or p.dtype)
