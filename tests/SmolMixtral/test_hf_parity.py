"""Export to / import from transformers' MixtralForCausalLM: logits and greedy generations agree."""

import pytest
import torch

from smolhub_hub.generation import SamplingConfig, generate
from SmolMixtral.convert import from_hf, to_hf
from SmolMixtral.model import SmolMixtral
from tests.helpers import randomise_norms_and_biases
from tests.SmolMixtral.conftest import tiny_config

transformers = pytest.importorskip("transformers")


def _greedy_hf(hf, idx, n):
    return hf.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=n, do_sample=False,
                       eos_token_id=None, pad_token_id=0)


def _assert_same_function(ours, hf):
    idx = torch.randint(0, ours.config.vocab_size, (2, 40))  # > 19 tokens: the reference's RoPE aliased
    with torch.no_grad():
        torch.testing.assert_close(ours(idx).logits, hf(idx).logits, rtol=0, atol=1e-4)
    prompt = idx[:1, :6]
    ours_out = generate(ours, prompt, SamplingConfig(max_new_tokens=24, greedy=True))
    assert torch.equal(ours_out, _greedy_hf(hf, prompt, 24))


def test_to_hf_parity_and_reload(tiny_model, tmp_path):
    hf = to_hf(tiny_model)
    _assert_same_function(tiny_model, hf)
    hf.save_pretrained(tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(reloaded).__name__ == "MixtralForCausalLM"
    _assert_same_function(tiny_model, reloaded)


def test_from_hf_parity_of_a_transformers_initialised_mixtral(tmp_path):
    torch.manual_seed(1)
    from SmolMixtral.convert import hf_config

    cfg = hf_config(tiny_config(tie_embeddings=False, rope_base=500.0))
    randomise_norms_and_biases(transformers.MixtralForCausalLM(cfg)).save_pretrained(tmp_path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ours = from_hf(hf)
    assert not ours.config.tie_embeddings and ours.config.rope_base == 500.0
    _assert_same_function(ours, hf)


@pytest.mark.parametrize("n_layers, router", [(1, "random"), (3, "uniform")])
def test_the_exported_model_computes_our_balance_loss(n_layers, router):
    """Reference bug: the exported router_aux_loss_coef was n_layers times too small. SmolHub sums per-layer
    losses, transformers pools the layers (see hf_aux_loss_coef): they are the same function, and must give the
    same value, for one layer and for layers that route alike (here: uniform router probabilities)."""
    torch.manual_seed(0)
    ours = randomise_norms_and_biases(SmolMixtral(tiny_config(n_layers=n_layers, noisy_topk=False,
                                                              balance_coef=0.02))).eval()
    if router == "uniform":
        with torch.no_grad():
            for m in ours.moe_layers().values():
                m.router.weight.zero_()
    idx = torch.randint(0, 97, (2, 24))
    targets = torch.cat([idx[:, 1:], torch.full((2, 1), -100)], 1)  # transformers shifts its labels itself
    with torch.no_grad():
        mine = ours(idx, targets)
        hf = to_hf(ours)
        theirs = hf(idx, labels=idx, output_router_logits=True)
    torch.testing.assert_close(theirs.aux_loss * hf.config.router_aux_loss_coef, mine.aux_loss)
    torch.testing.assert_close(theirs.loss, mine.loss)
    assert from_hf(hf).config.balance_coef == pytest.approx(0.02)
