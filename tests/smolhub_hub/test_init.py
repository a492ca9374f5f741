"""Every family starts from GPT-2's init, set module by module in its own model.py: N(0, 0.02) for the weight
matrices and embeddings, 0.02 / sqrt(2 * n_layers) for the projections that write into the residual stream,
zero biases and unit norms. Pinned here by the measured std, since the draws themselves may change."""

from __future__ import annotations

import math

import pytest
import torch

from smolhub_hub.registry import get_family

N_LAYERS = 4
SIZES = {"vocab_size": 512, "dim": 256, "n_layers": N_LAYERS, "n_heads": 4, "max_seq_len": 64}
RESIDUAL = 0.02 / math.sqrt(2 * N_LAYERS)
# family: (extra config, {parameter: expected std}) - a normal weight and the residual outputs of each block kind
CASES = {
    "SmolTransformer": ({"bias": True, "norm": "layernorm"}, {
        "tok_emb.weight": 0.02, "pos_emb.weight": 0.02, "blocks.0.attn.wqkv.weight": 0.02,
        "blocks.3.ffn.fc.weight": 0.02,
        "blocks.0.attn.wo.weight": RESIDUAL, "blocks.3.ffn.proj.weight": RESIDUAL}),
    "StoryLlama": ({"n_kv_heads": 2}, {
        "tok_emb.weight": 0.02, "blocks.0.attn.wqkv.weight": 0.02, "blocks.1.ffn.w_up.weight": 0.02,
        "blocks.0.attn.wo.weight": RESIDUAL, "blocks.3.ffn.w_down.weight": RESIDUAL}),
    "SmolMixtral": ({"n_kv_heads": 2, "expert_hidden": 128}, {
        "tok_emb.weight": 0.02, "blocks.0.attn.wqkv.weight": 0.02, "blocks.0.moe.router.weight": 0.02,
        "blocks.2.moe.experts.w_gate_up": 0.02, "blocks.0.attn.wo.weight": RESIDUAL,
        "blocks.2.moe.experts.w_down": RESIDUAL}),
    "StoryKimi": ({"kv_lora_rank": 64, "expert_hidden": 128, "ffn_hidden": 512, "first_k_dense": 1}, {
        "tok_emb.weight": 0.02, "lm_head.weight": 0.02, "blocks.0.attn.wq.weight": 0.02,
        "blocks.1.attn.wkv_b.weight": 0.02, "blocks.1.ffn.router.weight": 0.02, "blocks.1.ffn.experts.w_gate_up": 0.02,
        "blocks.0.attn.wo.weight": RESIDUAL, "blocks.0.ffn.w_down.weight": RESIDUAL,
        "blocks.2.ffn.experts.w_down": RESIDUAL, "blocks.3.ffn.shared.w_down.weight": RESIDUAL}),
}


@pytest.mark.parametrize("family", sorted(CASES))
def test_init_distribution(family):
    fam = get_family(family)
    extra, expected = CASES[family]
    torch.manual_seed(0)
    model = fam.model_class()(fam.model_config(**{**SIZES, **extra}))
    params = dict(model.named_parameters())
    for name, std in expected.items():
        p = params[name]
        assert abs(p.mean().item()) < 0.1 * std, name
        assert p.std().item() == pytest.approx(std, rel=0.05), name
    for name, p in params.items():
        if name.endswith("bias"):
            assert torch.all(p == 0), name
        elif "norm" in name:
            assert torch.all(p == 1), name
