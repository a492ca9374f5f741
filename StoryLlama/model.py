"""StoryLlama: the Llama architecture at small scale.

Pre-norm blocks of RMSNorm -> grouped-query attention with RoPE -> RMSNorm -> SwiGLU, a final
RMSNorm and a head tied to the token embedding. Numerically the same function as Hugging Face's
`LlamaForCausalLM` with the same weights (see `smolhub_hub/export/llama.py` and its tests).
"""

from __future__ import annotations

import torch.nn as nn

from smolhub_hub.layers import GroupedQueryAttention, RMSNorm, RotaryEmbedding, SwiGLU
from smolhub_hub.modeling import CausalLM
from StoryLlama.config import StoryLlamaConfig


class LlamaBlock(nn.Module):
    def __init__(self, c: StoryLlamaConfig, layer_idx: int):
        super().__init__()
        self.attn_norm = RMSNorm(c.dim, c.norm_eps)
        self.attn = GroupedQueryAttention(c.dim, c.n_heads, c.n_kv_heads, layer_idx, c.head_dim,
                                          dropout=c.dropout, impl=c.attn_impl)
        self.ffn_norm = RMSNorm(c.dim, c.norm_eps)
        self.ffn = SwiGLU(c.dim, c.ffn_width)

    def forward(self, x, rope, cache=None):
        x = x + self.attn(self.attn_norm(x), rope, cache)
        x = x + self.ffn(self.ffn_norm(x))
        return x, None


class StoryLlama(CausalLM):
    config_class = StoryLlamaConfig
    family = "StoryLlama"

    def __init__(self, config: StoryLlamaConfig):
        super().__init__(config)
        self.rope = RotaryEmbedding(config.head_dim, config.max_seq_len, config.rope_base)

    def make_block(self, layer_idx):
        return LlamaBlock(self.config, layer_idx)

    def make_final_norm(self):
        return RMSNorm(self.config.dim, self.config.norm_eps)

    def positions(self, start, length):
        return self.rope(start, length)
