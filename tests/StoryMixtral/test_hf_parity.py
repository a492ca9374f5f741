"""StoryMixtral <-> transformers' MixtralForCausalLM through SmolMixtral's converter: the same function both ways."""

import torch

from SmolMixtral.convert import to_hf
from StoryMixtral.config import StoryMixtralConfig
from StoryMixtral.convert import from_hf
from StoryMixtral.model import StoryMixtral
from tests.helpers import randomise_norms_and_biases


def tiny_story_mixtral():
    torch.manual_seed(0)
    cfg = StoryMixtralConfig(vocab_size=97, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, n_experts=4, top_k=2,
                             expert_hidden=48, max_seq_len=64)
    return randomise_norms_and_biases(StoryMixtral(cfg)).eval()


def test_round_trip_through_transformers_mixtral():
    ours = tiny_story_mixtral()
    hf = to_hf(ours)
    back = from_hf(hf)
    assert type(back) is StoryMixtral and isinstance(back.config, StoryMixtralConfig)
    idx = torch.randint(0, 97, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, ours(idx).logits, rtol=0, atol=1e-4)
        torch.testing.assert_close(back(idx).logits, ours(idx).logits, rtol=0, atol=1e-5)
