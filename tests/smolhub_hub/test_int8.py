"""SmolHub's int8 layer (torch's `_weight_int8pack_mm`, bf16 activations): close to fp32, and decoding with the
KV cache gives what the full forward pass gives."""

import pytest
import torch
import torch.nn as nn

from smolhub_hub.generation import SamplingConfig, generate
from smolhub_hub.quantize import quantize_model
from smolhub_hub.quantized_folder import Int8Linear
from StoryLlama.config import FAMILY


@pytest.mark.parametrize("in_features", [64, 24])  # the kernel's widths (multiples of 16), and the fallback
@pytest.mark.parametrize("bias", [False, True])
def test_int8_linear_follows_fp32(in_features, bias):
    torch.manual_seed(0)
    linear = nn.Linear(in_features, 40, bias=bias)
    q = Int8Linear.from_linear(linear)
    assert q.weight.dtype == torch.int8 and q.scales.shape == (40,)
    x = torch.randn(2, 5, in_features)
    ref = linear(x).detach()
    out = q(x)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert (out - ref).abs().max() < 0.02 * ref.abs().max()


def test_int8_model_logits_and_cached_decoding():
    torch.manual_seed(0)
    model = FAMILY.model_class()(FAMILY.build("quick", vocab_size=256, dim=64, n_heads=4, n_kv_heads=2)).eval()
    x = torch.randint(0, 256, (2, 12))
    with torch.no_grad():
        ref = model(x).logits
        names = quantize_model(model)
        assert "lm_head" in names and isinstance(model.lm_head, Int8Linear)
        assert model.tok_emb.weight.dtype == torch.float32  # the embedding lookup stays fp32, untied from the head
        logits = model(x).logits
    assert (logits - ref).abs().max() < 0.05 * ref.abs().max()
    out = generate(model, x[:, :4], SamplingConfig(max_new_tokens=6, greedy=True))
    for i in range(6):  # each cached step picks what a full forward over the same prefix picks
        with torch.no_grad():
            full = model(out[:, :4 + i]).logits[:, -1].argmax(-1)
        assert torch.equal(full, out[:, 4 + i])
