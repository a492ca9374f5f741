"""SmolTransformer: the classic decoder-only transformer (GPT-2 shape), as in nanoGPT.

Token + learned absolute position embeddings, then pre-norm blocks of norm -> causal multi-head
attention -> norm -> GELU MLP, a final norm and a head tied to the token embedding. The norm is
RMSNorm by default or LayerNorm (with or without bias). With the `gpt2` preset it is numerically
the same function as Hugging Face's `GPT2LMHeadModel` (see `smolhub_hub/export/gpt2.py` and its tests).
"""

from __future__ import annotations

import torch.nn as nn

from smolhub_hub.errors import UserError
from smolhub_hub.layers import GeluMLP, GroupedQueryAttention, make_norm
from smolhub_hub.modeling import CausalLM
from SmolTransformer.config import SmolTransformerConfig


class TransformerBlock(nn.Module):
    def __init__(self, c: SmolTransformerConfig, layer_idx: int):
        super().__init__()
        self.attn_norm = make_norm(c.norm, c.dim, c.norm_eps, bias=c.bias)
        # Multi-head attention = grouped-query attention with as many key/value heads as query heads.
        self.attn = GroupedQueryAttention(c.dim, c.n_heads, c.n_heads, layer_idx, c.head_dim, bias=c.bias,
                                          dropout=c.dropout, impl=c.attn_impl)
        self.ffn_norm = make_norm(c.norm, c.dim, c.norm_eps, bias=c.bias)
        self.ffn = GeluMLP(c.dim, c.ffn_width, bias=c.bias, approximate=c.gelu_approximate, dropout=c.dropout)

    def forward(self, x, positions=None, cache=None):
        x = x + self.attn(self.attn_norm(x), None, cache)
        x = x + self.ffn(self.ffn_norm(x))
        return x, None


class SmolTransformer(CausalLM):
    config_class = SmolTransformerConfig
    family = "SmolTransformer"
    # Tells generation to refuse prompt + new tokens beyond max_seq_len up front.
    has_learned_positions = True

    def __init__(self, config: SmolTransformerConfig):
        super().__init__(config)
        self.pos_emb = nn.Embedding(config.max_seq_len, config.dim)
        nn.init.normal_(self.pos_emb.weight, 0.0, 0.02)  # created after the base init pass, so init here

    def make_block(self, layer_idx):
        return TransformerBlock(self.config, layer_idx)

    def make_final_norm(self):
        c = self.config
        return make_norm(c.norm, c.dim, c.norm_eps, bias=c.bias)

    def embed(self, idx, start):
        end = start + idx.shape[1]
        if end > self.config.max_seq_len:
            raise UserError(f"SmolTransformer has learned positions for {self.config.max_seq_len} tokens; "
                            f"positions up to {end} were asked. Use a shorter input (or --seq-len), "
                            "or train a model with a larger --max-seq-len.")
        # A slice of the table, not an embedding lookup: no index tensor to build each step.
        return self.tok_emb(idx) + self.pos_emb.weight[start:end]
