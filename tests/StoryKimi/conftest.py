import pytest
import torch

from StoryKimi.config import StoryKimiConfig
from StoryKimi.model import StoryKimi
from tests.helpers import randomise_norms_and_biases


def tiny_config(**kw) -> StoryKimiConfig:
    base = dict(vocab_size=97, dim=64, n_layers=3, n_heads=4, kv_lora_rank=32, qk_nope_head_dim=16,
                qk_rope_head_dim=8, v_head_dim=12, n_experts=8, top_k=2, expert_hidden=32, ffn_hidden=96,
                first_k_dense=1, max_seq_len=64)
    return StoryKimiConfig(**{**base, **kw})


def perturb(model):
    """Non-trivial norm weights and expert biases, so that a mis-mapped one cannot hide."""
    randomise_norms_and_biases(model)
    with torch.no_grad():
        for m in model.moe_layers().values():
            m.router.expert_bias.normal_(0.0, 0.05)
    return model


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return perturb(StoryKimi(tiny_config())).eval()


@pytest.fixture(scope="session")
def kimi_run(tmp_path_factory):
    """A tiny StoryKimi trained for a few steps through the real trainer CLI."""
    from tests.helpers import run_cli, tiny_run_args

    out = tmp_path_factory.mktemp("kimi") / "run"
    run_cli("StoryKimi/trainer.py", *tiny_run_args(out, steps=6, extra=["--dim", "64", "--n-layers", "2",
                                                                         "--expert-hidden", "64"]), check=True)
    return out
