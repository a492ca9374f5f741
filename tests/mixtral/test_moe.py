"""The MoE layer (smolhub_hub/moe.py): routing invariants, grouped == loop, balancing losses, noise."""

import math

import pytest
import torch

from smolhub_hub.moe import (GroupedExperts, MoEFeedForward, TopKRouter, load_balancing_loss, moe_routing_stats,
                             router_z_loss)

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


def _skewed_routing(n):
    """Routing that leaves experts 5-7 empty and piles tokens on expert 0 (the hard case for sorting)."""
    ids = torch.stack([torch.zeros(n, dtype=torch.long), torch.randint(1, 5, (n,))], dim=1)
    ids[::7] = torch.tensor([3, 1])
    w = torch.rand(n, K).softmax(-1)
    return ids, w


@pytest.mark.parametrize("routing", ["random", "skewed"])
def test_grouped_equals_loop_values_and_gradients(routing):
    n = 64
    x = torch.randn(n, DIM, requires_grad=True)
    if routing == "random":
        r = TopKRouter(DIM, E, K)(torch.randn(n, DIM))
        ids, w = r.expert_ids, r.weights.detach()
    else:
        ids, w = _skewed_routing(n)
    w = w.clone().requires_grad_(True)
    experts = GroupedExperts(E, DIM, HIDDEN)
    grad_out = torch.randn(n, DIM)
    results = []
    for impl in ("grouped", "loop"):
        experts.zero_grad()
        x.grad = w.grad = None
        experts.impl = impl
        y = experts(x, ids, w)
        y.backward(grad_out)
        results.append((y.detach(), x.grad, w.grad, experts.w_gate_up.grad.clone(), experts.w_down.grad.clone()))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # experts nobody was routed to get exactly zero gradient in both paths
    if routing == "skewed":
        assert experts.w_down.grad[5:].abs().sum() == 0


def test_single_token_paths_agree_in_values_and_gradients():
    """Batch-1 decoding on a CPU takes `forward_one_token`; it is the same function as the grouped path."""
    experts = GroupedExperts(E, DIM, HIDDEN)
    ids, w = torch.tensor([[6, 2]]), torch.tensor([[0.7, 0.3]])
    x = torch.randn(1, DIM, requires_grad=True)
    results = []
    for path in (experts.forward, experts.forward_one_token, experts.forward_grouped, experts.forward_loop):
        experts.zero_grad()
        x.grad = None
        y = path(x, ids, w)
        y.square().sum().backward()
        results.append((y.detach(), x.grad, experts.w_gate_up.grad.clone()))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_balance_loss_is_one_for_uniform_routing_and_e_for_collapse():
    n = 64
    uniform_probs = torch.full((n, E), 1.0 / E)
    even_ids = torch.arange(n * K).remainder(E).view(n, K)
    assert load_balancing_loss(uniform_probs, even_ids).item() == pytest.approx(1.0)
    collapsed_probs = torch.zeros(n, E)
    collapsed_probs[:, 0] = 1.0
    collapsed_ids = torch.zeros(n, 1, dtype=torch.long)
    assert load_balancing_loss(collapsed_probs, collapsed_ids).item() == pytest.approx(E)
    skewed_ids, _ = _skewed_routing(n)
    assert load_balancing_loss(uniform_probs, skewed_ids).item() == pytest.approx(1.0)  # P uniform: f has no say


def test_balance_loss_gradient_pushes_probability_off_the_overloaded_expert():
    logits = torch.zeros(32, E, requires_grad=True)
    ids = torch.zeros(32, K, dtype=torch.long)
    ids[:, 1] = 1
    load_balancing_loss(logits.softmax(-1), ids).backward()
    assert (logits.grad[:, 0] > 0).all() and (logits.grad[:, 2:] < 0).all()


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
    stats = moe_routing_stats(moes)
    assert moes[0].stats.counts is None
    loads = [stats[f"moe/layer0/load_e{e}"] for e in range(E)]
    assert sum(loads) == pytest.approx(1.0)
    assert 0 < stats["moe/layer1/active_share"] <= 1
    assert 0 < stats["moe/layer0/entropy"] <= math.log(E) + 1e-6
    assert 0 < stats["moe/balance_loss"] <= E
    assert moe_routing_stats(moes) == {}  # reset after reading


def test_routing_entropy_is_the_mean_entropy_of_the_router_distribution():
    moe = MoEFeedForward(DIM, HIDDEN, E, K)
    xs = [torch.randn(2, 8, DIM) * 30, torch.randn(1, 5, DIM)]  # one sharp batch, one near-uniform
    entropies = []
    for x in xs:
        moe(x)
        logp = moe.last_routing.logits.log_softmax(-1)
        entropies.append(-(logp.exp() * logp).sum(-1))
    expected = torch.cat(entropies).mean().item()
    assert moe_routing_stats([moe])["moe/layer0/entropy"] == pytest.approx(expected, rel=1e-5)


def test_bf16_autocast_routes_in_fp32():
    moe = MoEFeedForward(DIM, HIDDEN, E, K)
    x = torch.randn(2, 8, DIM)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, aux = moe(x)
    assert moe.last_routing.logits.dtype == torch.float32 and aux.dtype == torch.float32
    ref, _ = moe(x)
    torch.testing.assert_close(y, ref, rtol=0.05, atol=0.02)


def test_grouped_mm_compiles_in_fp32_with_the_same_values_and_gradients():
    """torch's compile-time rule for grouped_mm takes bf16 only; fp32 / fp16 compile through smolhub::grouped_mm.
    (aot_eager runs the same fake-tensor tracing and autograd as inductor, without a C++ compiler.)"""
    torch._dynamo.reset()
    moe = MoEFeedForward(DIM, HIDDEN, E, K)
    x = torch.randn(2, 16, DIM, requires_grad=True)

    def loss_and_grads(module):
        moe.zero_grad()
        x.grad = None
        y, aux = module(x)
        loss = y.square().mean() + aux
        loss.backward()
        return loss.detach(), x.grad.clone(), moe.experts.w_gate_up.grad.clone(), moe.experts.w_down.grad.clone()

    eager = loss_and_grads(moe)
    compiled = loss_and_grads(torch.compile(moe, backend="aot_eager"))
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(a, b)


def test_the_any_dtype_grouped_mm_op_is_registered_consistently():
    from smolhub_hub.moe import _grouped_mm_any_dtype

    x = torch.randn(12, DIM, requires_grad=True)
    w = torch.randn(E, DIM, HIDDEN, requires_grad=True)
    offsets = torch.tensor([2, 2, 5, 6, 9, 9, 12, 12], dtype=torch.int32)  # empty groups included
    torch.library.opcheck(_grouped_mm_any_dtype, (x, w, offsets))
    grad = torch.randn(12, HIDDEN)
    weight_grad = _grouped_mm_any_dtype(x.detach().t(), grad, offsets)  # the (K, S) x (S, N) form
    reference = torch.stack([x.detach()[a:b].t() @ grad[a:b] for a, b in zip([0, *offsets[:-1].tolist()], offsets.tolist())])
    torch.testing.assert_close(weight_grad, reference)
