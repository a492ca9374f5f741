import pytest
import torch

from SmolMixtral.config import MixtralConfig
from SmolMixtral.model import SmolMixtral
from tests.helpers import randomise_norms_and_biases

# Trainer flags for a model that trains in seconds on one thread.
SMALL = ["--dim", "64", "--n-layers", "2", "--n-heads", "4", "--n-kv-heads", "2", "--expert-hidden", "64",
         "--seq-len", "64"]


def tiny_config(**kw) -> MixtralConfig:
    base = dict(vocab_size=97, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, n_experts=4, top_k=2,
                expert_hidden=48, max_seq_len=64)
    return MixtralConfig(**{**base, **kw})


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return randomise_norms_and_biases(SmolMixtral(tiny_config())).eval()
