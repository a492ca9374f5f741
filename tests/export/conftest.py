"""Tiny checkpoints of every exportable architecture, written in seconds (random weights, no training)."""

from __future__ import annotations

import pytest
import torch

from smolhub_hub import checkpoint as ckpt_io
from smolhub_hub.data.builtin import generate_stories
from smolhub_hub.data.tokenizer import train_bpe
from smolhub_hub.registry import get_family
from tests.helpers import randomise_norms_and_biases

# family -> model overrides on top of its quick preset (2 layers; SmolTransformer as GPT-2 needs LayerNorm)
ARCHITECTURES = {
    "StoryLlama": {},
    "SmolTransformer": {"norm": "layernorm", "bias": True},
    "SmolMixtral": {},
    "StoryKimi": {},
}
PROMPT = "Once upon a time, Lily's dog ran 3 miles!"


@pytest.fixture(scope="session")
def bpe_tokenizer():
    return train_bpe(generate_stories(300), vocab_size=400)


def make_checkpoint(path, family: str, tokenizer, weight_scale: float = 4.0, **overrides):
    """A checkpoint as the trainer writes it. Weights are the model's init times `weight_scale`, so that
    attention is sharp and a wrong position encoding shows in the logits, as in a trained model; norms and
    biases are random, so that a swapped or dropped one shows too."""
    fam = get_family(family)
    mcfg, tcfg, dcfg = fam.resolve("quick")
    mcfg = mcfg.replace(vocab_size=len(tokenizer) + 48, n_layers=2, **{**ARCHITECTURES.get(family, {}), **overrides})
    torch.manual_seed(0)
    model = randomise_norms_and_biases(fam.model_class()(mcfg))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(weight_scale)
    cfg = {"family": family, "model": mcfg.to_dict(), "train": tcfg.to_dict(), "data": dcfg.to_dict(), "step": 120,
           "tokens_seen": 245_760, "val_loss": 3.25, "param_counts": model.param_counts()}
    return ckpt_io.save_checkpoint(path, 120, model, cfg, tokenizer)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory, bpe_tokenizer):
    base = tmp_path_factory.mktemp("export-ckpts")
    return {family: make_checkpoint(base / family, family, bpe_tokenizer) for family in ARCHITECTURES}
