"""The shared MoE kernels (smolhub_hub/moe_kernels.py): grouped experts == the reference loop == the one-token path,
in values and gradients, the grouped_mm op under torch.compile, and the Switch balance every MoE layer reports."""

import pytest
import torch

from smolhub_hub.moe_kernels import GroupedExperts, _grouped_mm_any_dtype, load_balancing_loss

E, K, DIM, HIDDEN = 8, 2, 32, 48


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


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
        ids = torch.rand(n, E).topk(K, dim=-1).indices  # k distinct experts per token
        w = torch.rand(n, K).softmax(-1)
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
    for a, b in zip(*results, strict=True):
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
        for a, b in zip(results[0], other, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_grouped_mm_compiles_in_fp32_with_the_same_values_and_gradients():
    """torch's compile-time rule for grouped_mm takes bf16 only; fp32 / fp16 compile through smolhub::grouped_mm.
    (aot_eager runs the same fake-tensor tracing and autograd as inductor, without a C++ compiler.)"""
    torch._dynamo.reset()
    experts = GroupedExperts(E, DIM, HIDDEN)
    x = torch.randn(32, DIM, requires_grad=True)
    ids, w = torch.rand(32, E).topk(K, dim=-1).indices, torch.rand(32, K).softmax(-1)

    def loss_and_grads(module):
        experts.zero_grad()
        x.grad = None
        loss = module(x, ids, w).square().mean()
        loss.backward()
        return loss.detach(), x.grad.clone(), experts.w_gate_up.grad.clone(), experts.w_down.grad.clone()

    eager = loss_and_grads(experts)
    compiled = loss_and_grads(torch.compile(experts, backend="aot_eager"))
    for a, b in zip(eager, compiled, strict=True):
        torch.testing.assert_close(a, b)


def test_the_any_dtype_grouped_mm_op_is_registered_consistently():
    x = torch.randn(12, DIM, requires_grad=True)
    w = torch.randn(E, DIM, HIDDEN, requires_grad=True)
    offsets = torch.tensor([2, 2, 5, 6, 9, 9, 12, 12], dtype=torch.int32)  # empty groups included
    torch.library.opcheck(_grouped_mm_any_dtype, (x, w, offsets))
    grad = torch.randn(12, HIDDEN)
    weight_grad = _grouped_mm_any_dtype(x.detach().t(), grad, offsets)  # the (K, S) x (S, N) form
    bounds = zip([0, *offsets[:-1].tolist()], offsets.tolist(), strict=True)
    reference = torch.stack([x.detach()[a:b].t() @ grad[a:b] for a, b in bounds])
    torch.testing.assert_close(weight_grad, reference)


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


def _recording_grouped_mm(monkeypatch):
    """Replace torch's grouped_mm as moe_kernels calls it with one that records each call's dtype and groups."""
    import smolhub_hub.moe_kernels as mk

    calls, real = [], mk._grouped_mm_op

    def record(x, w, offs):
        calls.append((x.dtype, w.dtype, torch.diff(offs, prepend=offs.new_zeros(1)).tolist()))
        return real(x, w, offs=offs)

    monkeypatch.setattr(mk, "_grouped_mm_op", record)
    return calls


@pytest.mark.parametrize("routing", ["random", "skewed"])
def test_cpu_bf16_training_pads_groups_to_few_sizes_and_matches_the_loop(monkeypatch, routing):
    """A CPU bf16 matmul builds a kernel per new row count (~25 ms, more than the matmul): training under bf16
    autocast pads each expert group to a multiple of CPU_BF16_GROUP_ROWS, with the loop's values and gradients."""
    from smolhub_hub.moe_kernels import CPU_BF16_GROUP_ROWS

    n = 37
    x = torch.randn(n, DIM, requires_grad=True)
    ids, w = (torch.rand(n, E).topk(K, dim=-1).indices, torch.rand(n, K).softmax(-1)) if routing == "random" \
        else _skewed_routing(n)
    experts = GroupedExperts(E, DIM, HIDDEN)
    calls = _recording_grouped_mm(monkeypatch)
    results = []
    for impl in ("grouped", "loop"):
        experts.impl = impl
        experts.zero_grad()
        x.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = experts(x, ids, w)
        out.float().pow(2).sum().backward()
        results.append((out.float(), x.grad.clone(), experts.w_gate_up.grad.clone(), experts.w_down.grad.clone()))
    assert calls and all(dt == torch.bfloat16 for dt, _, _ in calls)
    assert all(size % CPU_BF16_GROUP_ROWS == 0 for _, _, sizes in calls for size in sizes)
    for got, ref in zip(*results, strict=True):
        torch.testing.assert_close(got, ref, rtol=3e-2, atol=3e-2)


def test_generation_under_autocast_keeps_the_experts_in_the_weights_dtype(monkeypatch):
    """Without gradients, the stacked expert weights are not cast on every call (a cast reads them and writes
    them again, more than the matmul reads): both paths compute in fp32 and equal the fp32 result."""
    experts = GroupedExperts(E, DIM, HIDDEN)
    calls = _recording_grouped_mm(monkeypatch)
    with torch.no_grad():
        for n in (1, 8):  # the one-token path and the grouped one
            x = torch.randn(n, DIM)
            ids, w = torch.rand(n, E).topk(K, dim=-1).indices, torch.rand(n, K).softmax(-1)
            ref = experts(x, ids, w)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                got = experts(x, ids, w)
            assert got.dtype == torch.float32
            torch.testing.assert_close(got, ref)
    assert calls and all(dt == torch.float32 for dt, _, _ in calls)
