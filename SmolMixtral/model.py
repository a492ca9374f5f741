"""SmolMixtral: Llama-style attention blocks whose feed-forward is a sparse Mixture of Experts.

Pre-norm blocks of RMSNorm -> grouped-query attention with RoPE -> RMSNorm -> MoE, where the MoE
routes every token to `top_k` of `n_experts` SwiGLU experts with Mixtral's renormalised softmax
weights (`smolhub_hub/moe.py`). The block returns the scaled load-balancing (+ z) loss, which the
base class adds to the LM loss. In eval the same function as transformers' `MixtralForCausalLM`
with the same weights (`smolhub_hub/export/mixtral.py` and its tests).
"""

from __future__ import annotations

import math

import torch.nn as nn

from smolhub_hub.layers import GroupedQueryAttention, RMSNorm, RotaryEmbedding
from smolhub_hub.modeling import CausalLM
from smolhub_hub.moe import MoEFeedForward, moe_routing_stats
from SmolMixtral.config import MixtralConfig


class MixtralBlock(nn.Module):
    def __init__(self, c: MixtralConfig, layer_idx: int):
        super().__init__()
        self.attn_norm = RMSNorm(c.dim, c.norm_eps)
        self.attn = GroupedQueryAttention(c.dim, c.n_heads, c.n_kv_heads, layer_idx, c.head_dim,
                                          dropout=c.dropout, impl=c.attn_impl)
        self.ffn_norm = RMSNorm(c.dim, c.norm_eps)
        self.moe = MoEFeedForward(c.dim, c.expert_hidden, c.n_experts, c.top_k, noisy_topk=c.noisy_topk,
                                  balance_coef=c.balance_coef, z_loss_coef=c.z_loss_coef, impl=c.moe_impl,
                                  down_init_std=0.02 / math.sqrt(2 * c.n_layers))
        self.ffn_drop = nn.Dropout(c.dropout)

    def forward(self, x, rope, cache=None):
        x = x + self.attn(self.attn_norm(x), rope, cache)
        y, aux = self.moe(self.ffn_norm(x), decoding=cache is not None)
        return x + self.ffn_drop(y), aux


class SmolMixtral(CausalLM):
    config_class = MixtralConfig
    family = "SmolMixtral"

    def __init__(self, config: MixtralConfig):
        super().__init__(config)
        self.rope = RotaryEmbedding(config.head_dim, config.max_seq_len, config.rope_base)

    def make_block(self, layer_idx):
        return MixtralBlock(self.config, layer_idx)

    def make_final_norm(self):
        return RMSNorm(self.config.dim, self.config.norm_eps)

    def positions(self, start, length):
        return self.rope(start, length)

    def moe_layers(self) -> list[MoEFeedForward]:
        return [b.moe for b in self.blocks]

    def inactive_params_per_token(self) -> int:
        return sum(m.inactive_params_per_token() for m in self.moe_layers())

    def routing_stats(self) -> dict[str, float]:
        """Per-layer expert load, share of experts active, router entropy and balance loss, aggregated
        over every forward since the previous call (then reset), e.g. `moe/layer0/load_e3`."""
        return moe_routing_stats(self.moe_layers())

    def last_routing(self) -> list:
        """The last forward's chosen experts per layer: a list of (tokens, top_k) tensors."""
        return [m.last_routing.expert_ids for m in self.moe_layers()]
