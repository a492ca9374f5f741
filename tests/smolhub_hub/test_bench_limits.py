"""bench/limits.py: the bytes a batch-1 decoded token reads, and each row's % of the machine's limits."""

import os
import sys

import pytest
import torch

from smolhub_hub.quantize import quantize_model
from StoryLlama.config import FAMILY

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
from limits import Limits, annotate, apply_limits, best_of, decode_bytes_per_token  # noqa: E402


def _model():
    torch.manual_seed(0)
    return FAMILY.model_class()(FAMILY.build("quick", vocab_size=256, dim=64, n_heads=4, n_kv_heads=2)).eval()


def test_decode_bytes_count_a_tied_head_once_and_int8_weights_as_stored():
    model = _model()
    params = sum(p.numel() for p in model.parameters())  # the tied matrix once: it is the head's matmul
    assert decode_bytes_per_token(model) == 4 * params
    quantize_model(model)
    linear = sum(m.weight.numel() for m in model.modules() if hasattr(m, "scales"))
    scales = sum(m.scales.numel() for m in model.modules() if hasattr(m, "scales"))
    norms = sum(p.numel() for n, p in model.named_parameters() if "norm" in n)
    assert decode_bytes_per_token(model) == linear + 2 * scales + 4 * norms  # the embedding is a lookup now


def test_decode_bytes_leave_out_the_experts_a_token_is_not_sent_to():
    """A batch-1 MoE token reads its top-k experts only (SmolMixtral's roofline read 178% while this counted all)."""
    from smolhub_hub.registry import get_family

    family = get_family("SmolMixtral")
    torch.manual_seed(0)
    model = family.model_class()(family.build("quick", vocab_size=256)).eval()
    counts = model.param_counts()
    experts = [m.experts for m in model.moe_layers().values()]
    per_expert = experts[0].params_per_expert()
    assert counts["total"] - counts["active"] == sum(m.n_experts - model.config.top_k for m in experts) * per_expert
    tied = model.lm_head.weight is model.tok_emb.weight
    lookup = 0 if tied else model.tok_emb.weight.numel()
    assert decode_bytes_per_token(model) == 4 * (counts["active"] - lookup)


def test_rows_get_their_percent_of_the_limits_of_their_dtype():
    model = _model()
    train = annotate({"benchmark": "train tok/s (B=2, T=32)", "smolhub": 100.0, "transformers": 50.0},
                     model, 64, 32, "bfloat16")
    decode = annotate({"benchmark": "greedy generate tok/s (B=1, prompt 4, 8 new)", "smolhub": 10.0,
                       "transformers": 5.0}, model, 0, 32, "float32")
    batched = annotate({"benchmark": "greedy generate tok/s (B=8, prompt 4, 8 new)", "smolhub": 10.0,
                        "transformers": 5.0}, model, 0, 32, "float32")
    limits = best_of(Limits(1e9, 3e9, 1e9, 1), Limits(2e9, 1e9, 4e9, 1))
    assert (limits.fp32_flops, limits.bf16_flops, limits.read_bytes_per_s) == (2e9, 3e9, 4e9)
    apply_limits([train, decode, batched], limits.matmul_peak, limits.read_bytes_per_s)
    assert train["MFU %"] == pytest.approx(100 * 100 * train["flops/token"] / 3e9)
    assert train["HF MFU %"] == pytest.approx(train["MFU %"] / 2) and train["step ms"] == pytest.approx(640)
    assert decode["roofline %"] == pytest.approx(100 * 10 * decode["weight bytes/token"] / 4e9)
    assert "roofline %" not in batched and "MFU %" not in decode
