"""StoryLlama <-> transformers `LlamaForCausalLM`. Same RoPE convention; the layouts match one to one once
the fused `wqkv` is split into q/k/v (`unfused_state_dict`; loading the split form fuses it again)."""

from __future__ import annotations

import torch

from smolhub_hub.export import layer_name_pairs
from StoryLlama.config import StoryLlamaConfig
from StoryLlama.model import StoryLlama, unfused_state_dict

# (SmolHub name, transformers name) inside one block
BLOCK_MAP = [
    ("attn_norm.weight", "input_layernorm.weight"),
    ("attn.wq.weight", "self_attn.q_proj.weight"),
    ("attn.wk.weight", "self_attn.k_proj.weight"),
    ("attn.wv.weight", "self_attn.v_proj.weight"),
    ("attn.wo.weight", "self_attn.o_proj.weight"),
    ("ffn_norm.weight", "post_attention_layernorm.weight"),
    ("ffn.w_gate.weight", "mlp.gate_proj.weight"),
    ("ffn.w_up.weight", "mlp.up_proj.weight"),
    ("ffn.w_down.weight", "mlp.down_proj.weight"),
]
TOP_MAP = [("tok_emb.weight", "model.embed_tokens.weight"), ("norm.weight", "model.norm.weight"),
           ("lm_head.weight", "lm_head.weight")]


def hf_config(c, **tokens):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.dim, intermediate_size=c.ffn_width,
        num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads, num_key_value_heads=c.n_kv_heads,
        head_dim=c.head_dim, max_position_embeddings=c.max_seq_len, rms_norm_eps=c.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": c.rope_base},
        tie_word_embeddings=c.tie_embeddings, attention_bias=False, mlp_bias=False, **tokens)


def name_pairs(n_layers: int):
    return layer_name_pairs(TOP_MAP, BLOCK_MAP, n_layers, "model.layers")


@torch.no_grad()
def to_hf(model, **tokens):
    from transformers import LlamaForCausalLM

    hf = LlamaForCausalLM(hf_config(model.config, **tokens)).float()
    ours, theirs = unfused_state_dict(model), hf.state_dict()
    for a, b in name_pairs(model.config.n_layers):
        theirs[b].copy_(ours[a])
    hf.load_state_dict(theirs)
    if model.config.tie_embeddings:
        hf.tie_weights()
    return hf.eval()


@torch.no_grad()
def from_hf(hf):
    """A StoryLlama with the weights of a transformers Llama (any Llama-architecture checkpoint)."""
    h = hf.config
    rope = (getattr(h, "rope_parameters", None) or {}).get("rope_theta", getattr(h, "rope_theta", 10000.0))
    if h.hidden_size // h.num_attention_heads != getattr(h, "head_dim", h.hidden_size // h.num_attention_heads):
        raise ValueError("StoryLlama needs head_dim == hidden_size / num_attention_heads")
    cfg = StoryLlamaConfig(vocab_size=h.vocab_size, dim=h.hidden_size, n_layers=h.num_hidden_layers,
                           n_heads=h.num_attention_heads, n_kv_heads=h.num_key_value_heads,
                           ffn_hidden=h.intermediate_size, max_seq_len=h.max_position_embeddings,
                           rope_base=float(rope), norm_eps=h.rms_norm_eps,
                           tie_embeddings=bool(h.tie_word_embeddings))
    model = StoryLlama(cfg)
    ours, theirs = unfused_state_dict(model), hf.state_dict()
    for a, b in name_pairs(cfg.n_layers):
        if b == "lm_head.weight" and b not in theirs:  # tied checkpoints may omit the head
            b = "model.embed_tokens.weight"
        ours[a].copy_(theirs[b].float())
    model.load_state_dict(ours)
    return model.eval()
