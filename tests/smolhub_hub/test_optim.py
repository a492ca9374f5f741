"""Muon for every family (the blocks' matrices; stacked experts batched), AdamW for the rest, and
--muon-adjust-lr as torch.optim.Muon defines it."""

import pytest
import torch

from smolhub_hub.config import TrainConfig
from smolhub_hub.registry import get_family
from smolhub_hub.training.optim import build_optimizers

MOE = {"SmolMixtral", "StoryMixtral", "StoryKimi"}


def _model(name: str):
    family = get_family(name)
    extra = {"bias": True, "norm": "layernorm"} if name == "SmolTransformer" else {}  # biases go to AdamW too
    torch.manual_seed(0)
    return family.model_class()(family.build("quick", vocab_size=64, dim=32, n_heads=2, **extra))


@pytest.mark.parametrize("name", ["StoryLlama", "SmolTransformer", "SmolMixtral", "StoryMixtral", "StoryKimi"])
def test_muon_takes_the_blocks_matrices_and_adamw_the_rest(name):
    model = _model(name)
    opts = build_optimizers(model, TrainConfig(optimizer="muon", lr=1e-3, muon_lr=0.05), "cpu")
    names = {id(p): n for n, p in model.named_parameters()}
    params = dict(model.named_parameters())
    owned = {type(o).__name__: [names[id(p)] for g in o.param_groups for p in g["params"]] for o in opts}
    assert list(owned) == (["Muon", "ExpertMuon", "AdamW"] if name in MOE else ["Muon", "AdamW"])
    assert sorted(n for ns in owned.values() for n in ns) == sorted(params)  # each parameter exactly once
    assert all(params[n].ndim == 2 and n.startswith("blocks.") and ".router." not in n for n in owned["Muon"])
    assert all(params[n].ndim == 3 and ".experts." in n for n in owned.get("ExpertMuon", []))
    rest = set(owned["AdamW"])
    assert "tok_emb.weight" in rest and "lm_head.weight" not in owned["Muon"]  # one group even when tied
    assert all(n in rest for n, p in params.items() if p.ndim == 1 or ".router." in n)  # norms, biases, routers
    assert {g["initial_lr"] for o in opts[:-1] for g in o.param_groups} == {0.05}
    assert {g["initial_lr"] for g in opts[-1].param_groups} == {1e-3}


@pytest.mark.parametrize("name", ["StoryLlama", "StoryKimi"])
def test_match_rms_adamw_steps_at_adamws_rate(name):
    """torch's adjust_lr_fn "match_rms_adamw" is lr * 0.2 * sqrt(max(A, B)) and Moonshot's base lr is AdamW's:
    each matrix's update then has an RMS of 0.2 * --lr, whatever its shape. (Before: --muon-lr was the base,
    so the update was --muon-lr / --lr times larger than the help and the README said.)"""
    model = _model(name)
    lr = 2e-3
    cfg = TrainConfig(optimizer="muon", lr=lr, muon_lr=0.05, muon_adjust_lr="match_rms_adamw")
    muon = build_optimizers(model, cfg, "cpu")[:-1]
    assert {g["lr"] for o in muon for g in o.param_groups} == {lr}
    before = {p: p.detach().clone() for o in muon for g in o.param_groups for p in g["params"]}
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    for o in muon:
        o.step()
    for p, w in before.items():
        per_matrix = (p.detach() - w).pow(2).mean(dim=(-2, -1)).sqrt()  # each expert is its own matrix
        assert torch.allclose(per_matrix, torch.full_like(per_matrix, 0.2 * lr), rtol=0.2), p.shape
