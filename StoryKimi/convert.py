"""StoryKimi <-> transformers `DeepseekV3ForCausalLM`.

Two layout differences, both handled here and nowhere in the model:
  - RoPE: StoryKimi rotates half-split pairs (x_i, x_{i+d/2}), as every SmolHub model does; DeepSeek's
    checkpoints (`rope_interleave=True`) rotate adjacent pairs (x_2i, x_2i+1). Permuting the RoPE rows of
    the query and of the shared key projection turns one into the other exactly, and since queries and
    keys are permuted alike, the attention scores do not change.
  - Experts: `GroupedExperts` stores (E, in, out); transformers stores (E, out, in).
"""

from __future__ import annotations

import torch

from StoryKimi.config import StoryKimiConfig
from StoryKimi.model import StoryKimi

TOP_MAP = [("tok_emb.weight", "model.embed_tokens.weight"), ("norm.weight", "model.norm.weight"),
           ("lm_head.weight", "lm_head.weight")]
ATTN_MAP = [
    ("attn_norm.weight", "input_layernorm.weight"),
    ("attn.wq.weight", "self_attn.q_proj.weight"),
    ("attn.wq_a.weight", "self_attn.q_a_proj.weight"),
    ("attn.q_norm.weight", "self_attn.q_a_layernorm.weight"),
    ("attn.wq_b.weight", "self_attn.q_b_proj.weight"),
    ("attn.wkv_a.weight", "self_attn.kv_a_proj_with_mqa.weight"),
    ("attn.kv_norm.weight", "self_attn.kv_a_layernorm.weight"),
    ("attn.wkv_b.weight", "self_attn.kv_b_proj.weight"),
    ("attn.wo.weight", "self_attn.o_proj.weight"),
    ("ffn_norm.weight", "post_attention_layernorm.weight"),
]
DENSE_MAP = [("ffn.w_gate.weight", "mlp.gate_proj.weight"), ("ffn.w_up.weight", "mlp.up_proj.weight"),
             ("ffn.w_down.weight", "mlp.down_proj.weight")]
MOE_MAP = [
    ("ffn.router.weight", "mlp.gate.weight"),
    ("ffn.router.expert_bias", "mlp.gate.e_score_correction_bias"),
    ("ffn.experts.w_gate_up", "mlp.experts.gate_up_proj"),   # transposed
    ("ffn.experts.w_down", "mlp.experts.down_proj"),         # transposed
    ("ffn.shared.w_gate.weight", "mlp.shared_experts.gate_proj.weight"),
    ("ffn.shared.w_up.weight", "mlp.shared_experts.up_proj.weight"),
    ("ffn.shared.w_down.weight", "mlp.shared_experts.down_proj.weight"),
]
TRANSPOSED = ("ffn.experts.w_gate_up", "ffn.experts.w_down")


def hf_config(c, rope_interleave: bool = True, **tokens):
    from transformers import DeepseekV3Config

    return DeepseekV3Config(
        vocab_size=c.vocab_size, hidden_size=c.dim, intermediate_size=c.ffn_hidden,
        moe_intermediate_size=c.expert_hidden, num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads,
        num_key_value_heads=c.n_heads, n_shared_experts=c.n_shared_experts, n_routed_experts=c.n_experts,
        num_experts_per_tok=c.top_k, routed_scaling_factor=c.routed_scaling_factor,
        kv_lora_rank=c.kv_lora_rank, q_lora_rank=c.q_lora_rank or None, qk_rope_head_dim=c.qk_rope_head_dim,
        qk_nope_head_dim=c.qk_nope_head_dim, v_head_dim=c.v_head_dim, n_group=c.n_group, topk_group=c.topk_group,
        first_k_dense_replace=c.first_k_dense, norm_topk_prob=c.norm_topk_prob, hidden_act="silu",
        max_position_embeddings=c.max_seq_len, rms_norm_eps=c.norm_eps, tie_word_embeddings=c.tie_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": c.rope_base}, rope_interleave=rope_interleave,
        attention_bias=False, attention_dropout=0.0, **tokens)


def name_pairs(c, ours: dict):
    pairs = list(TOP_MAP)
    for i in range(c.n_layers):
        block = ATTN_MAP + (MOE_MAP if c.is_moe_layer(i) else DENSE_MAP)
        pairs += [(f"blocks.{i}.{a}", f"model.layers.{i}.{b}") for a, b in block if f"blocks.{i}.{a}" in ours]
    return pairs


def interleave_order(c, name: str) -> torch.Tensor | None:
    """Row order that turns StoryKimi's RoPE rows into DeepSeek's interleaved ones (None: not a RoPE weight).

    Interleaved row 2i / 2i+1 is half-split row i / i + d/2 of the same head.
    """
    d = c.qk_rope_head_dim
    half_split = torch.stack([torch.arange(d // 2), torch.arange(d // 2) + d // 2], 1).reshape(-1)
    if name.endswith(("attn.wq.weight", "attn.wq_b.weight")):
        heads = torch.arange(c.n_heads)[:, None] * c.qk_head_dim
        nope = torch.arange(c.qk_nope_head_dim)
        return (heads + torch.cat([nope, c.qk_nope_head_dim + half_split])).reshape(-1)
    if name.endswith("attn.wkv_a.weight"):
        return torch.cat([torch.arange(c.kv_lora_rank), c.kv_lora_rank + half_split])
    return None


@torch.no_grad()
def to_hf(model, rope_interleave: bool = True, **tokens):
    """A `DeepseekV3ForCausalLM` computing the same function; `rope_interleave=True` is DeepSeek's layout."""
    from transformers import DeepseekV3ForCausalLM

    c = model.config
    hf = DeepseekV3ForCausalLM(hf_config(c, rope_interleave, **tokens)).float()
    ours, theirs = model.state_dict(), hf.state_dict()
    for a, b in name_pairs(c, ours):
        t = ours[a].transpose(-2, -1) if a.endswith(TRANSPOSED) else ours[a]
        order = interleave_order(c, a) if rope_interleave else None
        theirs[b].copy_(t if order is None else t[order])
    hf.load_state_dict(theirs)
    if c.tie_embeddings:
        hf.tie_weights()
    return hf.eval()


def config_from_hf(h):
    rope = getattr(h, "rope_parameters", None) or {"rope_type": "default", "rope_theta": getattr(h, "rope_theta", 1e4)}
    unsupported = []
    if rope.get("rope_type", "default") != "default":
        unsupported.append(f"rope_type {rope['rope_type']} (StoryKimi implements plain RoPE)")
    if getattr(h, "attention_bias", False):
        unsupported.append("attention_bias=True")
    if h.hidden_act != "silu":
        unsupported.append(f"hidden_act {h.hidden_act}")
    if (h.num_key_value_heads or h.num_attention_heads) != h.num_attention_heads:
        unsupported.append("num_key_value_heads != num_attention_heads")
    if unsupported:
        raise ValueError("this DeepseekV3 checkpoint uses what StoryKimi does not: " + ", ".join(unsupported))
    return StoryKimiConfig(
        vocab_size=h.vocab_size, dim=h.hidden_size, n_layers=h.num_hidden_layers, n_heads=h.num_attention_heads,
        q_lora_rank=h.q_lora_rank or 0, kv_lora_rank=h.kv_lora_rank, qk_nope_head_dim=h.qk_nope_head_dim,
        qk_rope_head_dim=h.qk_rope_head_dim, v_head_dim=h.v_head_dim, n_experts=h.n_routed_experts,
        top_k=h.num_experts_per_tok, n_shared_experts=h.n_shared_experts, expert_hidden=h.moe_intermediate_size,
        first_k_dense=h.first_k_dense_replace, ffn_hidden=h.intermediate_size, n_group=h.n_group or 1,
        topk_group=h.topk_group or 1, routed_scaling_factor=float(h.routed_scaling_factor),
        norm_topk_prob=bool(h.norm_topk_prob), max_seq_len=h.max_position_embeddings,
        rope_base=float(rope["rope_theta"]), norm_eps=h.rms_norm_eps, tie_embeddings=bool(h.tie_word_embeddings))


@torch.no_grad()
def from_hf(hf):
    """A StoryKimi with the weights of a transformers DeepseekV3 (interleaved or half-split RoPE)."""
    cfg = config_from_hf(hf.config)
    model = StoryKimi(cfg)
    ours, theirs = model.state_dict(), hf.state_dict()
    interleaved = bool(getattr(hf.config, "rope_interleave", True))
    for a, b in name_pairs(cfg, ours):
        if b == "lm_head.weight" and b not in theirs:  # tied checkpoints may omit the head
            b = "model.embed_tokens.weight"
        t = theirs[b].float()
        order = interleave_order(cfg, a) if interleaved else None
        if order is not None:
            t = t[torch.argsort(order)]
        ours[a].copy_(t.transpose(-2, -1) if a.endswith(TRANSPOSED) else t)
    model.load_state_dict(ours)
    return model.eval()
