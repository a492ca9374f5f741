"""Mixtral's MoE layer (SmolMixtral/model.py): routing invariants, balancing and z losses, noise, statistics."""

import math

import pytest
import torch

from smolhub_hub.moe_kernels import load_balancing_loss, moe_routing_stats
from SmolMixtral.model import MoEFeedForward, TopKRouter, router_z_loss

E, K, DIM, HIDDEN = 8, 2, 32, 48


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_routing_invariants():
    router = TopKRouter(DIM, E, K)
    r = router(torch.randn(200, DIM))
    assert r.expert_ids.shape == r.weights.shape == (200, K)
    torch.testing.assert_close(r.weights.sum(-1), torch.ones(200))
    # exactly k distinct experts per token, the k most probable, heaviest first
    assert (r.expert_ids.sort(-1).values.diff(dim=-1) != 0).all()
    assert torch.equal(r.expert_ids, r.probs.topk(K, dim=-1).indices)
    assert (r.weights[:, 0] >= r.weights[:, 1]).all()
    chosen = r.probs.gather(-1, r.expert_ids)
    torch.testing.assert_close(r.weights, chosen / chosen.sum(-1, keepdim=True))


def test_z_loss():
    logits = torch.randn(10, E)
    assert router_z_loss(logits).item() == pytest.approx(torch.logsumexp(logits, -1).pow(2).mean().item())


def test_noisy_topk_only_in_training():
    moe = MoEFeedForward(DIM, HIDDEN, E, K, noisy_topk=True)
    x = torch.randn(4, 16, DIM)
    moe.eval()
    clean = moe.router(x.view(-1, DIM))
    again = moe.router(x.view(-1, DIM))
    assert torch.equal(clean.logits, again.logits)
    torch.testing.assert_close(clean.logits, x.view(-1, DIM) @ moe.router.weight.T)
    moe.train()
    noisy = moe.router(x.view(-1, DIM))
    assert not torch.equal(noisy.logits, clean.logits)
    y, aux = moe(x)
    (y.square().mean() + aux).backward()
    assert moe.router.w_noise.grad.abs().sum() > 0  # the noise scale is learned


def test_lm_gradient_reaches_the_router_and_aux_combines():
    moe = MoEFeedForward(DIM, HIDDEN, E, K, balance_coef=0.0, z_loss_coef=0.0)
    y, aux = moe(torch.randn(2, 8, DIM))
    assert aux is None
    y.square().mean().backward()
    assert moe.router.weight.grad.abs().sum() > 0  # mixing weights carry the LM gradient to the router
    moe = MoEFeedForward(DIM, HIDDEN, E, K, balance_coef=0.01, z_loss_coef=1e-3)
    x = torch.randn(2, 8, DIM)
    _, aux = moe(x)
    r = moe.last_routing
    expected = 0.01 * load_balancing_loss(r.probs, r.expert_ids) + 1e-3 * router_z_loss(r.logits)
    torch.testing.assert_close(aux, expected)


def test_routing_stats_aggregate_then_reset():
    moes = [MoEFeedForward(DIM, HIDDEN, E, K) for _ in range(2)]
    for _ in range(3):
        for m in moes:
            m(torch.randn(2, 8, DIM))
    assert isinstance(moes[0].stats.counts, torch.Tensor)  # kept on device until asked
    stats = moe_routing_stats(dict(enumerate(moes)))
    assert moes[0].stats.counts is None
    loads = [stats[f"moe/layer0/load_e{e}"] for e in range(E)]
    assert sum(loads) == pytest.approx(1.0)
    assert 0 < stats["moe/layer1/active_share"] <= 1
    assert 0 < stats["moe/layer0/entropy"] <= math.log(E) + 1e-6
    assert 0 < stats["moe/balance_loss"] <= E
    assert moe_routing_stats(dict(enumerate(moes))) == {}  # reset after reading


def test_routing_entropy_is_the_mean_entropy_of_the_router_distribution():
    moe = MoEFeedForward(DIM, HIDDEN, E, K)
    xs = [torch.randn(2, 8, DIM) * 30, torch.randn(1, 5, DIM)]  # one sharp batch, one near-uniform
    entropies = []
    for x in xs:
        moe(x)
        logp = moe.last_routing.logits.log_softmax(-1)
        entropies.append(-(logp.exp() * logp).sum(-1))
    expected = torch.cat(entropies).mean().item()
    assert moe_routing_stats({0: moe})["moe/layer0/entropy"] == pytest.approx(expected, rel=1e-5)


def test_bf16_autocast_routes_in_fp32():
    moe = MoEFeedForward(DIM, HIDDEN, E, K)
    x = torch.randn(2, 8, DIM)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, aux = moe(x)
    assert moe.last_routing.logits.dtype == torch.float32 and aux.dtype == torch.float32
    ref, _ = moe(x)
    torch.testing.assert_close(y, ref, rtol=0.05, atol=0.02)
