"""SmolTransformer <-> transformers `GPT2LMHeadModel`.

GPT-2 stores its linear layers as `Conv1D` with the weight transposed (in_features, out_features);
SmolTransformer keeps plain `nn.Linear`s, so conversion transposes. Both fuse the query, key and value
projections into one matrix (`c_attn` / `wqkv`, rows in the same q, k, v order).
GPT-2 always has LayerNorm and biases: a bias-free SmolTransformer exports with zero biases (the
same function); an RMSNorm one cannot be expressed as GPT-2 and is refused.
"""

from __future__ import annotations

import torch

from smolhub_hub.errors import UserError
from smolhub_hub.export import layer_name_pairs
from SmolTransformer.config import SmolTransformerConfig
from SmolTransformer.model import SmolTransformer

ACTIVATIONS = {"tanh": "gelu_new", "none": "gelu"}  # SmolTransformer gelu_approximate -> GPT-2 name
TANH_GELUS = {"gelu_new", "gelu_pytorch_tanh", "gelu_fast"}  # tanh approximations, equal to fp32 rounding

# (SmolHub name, GPT-2 name, transpose?) inside one block
BLOCK_MAP = [
    ("attn.wqkv.weight", "attn.c_attn.weight", True), ("attn.wqkv.bias", "attn.c_attn.bias", False),
    ("attn_norm.weight", "ln_1.weight", False), ("attn_norm.bias", "ln_1.bias", False),
    ("attn.wo.weight", "attn.c_proj.weight", True), ("attn.wo.bias", "attn.c_proj.bias", False),
    ("ffn_norm.weight", "ln_2.weight", False), ("ffn_norm.bias", "ln_2.bias", False),
    ("ffn.fc.weight", "mlp.c_fc.weight", True), ("ffn.fc.bias", "mlp.c_fc.bias", False),
    ("ffn.proj.weight", "mlp.c_proj.weight", True), ("ffn.proj.bias", "mlp.c_proj.bias", False),
]
TOP_MAP = [("tok_emb.weight", "transformer.wte.weight", False), ("pos_emb.weight", "transformer.wpe.weight", False),
           ("norm.weight", "transformer.ln_f.weight", False), ("norm.bias", "transformer.ln_f.bias", False)]


def hf_config(c, **tokens):
    from transformers import GPT2Config

    if c.norm != "layernorm":
        raise UserError(f"GPT-2 has no {c.norm}: only a SmolTransformer trained with --norm layernorm "
                        "(e.g. --preset gpt2) exports to GPT2LMHeadModel")
    if c.vocab_size <= 50256:  # GPT2Config's default bos/eos (50256) would point outside this vocabulary
        tokens = {"bos_token_id": None, "eos_token_id": None, **tokens}
    return GPT2Config(
        vocab_size=c.vocab_size, n_positions=c.max_seq_len, n_embd=c.dim, n_layer=c.n_layers, n_head=c.n_heads,
        n_inner=c.ffn_width, activation_function=ACTIVATIONS[c.gelu_approximate],
        resid_pdrop=c.dropout, embd_pdrop=c.dropout, attn_pdrop=c.dropout, layer_norm_epsilon=c.norm_eps,
        tie_word_embeddings=c.tie_embeddings, **tokens)


def name_pairs(n_layers: int):
    return layer_name_pairs(TOP_MAP, BLOCK_MAP, n_layers, "transformer.h")


@torch.no_grad()
def to_hf(model, **tokens):
    """A `GPT2LMHeadModel` (fp32, eval mode) computing the same function as `model`."""
    from transformers import GPT2LMHeadModel

    c = model.config
    hf = GPT2LMHeadModel(hf_config(c, **tokens)).float()
    ours, theirs = model.state_dict(), hf.state_dict()
    for a, b, transpose in name_pairs(c.n_layers):
        if a in ours:
            theirs[b].copy_(ours[a].t() if transpose else ours[a])
        else:  # a bias-free SmolTransformer: GPT-2's bias is zero
            theirs[b].zero_()
    theirs["lm_head.weight"].copy_(ours["lm_head.weight"])
    hf.load_state_dict(theirs)
    if c.tie_embeddings:
        hf.tie_weights()
    return hf.eval()


def _check_supported(h):
    unsupported = {"scale_attn_by_inverse_layer_idx": True, "scale_attn_weights": False, "add_cross_attention": True}
    bad = [k for k, v in unsupported.items() if getattr(h, k, None) == v]
    if bad:
        raise UserError(f"this GPT-2 checkpoint uses {', '.join(bad)}, which SmolTransformer does not implement")
    if h.activation_function not in TANH_GELUS | {"gelu"}:
        raise UserError(f"GPT-2 activation '{h.activation_function}' is not a GELU; SmolTransformer cannot load it")


@torch.no_grad()
def from_hf(hf, **overrides):
    """A SmolTransformer with the weights of a transformers GPT-2 (gpt2, gpt2-medium, distilgpt2, ...).

    `overrides` set fields that do not change the function, e.g. `dropout=0.1` for fine-tuning.
    """
    h = hf.config
    _check_supported(h)
    cfg = SmolTransformerConfig(
        vocab_size=h.vocab_size, dim=h.n_embd, n_layers=h.n_layer, n_heads=h.n_head,
        ffn_hidden=h.n_inner or 4 * h.n_embd, max_seq_len=h.n_positions, norm="layernorm",
        norm_eps=h.layer_norm_epsilon, bias=True,
        gelu_approximate="none" if h.activation_function == "gelu" else "tanh",
        tie_embeddings=bool(getattr(h, "tie_word_embeddings", True))).replace(**overrides)
    model = SmolTransformer(cfg)
    ours, theirs = model.state_dict(), {k: v.float() for k, v in hf.state_dict().items()}
    for a, b, transpose in name_pairs(cfg.n_layers):
        ours[a].copy_(theirs[b].t() if transpose else theirs[b])
    # Tied checkpoints may omit the head.
    ours["lm_head.weight"].copy_(theirs.get("lm_head.weight", theirs["transformer.wte.weight"]))
    model.load_state_dict(ours)
    return model.eval()
