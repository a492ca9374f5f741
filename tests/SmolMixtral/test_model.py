"""SmolMixtral's model: losses, cache, sizes, and the reference project's bugs."""

import torch

from smolhub_hub.generation import SamplingConfig, generate
from SmolMixtral.config import MixtralConfig
from SmolMixtral.model import SmolMixtral
from tests.helpers import assert_loop_experts_match_grouped_under_bf16
from tests.SmolMixtral.conftest import tiny_config


def _count(model_cls, cfg):
    with torch.device("meta"):
        return model_cls(cfg).param_counts()


def test_default_sizes():
    small = _count(SmolMixtral, MixtralConfig())
    assert 120e6 < small["total"] < 128e6 and 45e6 < small["active"] < 50e6


def test_one_attention_per_layer():
    """The reference built 8 full attentions per layer and concatenated them."""
    c = tiny_config()
    attn = sum(p.numel() for p in SmolMixtral(c).blocks[0].attn.parameters())
    assert attn == c.dim * c.dim * 2 + c.dim * c.n_kv_heads * c.head_dim * 2


def test_loss_includes_scaled_balance_loss_and_router_learns(tiny_model):
    tiny_model.train()
    idx = torch.randint(0, 97, (2, 16))
    out = tiny_model(idx, targets=idx)
    torch.testing.assert_close(out.loss, out.lm_loss + out.aux_loss)
    assert 0.01 * 0.9 < out.aux_loss.item() / tiny_model.config.n_layers < 0.01 * tiny_model.config.n_experts
    out.loss.backward()
    assert all(b.moe.router.weight.grad.abs().sum() > 0 for b in tiny_model.blocks)


def test_grouped_and_loop_models_agree(tiny_model):
    idx = torch.randint(0, 97, (2, 24))
    a = tiny_model(idx, targets=idx)
    for m in tiny_model.moe_layers().values():
        m.experts.impl = "loop"
    b = tiny_model(idx, targets=idx)
    torch.testing.assert_close(a.logits, b.logits, rtol=1e-5, atol=1e-5)


def test_loop_experts_train_under_bf16_autocast_close_to_grouped():
    """Reference bug: the loop added bf16 expert outputs into an fp32 buffer (index_add_ dtype error)."""
    torch.manual_seed(0)
    model = SmolMixtral(tiny_config(n_layers=1, noisy_topk=False)).train()  # one layer: identical router inputs
    assert_loop_experts_match_grouped_under_bf16(model, [m.experts for m in model.moe_layers().values()])


def test_eval_is_deterministic_with_dropout_and_noise():
    torch.manual_seed(0)
    model = SmolMixtral(tiny_config(dropout=0.2, noisy_topk=True)).eval()
    idx = torch.randint(0, 97, (2, 16))
    assert torch.equal(model(idx).logits, model(idx).logits)


def test_kv_cache_generation_matches_full_recompute(tiny_model):
    """Positions past 19 tokens included: the reference's RoPE aliased there."""
    idx = torch.randint(0, 97, (1, 8))
    out = generate(tiny_model, idx, SamplingConfig(max_new_tokens=30, greedy=True))
    seq = idx
    for _ in range(30):
        seq = torch.cat([seq, tiny_model(seq).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, seq)


def test_routing_stats_and_last_routing(tiny_model):
    idx = torch.randint(0, 97, (2, 16))
    tiny_model(idx)
    stats = tiny_model.routing_stats()
    assert {"moe/layer0/load_e0", "moe/layer1/entropy", "moe/layer0/active_share", "moe/balance_loss"} <= set(stats)
    assert all(isinstance(v, float) for v in stats.values())
    assert [m.last_routing.expert_ids.shape for m in tiny_model.moe_layers().values()] == [(32, 2), (32, 2)]
