"""Muon on the hidden matrices only, AdamW for the rest, each with its own learning rate; QK-clip."""

import pytest
import torch

from smolhub_hub.config import TrainConfig
from smolhub_hub.training.optim import ExpertMuon, build_optimizers, orthogonalize
from StoryKimi.model import StoryKimi
from tests.StoryKimi.conftest import tiny_config


def _groups(model, **train):
    opts = build_optimizers(model, TrainConfig(**{"optimizer": "muon", "lr": 1e-3, **train}), "cpu")
    by_name = {id(p): n for n, p in model.named_parameters()}
    return opts, {type(o).__name__: [by_name[id(p)] for g in o.param_groups for p in g["params"]] for o in opts}


def test_muon_only_on_hidden_matrices_and_each_param_once():
    torch.manual_seed(0)
    model = StoryKimi(tiny_config(q_lora_rank=24, tie_embeddings=True))
    opts, names = _groups(model, muon_lr=0.05)
    assert list(names) == ["Muon", "ExpertMuon", "AdamW"]
    everything = [n for ns in names.values() for n in ns]
    assert sorted(everything) == sorted(n for n, _ in model.named_parameters())  # each exactly once
    params = dict(model.named_parameters())
    for n in names["Muon"]:
        assert params[n].ndim == 2 and n.startswith("blocks.") and ".router." not in n
    assert all(params[n].ndim == 3 and ".experts." in n for n in names["ExpertMuon"])
    adamw = set(names["AdamW"])
    assert "tok_emb.weight" in adamw  # the tied embedding/head: one parameter, one group
    assert "blocks.1.ffn.router.weight" in adamw
    assert all(n in adamw for n in params if "norm" in n)
    # each optimizer carries its own base learning rate, so the schedule never mixes them up
    assert {g["initial_lr"] for o in opts[:2] for g in o.param_groups} == {0.05}
    assert {g["initial_lr"] for g in opts[2].param_groups} == {1e-3}


def test_schedule_scales_each_optimizer_from_its_own_base():
    """Reference bug: the schedule overwrote Muon's learning rate with AdamW's."""
    from smolhub_hub.training.schedule import lr_factor

    model = StoryKimi(tiny_config())
    opts, _ = _groups(model, muon_lr=0.02)
    f = lr_factor(50, 10, 100, 0.1)
    for o in opts:  # what the trainer does each step
        for g in o.param_groups:
            g["lr"] = g["initial_lr"] * f
    assert opts[0].param_groups[0]["lr"] == pytest.approx(0.02 * f)
    assert opts[-1].param_groups[0]["lr"] == pytest.approx(1e-3 * f)


def test_adamw_option_is_one_adamw():
    model = StoryKimi(tiny_config())
    opts, names = _groups(model, optimizer="adamw")
    assert list(names) == ["AdamW"] and len(names["AdamW"]) == len(list(model.parameters()))


@pytest.mark.parametrize("adjust_lr_fn", ["original", "match_rms_adamw"])
def test_expert_muon_is_torch_muon_per_expert(adjust_lr_fn):
    torch.manual_seed(0)
    stack = torch.nn.Parameter(torch.randn(3, 16, 40))  # (E, in, out)
    singles = [torch.nn.Parameter(stack[e].detach().T.clone()) for e in range(3)]  # (out, in), as nn.Linear
    kw = dict(lr=0.02, weight_decay=0.1, momentum=0.95, adjust_lr_fn=adjust_lr_fn)
    ours, ref = ExpertMuon([stack], **kw), torch.optim.Muon(singles, **kw)
    for _ in range(3):
        g = torch.randn(3, 16, 40)
        stack.grad = g.clone()
        for e, p in enumerate(singles):
            p.grad = g[e].T.clone()
        ours.step()
        ref.step()
    for e, p in enumerate(singles):
        torch.testing.assert_close(stack[e].detach().T, p.detach(), atol=1e-6, rtol=0)


def test_orthogonalize_flattens_the_spectrum():
    g = torch.randn(2, 32, 64)
    s = torch.linalg.svdvals(orthogonalize(g).float())
    assert s.min() > 0.5 and s.max() < 1.3


def test_qk_clip_caps_the_max_logit():
    torch.manual_seed(0)
    tau = 2.0
    model = StoryKimi(tiny_config(qk_clip_tau=tau, q_lora_rank=24, n_layers=1))  # later layers' inputs would move
    with torch.no_grad():
        for b in model.blocks:
            b.attn.wq_b.weight.mul_(40)
            b.attn.wkv_b.weight.mul_(40)
    idx = torch.randint(0, 97, (2, 16))
    model.train()
    model(idx, idx)
    before = torch.stack([b.attn.max_logit for b in model.blocks])
    assert (before > tau).any()
    model.on_optimizer_step()
    stats = model.routing_stats()
    assert stats["attn/qk_clip_heads"] == (before > tau).sum().item()  # logged when it fires
    model(idx, idx)
    after = torch.stack([b.attn.max_logit for b in model.blocks])
    # every logit of a clipped head (nope and RoPE parts alike) is scaled by tau / S: its max lands on tau
    torch.testing.assert_close(after, before.clamp(max=tau), rtol=1e-4, atol=0)
