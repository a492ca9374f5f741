"""StoryKimi: the DeepSeek-V3 / Kimi-K2 architecture at small scale, read top to bottom in this file.

    token ids (B, T)
      -> token embedding                                        (B, T, dim)
      -> n_layers x KimiBlock:  x = x + latent attention(RMSNorm(x))     MLA, decoupled RoPE
                                x = x + FFN(RMSNorm(x))   dense SwiGLU in the first `first_k_dense` blocks, then
                                                          DeepSeek MoE: routed + shared experts
      -> RMSNorm -> output head                                 (B, T, vocab) -> cross-entropy (+ sequence balance)

The MoE scores experts with a sigmoid and balances them without an auxiliary loss: a per-expert bias, nudged after
every optimizer step, decides *which* experts are chosen but never how much they weigh. Numerically the same
function as transformers' `DeepseekV3ForCausalLM` with the same weights (`StoryKimi/convert.py`,
tests/StoryKimi/test_hf_parity.py). The SwiGLU is StoryLlama's; the stacked experts are
`smolhub_hub.moe_kernels.GroupedExperts`, shared with the Mixtral family.

MLA in one paragraph (DeepSeek-V2, https://arxiv.org/abs/2405.04434): each token's keys and values are compressed
into one `kv_lora_rank` latent (plus one small RoPE key shared by the heads); every head up-projects the latent
with its own slice of `wkv_b`. Training expands the latent into per-head keys/values and runs ordinary attention.
Generation caches only the latent and the RoPE key and folds the up-projections into the query and the output
("absorption"), so attention runs directly against the cache, which is several times smaller per token than a
multi-head KV cache.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from smolhub_hub.kv_cache import KVCache
from smolhub_hub.layers import RMSNorm, RotaryEmbedding, apply_rope, causal_attention
from smolhub_hub.losses import head_and_loss
from smolhub_hub.modeling import INIT_STD, CausalLM, LMOutput, init_normal, residual_std
from smolhub_hub.moe_kernels import GroupedExperts, MoELayer, RouterOutput, expert_counts
from StoryKimi.config import StoryKimiConfig
from StoryLlama.model import SwiGLU

# transformers' DeepseekV3 builds its latent norms with the default eps, whatever rms_norm_eps says.
LATENT_NORM_EPS = 1e-6


# --- attention ----------------------------------------------------------------------------------------
class LatentCache(KVCache):
    """MLA's generation cache: per layer and token, the normalised KV latent and the roped shared key.

    Same shape of use as `KVCache` (`pos`, `reserve`, `update`, `advance`, `nbytes_per_token`); the
    two parts live side by side in one (layers, batch, 1, max_len, kv_lora_rank + rope) tensor, so the
    latent attention reads keys as the whole row and values as its first `kv_lora_rank` columns.
    """

    def __init__(self, n_layers: int, batch_size: int, max_len: int, kv_lora_rank: int, rope_dim: int,
                 device=None, dtype=torch.float32):
        self.kv = torch.zeros(n_layers, batch_size, 1, max_len, kv_lora_rank + rope_dim, device=device, dtype=dtype)
        self.kv_lora_rank, self.max_len, self.pos = kv_lora_rank, max_len, 0

    def update(self, layer: int, latent: torch.Tensor, k_rope: torch.Tensor) -> torch.Tensor:
        """latent: (B, T, rank); k_rope: (B, 1, T, rope) -> this layer's rows so far, (B, 1, pos + T, rank + rope)."""
        t = latent.shape[1]
        rows = self.kv[layer, :, :, self.pos:self.pos + t]
        rows[..., :self.kv_lora_rank] = latent.unsqueeze(1)
        rows[..., self.kv_lora_rank:] = k_rope
        return self.kv[layer, :, :, :self.pos + t]

    def nbytes_per_token(self) -> int:
        return self.kv.element_size() * self.kv.shape[0] * self.kv.shape[-1]


class LatentAttention(nn.Module):
    """Multi-head latent attention of one layer; every projection belongs to this layer alone."""

    def __init__(self, c: StoryKimiConfig, layer_idx: int):
        super().__init__()
        self.layer_idx, self.n_heads, self.dropout = layer_idx, c.n_heads, c.dropout
        self.nope, self.rope_dim = c.qk_nope_head_dim, c.qk_rope_head_dim
        self.v_dim, self.rank = c.v_head_dim, c.kv_lora_rank
        self.scale = c.qk_head_dim ** -0.5
        q_out = c.n_heads * c.qk_head_dim
        self.q_lora = c.q_lora_rank > 0  # queries through their own low-rank latent (DeepSeek-V3), or one matrix
        if self.q_lora:
            self.wq_a = nn.Linear(c.dim, c.q_lora_rank, bias=False)
            self.q_norm = RMSNorm(c.q_lora_rank, LATENT_NORM_EPS)
            self.wq_b = nn.Linear(c.q_lora_rank, q_out, bias=False)
        else:
            self.wq = nn.Linear(c.dim, q_out, bias=False)
        self.wkv_a = nn.Linear(c.dim, c.kv_lora_rank + c.qk_rope_head_dim, bias=False)  # down-projection + RoPE key
        self.kv_norm = RMSNorm(c.kv_lora_rank, LATENT_NORM_EPS)
        self.wkv_b = nn.Linear(c.kv_lora_rank, c.n_heads * (c.qk_nope_head_dim + c.v_head_dim), bias=False)
        self.wo = nn.Linear(c.n_heads * c.v_head_dim, c.dim, bias=False)  # writes into the residual stream
        self.resid_dropout = nn.Dropout(c.dropout)
        self.track_max_logit = c.qk_clip_tau > 0
        # Per-head max logit over the step, for QK-clip. Not a buffer: DDP would overwrite it with rank 0's.
        self.max_logit: torch.Tensor | None = None

    @property
    def q_proj(self) -> nn.Linear:
        return self.wq_b if self.q_lora else self.wq

    def forward(self, x, rope, cache: LatentCache | None = None):
        B, T, _ = x.shape
        q = self.q_proj(self.q_norm(self.wq_a(x)) if self.q_lora else x)  # (B, T, H * (nope + rope))
        q_nope, q_rope = q.view(B, T, self.n_heads, -1).transpose(1, 2).split([self.nope, self.rope_dim], -1)
        latent, k_rope = self.wkv_a(x).split([self.rank, self.rope_dim], -1)
        latent = self.kv_norm(latent)
        # One rotation for the H query heads and the one shared key head together.
        q_rope, k_rope = apply_rope(torch.cat([q_rope, k_rope.unsqueeze(1)], 1), *rope).split([self.n_heads, 1], 1)
        if cache is None:
            y = self._attend_expanded(q_nope, q_rope, latent, k_rope)
        else:
            y = self._attend_absorbed(q_nope, q_rope, cache.update(self.layer_idx, latent, k_rope))
        return self.resid_dropout(self.wo(y.transpose(1, 2).reshape(B, T, -1)))

    def _up_projections(self):
        """wkv_b as per-head (H, nope, rank) key and (H, v, rank) value up-projections (views)."""
        w = self.wkv_b.weight.view(self.n_heads, self.nope + self.v_dim, self.rank)
        return w[:, :self.nope], w[:, self.nope:]

    def _attend_expanded(self, q_nope, q_rope, latent, k_rope):
        """Training / no cache: up-project the latent to per-head keys and values, then plain attention."""
        B, H, T, _ = q_nope.shape
        k_nope, v = self.wkv_b(latent).view(B, T, H, -1).transpose(1, 2).split([self.nope, self.v_dim], -1)
        q = torch.cat([q_nope, q_rope], -1)
        k = torch.cat([k_nope, k_rope.expand(-1, H, -1, -1)], -1)
        if self.track_max_logit and self.training:
            self._record_max_logit(q, k)
        # SDPA's default scale 1/sqrt(nope + rope) is DeepSeek's softmax scale.
        return causal_attention(q, k, v, self.dropout if self.training else 0.0)

    def _attend_absorbed(self, q_nope, q_rope, cached):
        """Generation: attend straight against the cached latents (B, 1, S, rank + rope).

        q_nope . (W_uk c) = (W_uk^T q_nope) . c, so the key up-projection moves into the query; the
        value up-projection is applied once to the attention output instead of to every cached token.
        Every head then shares one key/value "head": multi-query attention over the latent.
        """
        w_uk, w_uv = self._up_projections()
        q = torch.cat([torch.matmul(q_nope, w_uk), q_rope], -1)  # (B, H, T, rank + rope), per-head W_uk
        values = cached[..., :self.rank]
        if q.shape[2] == 1:  # decoding: the heads become the query axis of one latent "head"
            scores = torch.matmul(q.transpose(1, 2), cached.transpose(-1, -2)) * self.scale  # (B, 1, H, S)
            o = torch.matmul(scores.softmax(-1, dtype=torch.float32).to(values.dtype), values).transpose(1, 2)
        else:  # a prompt: causal, offset by what is already cached; the shared causal mask wants the default scale
            o = causal_attention(q * (self.scale * math.sqrt(q.shape[-1])), cached, values)
        return torch.matmul(o, w_uv.transpose(-1, -2))  # (B, H, T, v): per-head W_uv

    @torch.no_grad()
    def _record_max_logit(self, q, k):
        T = q.shape[-2]
        logits = (q @ k.transpose(-2, -1)) * self.scale
        causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
        per_head = logits.masked_fill(~causal, float("-inf")).amax(dim=(0, 2, 3)).float()
        self.max_logit = per_head if self.max_logit is None else torch.maximum(self.max_logit, per_head)

    def on_step_skipped(self):
        self.max_logit = None  # a NaN or inf here would scale the weights by NaN or 0 at the next clip

    @torch.no_grad()
    def qk_clip(self, tau: float) -> torch.Tensor:
        """Kimi K2's QK-clip (https://arxiv.org/abs/2507.20534): a head whose max logit S exceeded tau gets its
        query/key weights scaled so that S becomes tau: the head-specific nope parts by sqrt(tau/S) each, its RoPE
        query by tau/S (the RoPE key is shared by all heads, so it stays). Returns the heads that were clipped
        (bool, H)."""
        max_logit = self.max_logit if self.max_logit is not None else self.wo.weight.new_zeros(self.n_heads).float()
        if dist.is_initialized():
            dist.all_reduce(max_logit, op=dist.ReduceOp.MAX)
        gamma = (tau / max_logit.clamp(min=1e-6)).clamp(max=1.0)  # 1 for heads within bounds
        q_w = self.q_proj.weight.view(self.n_heads, self.nope + self.rope_dim, -1)
        q_w[:, :self.nope].mul_(gamma.sqrt()[:, None, None].to(q_w.dtype))
        q_w[:, self.nope:].mul_(gamma[:, None, None].to(q_w.dtype))
        w_uk, _ = self._up_projections()
        w_uk.mul_(gamma.sqrt()[:, None, None].to(w_uk.dtype))
        self.max_logit = None
        return gamma < 1.0


# --- mixture of experts -------------------------------------------------------------------------------
class DeepSeekRouter(nn.Module):
    """DeepSeek-V3's router: sigmoid affinities; a per-expert bias picks the top-k (and the top groups)
    but never weighs them; the chosen affinities are normalised and scaled by `routed_scaling_factor`."""

    def __init__(self, c: StoryKimiConfig):
        super().__init__()
        self.n_experts, self.top_k = c.n_experts, c.top_k
        self.n_group, self.topk_group = c.n_group, c.topk_group
        self.scaling, self.normalize = c.routed_scaling_factor, c.norm_topk_prob
        self.weight = nn.Parameter(torch.empty(c.n_experts, c.dim))
        nn.init.normal_(self.weight, 0.0, INIT_STD)
        # DeepSeek's e_score_correction_bias: a persistent buffer, so checkpoints and resume carry it.
        self.register_buffer("expert_bias", torch.zeros(c.n_experts))

    def forward(self, x: torch.Tensor, with_probs: bool = True) -> RouterOutput:
        """`with_probs=False` (generation: no balance loss, no statistics) skips the normalised affinities."""
        with torch.autocast(x.device.type, enabled=False):  # fp32 even under autocast: bf16 rounding would
            logits = F.linear(x.float(), self.weight.float())  # flip choices and swallow the 1e-3 bias steps
        scores = logits.sigmoid()
        choice = scores.detach() + self.expert_bias
        if self.n_group > 1:
            choice = self._keep_top_groups(choice)
        expert_ids = choice.topk(self.top_k, dim=-1).indices
        weights = scores.gather(-1, expert_ids)  # the bias is not in here: selection only
        if self.normalize:
            weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
        if not with_probs:
            return RouterOutput(logits, None, expert_ids, weights * self.scaling)
        affinity = scores / scores.sum(-1, keepdim=True)  # normalised s'_i of the balance loss and stats
        return RouterOutput(logits, affinity, expert_ids, weights * self.scaling)

    def _keep_top_groups(self, choice):
        """Group-limited routing: a group scores the sum of its two best experts; keep the best groups."""
        grouped = choice.view(-1, self.n_group, self.n_experts // self.n_group)
        top_groups = grouped.topk(2, dim=-1).values.sum(-1).topk(self.topk_group, dim=-1).indices
        keep = torch.zeros_like(grouped[..., 0], dtype=torch.bool).scatter_(1, top_groups, True)
        return grouped.masked_fill(~keep[..., None], float("-inf")).view_as(choice)


def sequence_balance_loss(affinity: torch.Tensor, expert_ids: torch.Tensor) -> torch.Tensor:
    """DeepSeek-V3's sequence-wise balance loss sum_i f_i P_i, averaged over sequences (1 when uniform).

    affinity: (B, T, E) normalised scores; expert_ids: (B, T, k). f_i = E/(k T) * tokens sent to i.
    """
    B, T, k = expert_ids.shape
    E = affinity.shape[-1]
    counts = torch.zeros(B, E, device=affinity.device).scatter_add_(
        1, expert_ids.reshape(B, -1), torch.ones(B, T * k, device=affinity.device))
    return (counts * (E / (k * T)) * affinity.mean(1)).sum(-1).mean()


class DeepSeekMoE(MoELayer):
    """Routed SwiGLU experts (`smolhub_hub.moe_kernels.GroupedExperts`) plus shared experts every token uses
    (DeepSeekMoE, https://arxiv.org/abs/2401.06066)."""

    def __init__(self, c: StoryKimiConfig, down_init_std: float):
        super().__init__(c.n_experts)
        self.router = DeepSeekRouter(c)
        self.experts = GroupedExperts(c.n_experts, c.dim, c.expert_hidden, INIT_STD, down_init_std, c.moe_impl)
        self.shared = SwiGLU(c.dim, c.expert_hidden * c.n_shared_experts) if c.n_shared_experts else None
        self.seq_aux_loss_coef = c.seq_aux_loss_coef
        # Token copies per expert over the current optimizer step (training forwards only). A plain
        # tensor, not a buffer: DDP re-broadcasts rank 0's buffers every forward and would erase ours.
        self.step_load: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, generating: bool = False):
        B, T, D = x.shape
        flat = x.reshape(-1, D)
        r = self.router(flat, with_probs=not generating)
        y = self.experts(flat, r.expert_ids, r.weights).view_as(x)
        self.last_routing = r
        if self.shared is not None:
            y = y + self.shared(x)
        aux = None
        if self.training and torch.is_grad_enabled() and not generating:  # never eval, never generation
            # (activation checkpointing recounts every token once more: the balance sign is unchanged)
            load = expert_counts(r.expert_ids, self.router.n_experts)
            self.step_load = load if self.step_load is None else self.step_load + load
            if self.seq_aux_loss_coef:
                balance = sequence_balance_loss(r.probs.view(B, T, -1), r.expert_ids.view(B, T, -1))
                aux = self.seq_aux_loss_coef * balance
        if not generating:  # telemetry is for training and evaluation forwards
            self.stats.update(r)
        return y, aux

    def on_step_skipped(self):
        super().on_step_skipped()
        self.step_load = None  # the next bias update counts the tokens of applied steps only


# --- the model ------------------------------------------------------------------------------------------
class KimiBlock(nn.Module):
    """Latent attention, then a dense SwiGLU (the first `first_k_dense` blocks) or a DeepSeek MoE. Every block
    returns (x, auxiliary loss or None), so that one loop runs the mixed stack."""

    def __init__(self, c: StoryKimiConfig, layer_idx: int):
        super().__init__()
        self.attn_norm = RMSNorm(c.dim, c.norm_eps)
        self.attn = LatentAttention(c, layer_idx)
        self.ffn_norm = RMSNorm(c.dim, c.norm_eps)
        self.is_moe = c.is_moe_layer(layer_idx)
        # The routed experts' down projections write into the residual stream: GPT-2's scaled std, set as built.
        self.ffn = DeepSeekMoE(c, residual_std(c.n_layers)) if self.is_moe else SwiGLU(c.dim, c.ffn_hidden)
        self.ffn_dropout = nn.Dropout(c.dropout)

    def forward(self, x, rope, cache=None):
        x = x + self.attn(self.attn_norm(x), rope, cache)
        h = self.ffn_norm(x)
        h, aux = self.ffn(h, generating=cache is not None) if self.is_moe else (self.ffn(h), None)
        return x + self.ffn_dropout(h), aux


class StoryKimi(CausalLM):
    def __init__(self, config: StoryKimiConfig):
        super().__init__()
        self.config = c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.dim)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(KimiBlock(c, i) for i in range(c.n_layers))
        self.norm = RMSNorm(c.dim, c.norm_eps)
        self.lm_head = nn.Linear(c.dim, c.vocab_size, bias=False)
        if c.tie_embeddings:  # DeepSeek does not tie; the quick preset does (a small vocabulary-heavy model)
            self.lm_head.weight = self.tok_emb.weight
        # RoPE on the decoupled qk_rope_head_dim part only: the latent (nope) part carries no position.
        self.rope = RotaryEmbedding(c.qk_rope_head_dim, c.max_seq_len, c.rope_base)
        init_normal(self)  # routers and routed experts initialised themselves (they hold no nn.Linear)
        for block in self.blocks:
            ffn_out = block.ffn.shared if block.is_moe else block.ffn  # a SwiGLU, or None: no shared expert
            init_normal(block.attn.wo, *([ffn_out.w_down] if ffn_out is not None else []),
                        std=residual_std(c.n_layers))
        self.qk_clipped: torch.Tensor | None = None  # (layer, head)s QK-clip rescaled since `routing_stats` last read

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                cache: LatentCache | None = None) -> LMOutput:
        B, T = idx.shape
        start = 0 if cache is None else cache.reserve(T)   # a cache holds the tokens before these
        x = self.drop(self.tok_emb(idx))                    # (B, T, dim)
        rope = self.rope(start, T)                          # cos, sin tables of positions start .. start + T
        aux_losses = []
        for block in self.blocks:
            x, aux = self.run_block(block, x, rope, cache)  # (B, T, dim), the MoE's sequence balance loss
            if aux is not None:
                aux_losses.append(aux)
        if cache is not None:
            cache.advance(T)
        x = self.norm(x)
        if targets is None:  # generation reads the last position only: skip the (B, T, vocab) projection
            return LMOutput(self.lm_head(x[:, -1:] if cache is not None else x))
        logits, loss = head_and_loss(x, self.lm_head, targets, self.loss_chunk_size)
        return LMOutput.with_losses(logits, loss, torch.stack(aux_losses).sum() if aux_losses else None)

    def new_cache(self, batch_size: int, max_len: int, device=None, dtype=None) -> LatentCache:
        c, p = self.config, self.tok_emb.weight  # the embedding is never quantized
        return LatentCache(c.n_layers, batch_size, max_len, c.kv_lora_rank, c.qk_rope_head_dim,
                           device=device or p.device, dtype=dtype or p.dtype)

    def moe_layers(self) -> dict[int, DeepSeekMoE]:
        return {i: block.ffn for i, block in enumerate(self.blocks) if block.is_moe}

    @torch.no_grad()
    def on_optimizer_step(self):
        """Once per optimizer step: aux-loss-free bias update from the step's load, then QK-clip."""
        self._update_expert_bias()
        if self.config.qk_clip_tau > 0:
            clipped = torch.stack([b.attn.qk_clip(self.config.qk_clip_tau) for b in self.blocks]).sum()
            self.qk_clipped = clipped if self.qk_clipped is None else self.qk_clipped + clipped

    def on_step_skipped(self):
        super().on_step_skipped()  # routing statistics and the step's expert loads
        for block in self.blocks:
            block.attn.on_step_skipped()  # the step's max attention logits

    def _update_expert_bias(self):
        """DeepSeek-V3's auxiliary-loss-free balancing (https://arxiv.org/abs/2412.19437, section 2.1.2):
        bias_e += gamma * sign(mean load - load_e), the load summed over micro-batches and DDP ranks."""
        moes = [m for m in self.moe_layers().values() if m.step_load is not None]
        if not moes:
            return
        load = torch.stack([m.step_load for m in moes]).float()  # (layers, E)
        if dist.is_initialized():
            dist.all_reduce(load, op=dist.ReduceOp.SUM)
        step = self.config.bias_update_rate * torch.sign(load.mean(-1, keepdim=True) - load)
        for m, s in zip(moes, step, strict=True):
            m.router.expert_bias.add_(s)
            m.step_load = None

    def routing_stats(self) -> dict[str, float]:
        """Per-layer expert load / entropy since the last call (`moe/layer<block>/...`), and the heads QK-clip
        rescaled since then."""
        out = super().routing_stats()
        if self.qk_clipped is not None:
            out["attn/qk_clip_heads"] = float(self.qk_clipped)
            self.qk_clipped = None
        return out
