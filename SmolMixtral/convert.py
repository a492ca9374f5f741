"""SmolMixtral / StoryMixtral <-> transformers `MixtralForCausalLM`.

transformers (v5) stores a layer's experts fused as `gate_up_proj` (E, 2*hidden, dim) with the gate
rows first and `down_proj` (E, dim, hidden); SmolHub stores them input-major for grouped_mm
((E, dim, 2*hidden) and (E, hidden, dim)), so conversion is a transpose of the last two axes.
The noisy-top-k noise weights exist only in training and have no transformers counterpart.
"""

from __future__ import annotations

import torch

from smolhub_hub.config import ModelFamily
from smolhub_hub.export import layer_name_pairs
from SmolMixtral.config import FAMILY
from StoryLlama.model import unfused_state_dict

BLOCK_MAP = [  # (SmolHub name, transformers name, transpose last two axes)
    ("attn_norm.weight", "input_layernorm.weight", False),
    ("attn.wq.weight", "self_attn.q_proj.weight", False),
    ("attn.wk.weight", "self_attn.k_proj.weight", False),
    ("attn.wv.weight", "self_attn.v_proj.weight", False),
    ("attn.wo.weight", "self_attn.o_proj.weight", False),
    ("ffn_norm.weight", "post_attention_layernorm.weight", False),
    ("moe.router.weight", "mlp.gate.weight", False),
    ("moe.experts.w_gate_up", "mlp.experts.gate_up_proj", True),
    ("moe.experts.w_down", "mlp.experts.down_proj", True),
]
TOP_MAP = [("tok_emb.weight", "model.embed_tokens.weight", False), ("norm.weight", "model.norm.weight", False),
           ("lm_head.weight", "lm_head.weight", False)]


def hf_aux_loss_coef(balance_coef: float, top_k: int, n_layers: int) -> float:
    """transformers' `router_aux_loss_coef` for SmolHub's `balance_coef`.

    SmolHub adds each layer's Switch loss E * sum_e f_e P_e, computed on that layer's own routing (f: share of
    the N*k token copies), summed over the layers: every layer is balanced on its own. transformers'
    `load_balancing_loss_func` pools the router logits of all layers into one set of rows and normalises f by
    rows, not copies: k * E * sum_e f̄_e P̄_e, with f̄, P̄ averaged over the layers. Pooled and per-layer are
    different functions (layers may cancel each other's imbalance in the pooled one), so no coefficient makes
    them equal for every routing. This one, balance_coef * n_layers / k, makes them equal exactly when the
    layers' routing statistics agree: always for one layer (the case transformers' Switch formula describes),
    and e.g. for uniform router probabilities at any depth. Elsewhere they stay on the same scale.
    """
    return balance_coef * n_layers / top_k


def hf_config(c, **tokens):
    from transformers import MixtralConfig as HFMixtralConfig

    return HFMixtralConfig(
        vocab_size=c.vocab_size, hidden_size=c.dim, intermediate_size=c.expert_hidden,
        num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads, num_key_value_heads=c.n_kv_heads,
        head_dim=c.head_dim, max_position_embeddings=c.max_seq_len, rms_norm_eps=c.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": c.rope_base}, sliding_window=None,
        num_local_experts=c.n_experts, num_experts_per_tok=c.top_k, router_jitter_noise=0.0,
        router_aux_loss_coef=hf_aux_loss_coef(c.balance_coef, c.top_k, c.n_layers), output_router_logits=False,
        tie_word_embeddings=c.tie_embeddings, attention_dropout=0.0, **tokens)


def name_pairs(n_layers: int):
    return layer_name_pairs(TOP_MAP, BLOCK_MAP, n_layers, "model.layers")


@torch.no_grad()
def to_hf(model, **tokens):
    from transformers import MixtralForCausalLM

    hf = MixtralForCausalLM(hf_config(model.config, **tokens)).float()
    ours, theirs = unfused_state_dict(model), hf.state_dict()
    for a, b, transpose in name_pairs(model.config.n_layers):
        src = ours[a].transpose(-1, -2) if transpose else ours[a]
        theirs[b].copy_(src)
    hf.load_state_dict(theirs)
    if model.config.tie_embeddings:
        hf.tie_weights()
    return hf.eval()


@torch.no_grad()
def from_hf(hf, family: ModelFamily = FAMILY):
    """A SmolMixtral (or, with StoryMixtral's FAMILY, a StoryMixtral) with the weights of a transformers Mixtral."""
    h = hf.config
    rope = (getattr(h, "rope_parameters", None) or {}).get("rope_theta", getattr(h, "rope_theta", 1e6))
    head_dim = getattr(h, "head_dim", None) or h.hidden_size // h.num_attention_heads
    if head_dim * h.num_attention_heads != h.hidden_size:
        raise ValueError("SmolMixtral needs head_dim == hidden_size / num_attention_heads")
    if getattr(h, "sliding_window", None) and h.sliding_window < h.max_position_embeddings:
        raise ValueError("SmolMixtral has no sliding-window attention; this checkpoint uses one")
    cfg = family.model_config(
        vocab_size=h.vocab_size, dim=h.hidden_size, n_layers=h.num_hidden_layers, n_heads=h.num_attention_heads,
        n_kv_heads=h.num_key_value_heads, n_experts=h.num_local_experts, top_k=h.num_experts_per_tok,
        expert_hidden=h.intermediate_size, noisy_topk=False,
        balance_coef=h.router_aux_loss_coef / hf_aux_loss_coef(1.0, h.num_experts_per_tok, h.num_hidden_layers),
        max_seq_len=h.max_position_embeddings, rope_base=float(rope), norm_eps=h.rms_norm_eps,
        tie_embeddings=bool(h.tie_word_embeddings))
    model = family.model_class()(cfg)
    ours, theirs = unfused_state_dict(model), hf.state_dict()
    for a, b, transpose in name_pairs(cfg.n_layers):
        if b == "lm_head.weight" and b not in theirs:  # tied checkpoints may omit the head
            b = "model.embed_tokens.weight"
        src = theirs[b].float()
        ours[a].copy_(src.transpose(-1, -2) if transpose else src)
    model.load_state_dict(ours)
    return model.eval()
