import pytest
import torch

from SmolMixtral.config import MixtralConfig
from SmolMixtral.model import SmolMixtral
from tests.helpers import randomise_norms_and_biases, run_cli, tiny_run_args

# Trainer flags for a model that trains in seconds on one thread.
SMALL = ["--dim", "64", "--n-layers", "2", "--n-heads", "4", "--n-kv-heads", "2", "--expert-hidden", "64",
         "--seq-len", "64"]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: thread start-up costs more than it saves, and on shared cores it can cost 100x."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def tiny_config(**kw) -> MixtralConfig:
    base = dict(vocab_size=97, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, n_experts=4, top_k=2,
                expert_hidden=48, max_seq_len=64)
    return MixtralConfig(**{**base, **kw})


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return randomise_norms_and_biases(SmolMixtral(tiny_config())).eval()


@pytest.fixture(scope="session")
def story_run(tmp_path_factory):
    """A tiny StoryMixtral trained for a few steps through its (SmolMixtral-backed) trainer CLI."""
    out = tmp_path_factory.mktemp("storymixtral") / "run"
    run_cli("StoryMixtral/trainer.py", *tiny_run_args(out, steps=6, extra=SMALL), check=True)
    return out
