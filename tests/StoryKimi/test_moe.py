"""DeepSeek-V3 routing: the bias selects only, it moves once per optimizer step, and ranks agree."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from smolhub_hub.generation import SamplingConfig, generate
from StoryKimi.model import DeepSeekRouter, StoryKimi, sequence_balance_loss
from tests.helpers import assert_loop_experts_match_grouped_under_bf16
from tests.StoryKimi.conftest import tiny_config


def test_bias_changes_selection_but_never_the_weights():
    """Reference bug: the bias was added to the mixing weights too."""
    torch.manual_seed(0)
    c = tiny_config(routed_scaling_factor=2.5)
    router = DeepSeekRouter(c)
    x = torch.randn(50, c.dim)
    scores = torch.sigmoid(x @ router.weight.T)
    plain = router(x)
    with torch.no_grad():
        router.expert_bias[3] = 10.0  # expert 3 is now always chosen
    biased = router(x)
    assert (biased.expert_ids == 3).any(-1).all()
    assert not torch.equal(plain.expert_ids, biased.expert_ids)
    # mixing weights are the chosen experts' own sigmoid scores, normalised then scaled: no bias in them
    chosen = scores.gather(-1, biased.expert_ids)
    torch.testing.assert_close(biased.weights, 2.5 * chosen / chosen.sum(-1, keepdim=True))


def test_a_bias_that_keeps_the_selection_keeps_the_output():
    torch.manual_seed(0)
    model = StoryKimi(tiny_config()).eval()
    idx = torch.randint(0, 97, (2, 12))
    with torch.no_grad():
        before = model(idx).logits
        for m in model.moe_layers().values():
            m.router.expert_bias.add_(0.7)  # the same shift for every expert: same top-k
        torch.testing.assert_close(model(idx).logits, before, rtol=0, atol=0)


def test_group_limited_routing_stays_in_the_top_groups():
    torch.manual_seed(0)
    router = DeepSeekRouter(tiny_config(n_group=4, topk_group=1))
    r = router(torch.randn(40, 64))
    groups = r.expert_ids // 2  # 4 groups of 2 experts, one group allowed: both picks share it
    assert (groups[:, 0] == groups[:, 1]).all()


def test_sequence_balance_loss_is_one_when_uniform():
    E, _k, T = 4, 2, 6
    affinity = torch.full((1, T, E), 1.0 / E)
    ids = torch.tensor([[[0, 1], [2, 3]] * (T // 2)])
    assert sequence_balance_loss(affinity, ids).item() == pytest.approx(1.0)


def _train_forward(model, idx):
    model.train()
    out = model(idx, idx)
    out.loss.backward()


def test_load_counted_over_the_step_and_bias_moves_once_per_step():
    """Reference bug: the bias moved on every micro-batch and even while sampling."""
    torch.manual_seed(0)
    c = tiny_config(bias_update_rate=0.01)
    model = StoryKimi(c)
    biases = lambda: torch.stack([m.router.expert_bias.clone() for m in model.moe_layers().values()])  # noqa: E731
    start = biases()
    a, b = torch.randint(0, 97, (2, 2, 16))
    _train_forward(model, a)   # micro-batch 1
    _train_forward(model, b)   # micro-batch 2
    assert torch.equal(biases(), start), "the bias must not move inside a step"
    load = torch.stack([m.step_load for m in model.moe_layers().values()]).float()
    assert load.sum(-1).eq(2 * 2 * 16 * c.top_k).all()  # every token copy of both micro-batches
    model.eval()
    with torch.no_grad():
        model(a)  # eval forward
    generate(model, a[:1, :4], SamplingConfig(max_new_tokens=5, greedy=True))
    assert torch.equal(torch.stack([m.step_load for m in model.moe_layers().values()]).float(), load)
    model.on_optimizer_step()
    expected = start + 0.01 * torch.sign(load.mean(-1, keepdim=True) - load)
    torch.testing.assert_close(biases(), expected)
    assert all(m.step_load is None for m in model.moe_layers().values())
    model.on_optimizer_step()  # a step with no training forward leaves the bias alone
    torch.testing.assert_close(biases(), expected)


def test_bias_is_a_persistent_buffer():
    model = StoryKimi(tiny_config())
    keys = model.state_dict().keys()
    assert "blocks.1.ffn.router.expert_bias" in keys and "blocks.2.ffn.router.expert_bias" in keys
    assert all("expert_bias" not in n for n, _ in model.named_parameters())


def _rank_main(rank, world, port, batches, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = StoryKimi(tiny_config(bias_update_rate=0.01))
        _train_forward(model, batches[rank])
        model.on_optimizer_step()
        out[rank] = torch.stack([m.router.expert_bias for m in model.moe_layers().values()])
    finally:
        dist.destroy_process_group()


def test_bias_update_is_summed_across_ranks():
    """Reference bug: no synchronisation, so each rank drifted to its own biases."""
    torch.manual_seed(1)
    batches = torch.randint(0, 97, (2, 2, 16))
    out = mp.Manager().dict()
    port = 29500 + os.getpid() % 1000
    mp.spawn(_rank_main, args=(2, port, batches, out), nprocs=2)
    # one process that sees both ranks' batches at once computes the same update
    torch.manual_seed(0)
    model = StoryKimi(tiny_config(bias_update_rate=0.01))
    _train_forward(model, batches.reshape(4, 16))
    model.on_optimizer_step()
    single = torch.stack([m.router.expert_bias for m in model.moe_layers().values()])
    torch.testing.assert_close(out[0], out[1], rtol=0, atol=0)
    torch.testing.assert_close(out[0], single, rtol=0, atol=0)


def test_routing_stats_name_blocks():
    torch.manual_seed(0)
    model = StoryKimi(tiny_config())
    model(torch.randint(0, 97, (1, 8)))
    stats = model.routing_stats()
    assert "moe/layer1/load_e0" in stats and "moe/layer2/entropy" in stats
    assert not any(k.startswith("moe/layer0/") for k in stats)  # block 0 is dense
    assert sum(stats[f"moe/layer1/load_e{e}"] for e in range(8)) == pytest.approx(1.0)


def test_bf16_autocast_routes_in_fp32():
    """Reference bug: F.linear on fp32 inputs still ran in bf16 under autocast; with 64 experts / top-6 about
    7% of tokens chose other experts, and a 1e-3 bias step was below bf16's spacing near 0.5."""
    torch.manual_seed(0)
    router = DeepSeekRouter(tiny_config(n_experts=64, top_k=6))
    with torch.no_grad():
        router.expert_bias.copy_(1e-3 * torch.randn(64).sign())  # one bias step, either way, per expert
    x = torch.randn(512, router.weight.shape[1])
    ref = router(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        r = router(x)
    assert r.logits.dtype == r.weights.dtype == torch.float32
    assert torch.equal(r.expert_ids, ref.expert_ids)
    torch.testing.assert_close(r.weights, ref.weights)


def test_loop_experts_train_under_bf16_autocast_close_to_grouped():
    """Reference bug: the loop added bf16 expert outputs into an fp32 buffer (index_add_ dtype error)."""
    torch.manual_seed(0)
    model = StoryKimi(tiny_config(n_layers=2)).train()  # one MoE block, the last: identical router inputs
    assert_loop_experts_match_grouped_under_bf16(model, [m.experts for m in model.moe_layers().values()])


def test_a_skipped_step_drops_what_its_forwards_gathered():
    """The trainer calls on_step_skipped instead of on_optimizer_step after a non-finite step: nothing that step
    gathered (max attention logits, expert loads, routing statistics) may reach the next update or the metrics."""
    torch.manual_seed(0)
    model = StoryKimi(tiny_config(qk_clip_tau=100.0))
    _train_forward(model, torch.randint(0, 97, (2, 16)))
    assert all(b.attn.max_logit is not None for b in model.blocks)
    model.on_step_skipped()
    assert all(b.attn.max_logit is None for b in model.blocks)
    assert all(m.step_load is None and m.stats.counts is None for m in model.moe_layers().values())
    assert not any(k.startswith("moe/") for k in model.routing_stats())
