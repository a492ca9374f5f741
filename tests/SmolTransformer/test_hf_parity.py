"""SmolTransformer against an implementation nobody here wrote: transformers' GPT2LMHeadModel.

Both directions go through a folder saved to tmp_path and reloaded with AutoModelForCausalLM, so the
exported model is what a user of transformers would load. Biases and norm parameters are randomised
(GPT-2 initialises them to 0 / 1, which would hide a wrong mapping).
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"

from smolhub_hub.errors import UserError  # noqa: E402
from smolhub_hub.generation import SamplingConfig, generate  # noqa: E402
from SmolTransformer.config import FAMILY  # noqa: E402
from SmolTransformer.model import SmolTransformer  # noqa: E402
from tests.helpers import randomise_norms_and_biases  # noqa: E402

gpt2 = FAMILY.converter_module()
VOCAB, CTX, NEW = 101, 48, 16


def tiny(**kw):
    cfg = FAMILY.build("gpt2", vocab_size=VOCAB, dim=64, n_layers=2, n_heads=4, max_seq_len=CTX).replace(**kw)
    torch.manual_seed(0)
    return randomise_norms_and_biases(SmolTransformer(cfg)).eval()


def save_and_reload(hf, path):
    from transformers import AutoModelForCausalLM

    hf.save_pretrained(path)
    return AutoModelForCausalLM.from_pretrained(path).float().eval()


def hf_greedy(hf, idx, n):
    out = hf.generate(idx, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
    return out[:, idx.shape[1]:]


def assert_same_function(ours, hf):
    torch.manual_seed(1)
    idx = torch.randint(0, VOCAB, (2, CTX))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx).logits, hf(idx).logits, atol=1e-4, rtol=0)
    prompt = idx[:, :8]
    mine = generate(ours, prompt, SamplingConfig(max_new_tokens=NEW, greedy=True))[:, 8:]
    assert torch.equal(mine, hf_greedy(hf, prompt, NEW))


@pytest.mark.parametrize("kw", [{}, {"bias": False}, {"gelu_approximate": "none"}, {"tie_embeddings": False},
                                {"ffn_hidden": 96}], ids=["gpt2", "no-bias", "exact-gelu", "untied", "ffn96"])
def test_export_to_gpt2(tmp_path, kw):
    ours = tiny(**kw)
    hf = save_and_reload(gpt2.to_hf(ours), tmp_path)
    assert type(hf).__name__ == "GPT2LMHeadModel"
    assert_same_function(ours, hf)


@pytest.fixture
def random_hf_gpt2(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=CTX, n_embd=64, n_layer=3, n_head=4, bos_token_id=None,
                     eos_token_id=None)
    return save_and_reload(randomise_norms_and_biases(GPT2LMHeadModel(cfg)), tmp_path)


def test_import_from_gpt2(random_hf_gpt2, tmp_path):
    ours = gpt2.from_hf(random_hf_gpt2)
    assert ours.config.norm == "layernorm" and ours.config.bias and ours.config.max_seq_len == CTX
    assert ours.lm_head.weight is ours.tok_emb.weight
    assert_same_function(ours, random_hf_gpt2)
    # ... and back again: the round trip is the identity.
    assert_same_function(ours, save_and_reload(gpt2.to_hf(ours), tmp_path / "again"))


def test_import_keeps_overrides(random_hf_gpt2):
    assert gpt2.from_hf(random_hf_gpt2, dropout=0.1).config.dropout == 0.1


def test_rmsnorm_refuses_to_export():
    with pytest.raises(UserError, match="layernorm"):
        gpt2.to_hf(tiny(norm="rmsnorm"))


def test_unsupported_gpt2_variant_is_refused(random_hf_gpt2):
    random_hf_gpt2.config.scale_attn_by_inverse_layer_idx = True
    with pytest.raises(UserError, match="scale_attn_by_inverse_layer_idx"):
        gpt2.from_hf(random_hf_gpt2)
