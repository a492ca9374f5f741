"""Export to / import from transformers' DeepseekV3ForCausalLM: logits agree to 1e-4, greedy generations match."""

import pytest
import torch

from smolhub_hub.generation import SamplingConfig, generate
from StoryKimi.convert import from_hf, hf_config, to_hf
from StoryKimi.model import StoryKimi
from tests.helpers import randomise_norms_and_biases
from tests.StoryKimi.conftest import perturb, tiny_config

transformers = pytest.importorskip("transformers")


def _greedy_hf(hf, idx, n):
    return hf.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=n, do_sample=False,
                       eos_token_id=None, pad_token_id=0)


def _assert_same_function(ours, hf):
    idx = torch.randint(0, ours.config.vocab_size, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx).logits, hf(idx).logits, rtol=0, atol=1e-4)
    prompt = idx[:1, :6]
    greedy = SamplingConfig(max_new_tokens=24, greedy=True)
    assert torch.equal(generate(ours, prompt, greedy), _greedy_hf(hf, prompt, 24))


# DeepSeek's interleaved RoPE and the half-split one; query compression on and off; group-limited routing;
# DeepSeek-V3's routed scaling factor; tied and untied heads.
CASES = {
    "interleaved": dict(rope_interleave=True, cfg=dict()),
    "half-split+q_lora+groups": dict(rope_interleave=False, cfg=dict(q_lora_rank=24, n_group=4, topk_group=2)),
    "scaled+tied+2shared": dict(rope_interleave=True, cfg=dict(routed_scaling_factor=2.5, tie_embeddings=True,
                                                             n_shared_experts=2, first_k_dense=0)),
}


@pytest.mark.parametrize("case", CASES)
def test_to_hf_parity(case):
    torch.manual_seed(0)
    ours = perturb(StoryKimi(tiny_config(**CASES[case]["cfg"]))).eval()
    _assert_same_function(ours, to_hf(ours, rope_interleave=CASES[case]["rope_interleave"]))


def test_save_and_reload_with_auto_model(tiny_model, tmp_path):
    hf = to_hf(tiny_model)
    hf.save_pretrained(tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(reloaded).__name__ == "DeepseekV3ForCausalLM"
    assert reloaded.config.rope_interleave
    _assert_same_function(tiny_model, reloaded)
    # the balancing biases travel with the weights (they change which experts are picked)
    torch.testing.assert_close(reloaded.model.layers[1].mlp.gate.e_score_correction_bias,
                               tiny_model.blocks[1].ffn.router.expert_bias)


def test_from_hf_parity_of_a_transformers_initialised_model(tmp_path):
    torch.manual_seed(1)
    cfg = hf_config(tiny_config(q_lora_rank=24, rope_base=500.0, n_group=2, topk_group=1))
    hf = randomise_norms_and_biases(transformers.DeepseekV3ForCausalLM(cfg))
    with torch.no_grad():
        for layer in hf.model.layers[1:]:
            layer.mlp.gate.e_score_correction_bias.normal_(0, 0.05)
    hf.save_pretrained(tmp_path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ours = from_hf(hf)
    assert ours.config.rope_base == 500.0 and ours.config.q_lora_rank == 24 and ours.config.n_group == 2
    _assert_same_function(ours, hf)


def test_from_hf_refuses_what_it_cannot_represent():
    cfg = hf_config(tiny_config())
    cfg.rope_parameters = {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0,
                           "original_max_position_embeddings": 64}
    with pytest.raises(ValueError, match="rope_type yarn"):
        from_hf(transformers.DeepseekV3ForCausalLM(cfg))
