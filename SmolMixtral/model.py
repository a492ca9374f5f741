"""SmolMixtral: Llama's blocks with a sparse Mixture-of-Experts feed-forward, as Mixtral (https://arxiv.org/abs/2401.04088).

    token ids (B, T)
      -> token embedding                                          (B, T, dim)
      -> n_layers x MixtralBlock:  x = x + attention(RMSNorm(x))    StoryLlama's grouped-query attention with RoPE
                                   x = x + MoE(RMSNorm(x))          each token to top_k of n_experts SwiGLU experts
      -> RMSNorm -> output head (tied to the embedding)            (B, T, vocab) -> cross-entropy + balance loss

What makes it Mixtral is here: the router (softmax over experts, keep the top k, renormalise), its optional noise,
the load-balancing and z losses, and the MoE layer that wires them to the experts. The experts themselves are
`smolhub_hub.moe_kernels.GroupedExperts` (shared with StoryKimi: one grouped matmul per projection, a readable
loop beside it). In eval the same function as transformers' `MixtralForCausalLM` with the same weights
(`SmolMixtral/convert.py`, tests/SmolMixtral/test_hf_parity.py). StoryMixtral is this model under its own config.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from smolhub_hub.kv_cache import KVCache
from smolhub_hub.layers import RMSNorm, RotaryEmbedding
from smolhub_hub.losses import head_and_loss
from smolhub_hub.modeling import INIT_STD, CausalLM, LMOutput, init_normal, residual_std
from smolhub_hub.moe_kernels import GroupedExperts, MoELayer, RouterOutput, load_balancing_loss
from SmolMixtral.config import MixtralConfig
from StoryLlama.model import GroupedQueryAttention


class TopKRouter(nn.Module):
    """Mixtral's router: softmax over all experts, keep the top k, renormalise them to sum to 1.

    Noisy top-k (Shazeer et al. 2017, https://arxiv.org/abs/1701.06538): while training, the logits get Gaussian
    noise scaled per expert by softplus(x @ w_noise), so that near-ties explore other experts. Never in eval.
    Logits are computed in fp32 so that bf16 rounding never flips a routing decision.
    """

    def __init__(self, dim: int, n_experts: int, top_k: int, noisy: bool = False, renormalize: bool = True,
                 init_std: float = INIT_STD):
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"top_k ({top_k}) must be between 1 and n_experts ({n_experts})")
        self.n_experts, self.top_k, self.renormalize = n_experts, top_k, renormalize
        self.weight = nn.Parameter(torch.empty(n_experts, dim))
        nn.init.normal_(self.weight, 0.0, init_std)
        # Zero init: the noise starts at softplus(0) = 0.69 per expert and is learned from there.
        self.w_noise = nn.Parameter(torch.zeros(n_experts, dim)) if noisy else None

    def forward(self, x: torch.Tensor, with_probs: bool = True) -> RouterOutput:
        """x: (N, dim). `with_probs=False` (generation: no balance loss, no statistics) leaves `probs` None and,
        when renormalising, takes the softmax over the k chosen logits only: the same weights, two kernels fewer."""
        with torch.autocast(x.device.type, enabled=False):  # autocast would run these linears in bf16
            xf = x.float()
            logits = F.linear(xf, self.weight.float())                     # (N, E)
            if self.w_noise is not None and self.training:
                scale = F.softplus(F.linear(xf, self.w_noise.float()))
                logits = logits + torch.randn_like(logits) * scale
        if not with_probs and self.renormalize:
            top, expert_ids = logits.topk(self.top_k, dim=-1)
            return RouterOutput(logits, None, expert_ids, top.softmax(dim=-1))
        probs = logits.softmax(dim=-1)
        weights, expert_ids = probs.topk(self.top_k, dim=-1)               # (N, k), heaviest first
        if self.renormalize:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return RouterOutput(logits, probs, expert_ids, weights)


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """ST-MoE's z-loss (https://arxiv.org/abs/2202.08906), mean(logsumexp(logits)^2): keeps router logits small
    and bf16-safe."""
    return torch.logsumexp(logits.float(), dim=-1).pow(2).mean()


class MoEFeedForward(MoELayer):
    """Router + grouped SwiGLU experts: a sparse replacement for a dense feed-forward.

    `forward(x (B, T, dim)) -> (y, aux)` where aux = balance_coef * balance loss + z_loss_coef * z-loss
    (None when both coefficients are 0, and while generating).
    """

    def __init__(self, dim: int, hidden: int, n_experts: int = 8, top_k: int = 2, noisy_topk: bool = False,
                 balance_coef: float = 0.01, z_loss_coef: float = 0.0, impl: str = "grouped",
                 init_std: float = INIT_STD, down_init_std: float | None = None):
        super().__init__(n_experts)
        self.balance_coef, self.z_loss_coef = balance_coef, z_loss_coef
        self.router = TopKRouter(dim, n_experts, top_k, noisy=noisy_topk, init_std=init_std)
        self.experts = GroupedExperts(n_experts, dim, hidden, init_std, down_init_std, impl)

    def forward(self, x: torch.Tensor, generating: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])                                    # (B * T, dim): routing is per token
        r = self.router(flat, with_probs=not generating)
        y = self.experts(flat, r.expert_ids, r.weights).view(shape)       # sum_j weight_j * expert_j(x)
        self.last_routing = r
        if generating:
            return y, None
        aux, balance = None, None
        if self.balance_coef:
            balance = load_balancing_loss(r.probs, r.expert_ids)
            aux = self.balance_coef * balance
        if self.z_loss_coef:
            z = self.z_loss_coef * router_z_loss(r.logits)
            aux = z if aux is None else aux + z
        self.stats.update(r, balance)
        return y, aux


class MixtralBlock(nn.Module):
    def __init__(self, c: MixtralConfig, layer_idx: int):
        super().__init__()
        self.attn_norm = RMSNorm(c.dim, c.norm_eps)
        self.attn = GroupedQueryAttention(c.dim, c.n_heads, c.n_kv_heads, layer_idx, c.head_dim,
                                          dropout=c.dropout, impl=c.attn_impl)
        self.ffn_norm = RMSNorm(c.dim, c.norm_eps)
        # The experts' down projections write into the residual stream: GPT-2's scaled std, set as they are built.
        self.moe = MoEFeedForward(c.dim, c.expert_hidden, c.n_experts, c.top_k, noisy_topk=c.noisy_topk,
                                  balance_coef=c.balance_coef, z_loss_coef=c.z_loss_coef, impl=c.moe_impl,
                                  down_init_std=residual_std(c.n_layers))
        self.ffn_drop = nn.Dropout(c.dropout)

    def forward(self, x, rope, cache=None):
        x = x + self.attn(self.attn_norm(x), rope, cache)
        y, aux = self.moe(self.ffn_norm(x), generating=cache is not None)
        return x + self.ffn_drop(y), aux


class SmolMixtral(CausalLM):
    def __init__(self, config: MixtralConfig):
        super().__init__()
        self.config = c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.dim)
        self.drop = nn.Dropout(c.dropout)
        self.rope = RotaryEmbedding(c.head_dim, c.max_seq_len, c.rope_base)
        self.blocks = nn.ModuleList(MixtralBlock(c, i) for i in range(c.n_layers))
        self.norm = RMSNorm(c.dim, c.norm_eps)
        self.lm_head = nn.Linear(c.dim, c.vocab_size, bias=False)
        if c.tie_embeddings:  # one matrix reads and writes tokens (Press & Wolf, https://arxiv.org/abs/1608.05859)
            self.lm_head.weight = self.tok_emb.weight
        init_normal(self)  # routers and experts initialised themselves (they hold no nn.Linear)
        for block in self.blocks:
            init_normal(block.attn.wo, std=residual_std(c.n_layers))

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None) -> LMOutput:
        B, T = idx.shape
        start = 0 if cache is None else cache.reserve(T)   # a cache holds the tokens before these
        x = self.drop(self.tok_emb(idx))                    # (B, T, dim)
        rope = self.rope(start, T)                          # cos, sin tables of positions start .. start + T
        aux_losses = []
        for block in self.blocks:
            x, aux = self.run_block(block, x, rope, cache)  # (B, T, dim), this layer's scaled balance (+ z) loss
            if aux is not None:
                aux_losses.append(aux)
        if cache is not None:
            cache.advance(T)
        x = self.norm(x)
        if targets is None:  # generation reads the last position only: skip the (B, T, vocab) projection
            return LMOutput(self.lm_head(x[:, -1:] if cache is not None else x))
        logits, loss = head_and_loss(x, self.lm_head, targets, self.loss_chunk_size)
        # Each layer is balanced on its own routing: the losses add up (SmolMixtral/convert.py says how
        # transformers' pooled formula compares).
        return LMOutput.with_losses(logits, loss, torch.stack(aux_losses).sum() if aux_losses else None)

    def new_cache(self, batch_size: int, max_len: int, device=None, dtype=None) -> KVCache:
        c, p = self.config, self.tok_emb.weight  # the embedding is never quantized
        return KVCache(c.n_layers, batch_size, c.n_kv_heads, max_len, c.head_dim,
                       device=device or p.device, dtype=dtype or p.dtype)

    def moe_layers(self) -> dict[int, MoEFeedForward]:
        return {i: block.moe for i, block in enumerate(self.blocks)}
