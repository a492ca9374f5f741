"""Router losses and statistics count real tokens only; stage A trains nothing but the routers."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import math

import pytest
import torch

from smol_experiments.moe.data import pad_batch
from smol_experiments.moe.routing import RoutingStats, balance_loss, guidance_loss, router_parameters
from smol_experiments.moe.specialize import SpecializeConfig, Specializer
from smol_experiments.stages import StopRequests


@pytest.fixture(scope="module")
def moe(tiny_moe):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_moe).eval()
    with torch.no_grad():  # routers with some contrast, so the statistics are not trivially uniform
        for p in router_parameters(model):
            p.normal_(0, 1.0)
    return model


def _router_logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     output_router_logits=True).router_logits


def test_balance_loss_and_stats_ignore_padding(moe):
    docs = [[5, 9, 30, 41, 77, 12, 90, 3], [7, 8, 100], [200, 11, 13, 14, 15]]
    batch = pad_batch(docs, [0, 1, 2], pad_id=1)
    assert batch["attention_mask"].sum() == sum(map(len, docs))
    padded = balance_loss(_router_logits(moe, batch), batch["attention_mask"], top_k=2)

    # The same documents, one at a time (no padding at all), pooled over every real token.
    singles = [pad_batch([d], [i], pad_id=1) for i, d in enumerate(docs)]
    per_doc = [_router_logits(moe, b) for b in singles]
    pooled = tuple(torch.cat([logits[layer] for logits in per_doc]) for layer in range(len(per_doc[0])))
    unpadded = balance_loss(pooled, torch.ones(sum(map(len, docs))), top_k=2)
    assert torch.allclose(padded, unpadded, atol=1e-5)

    # Whatever sits in the padding (another token id) changes nothing; counting padding would.
    other = dict(batch, input_ids=batch["input_ids"].masked_fill(batch["attention_mask"] == 0, 300))
    assert torch.allclose(balance_loss(_router_logits(moe, other), other["attention_mask"], 2), padded, atol=1e-6)
    with_padding = balance_loss(_router_logits(moe, batch), torch.ones_like(batch["attention_mask"]), 2)
    assert not torch.allclose(with_padding, padded, atol=1e-4)

    stats_padded, stats_single = RoutingStats(4, 3, 2, 3), RoutingStats(4, 3, 2, 3)
    stats_padded.update(_router_logits(moe, batch), batch["attention_mask"], batch["domains"])
    for b, logits in zip(singles, per_doc, strict=True):
        stats_single.update(logits, b["attention_mask"], b["domains"])
    assert stats_padded.tokens == stats_single.tokens == sum(map(len, docs))
    assert torch.allclose(stats_padded.expert_load(), stats_single.expert_load(), atol=1e-6)
    assert torch.allclose(stats_padded.routing_accuracy(), stats_single.routing_accuracy(), atol=1e-6)
    assert math.isclose(stats_padded.balance_loss(), float(padded), rel_tol=1e-4)


def test_balance_loss_is_one_when_balanced_and_guidance_zero_on_target():
    tokens, experts = 6, 3
    uniform = (torch.zeros(tokens, experts),)
    assert math.isclose(float(balance_loss(uniform, torch.ones(tokens), top_k=2)), 1.0, rel_tol=1e-6)
    target_expert = torch.tensor([0, 1, 2, 0, 1, 2])
    target = torch.full((tokens, experts), 0.05).scatter_(1, target_expert[:, None], 0.9)
    on_target = (target.log(),)
    assert float(guidance_loss(on_target, torch.ones(tokens), target_expert, 0.9)) < 1e-6
    assert float(guidance_loss(uniform, torch.ones(tokens), target_expert, 0.9)) > 0.1


def test_stage_a_changes_only_router_weights(tiny_moe, tmp_path):
    cfg = SpecializeConfig(model=str(tiny_moe), output=str(tmp_path), data="synthetic", train_docs=12,
                           heldout_docs=3, max_len=48, docs_per_domain=2, stage_a_lr=1e-2, warmup_steps=1,
                           weight_decay=0.1, log_every=1, eval_every=100, precision="fp32")
    s = Specializer(cfg, state=None)
    routers = {n for n, m in s.model.named_modules() if type(m).__name__ == "MixtralTopKRouter"}
    assert len(router_parameters(s.model)) == len(routers) == s.model.config.num_hidden_layers
    before = {k: v.clone() for k, v in s.model.state_dict().items()}
    with s.open_logs():
        s.run_stage("A", first_step=0, steps=3, lr_peak=1e-2, stop=StopRequests())
    after = s.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {f"{r}.weight" for r in routers}
    assert all(p.requires_grad for p in s.model.parameters())  # stage B sees every weight again
