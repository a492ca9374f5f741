"""Tiny checkpoints of every exportable architecture, written in seconds (random weights, no training)."""

from __future__ import annotations

import pytest

from tests.helpers import tiny_checkpoint

# family -> model overrides on top of its quick preset (2 layers; SmolTransformer as GPT-2 needs LayerNorm)
ARCHITECTURES = {
    "StoryLlama": {},
    "SmolTransformer": {"norm": "layernorm", "bias": True},
    "SmolMixtral": {},
    "StoryKimi": {},
}
PROMPT = "Once upon a time, Lily's dog ran 3 miles!"


def make_checkpoint(path, family: str, tokenizer, **overrides):
    """`tests.helpers.tiny_checkpoint` with this folder's architecture per family (2 layers, GPT-2's LayerNorm)."""
    return tiny_checkpoint(path, family, tokenizer, **{"n_layers": 2, **ARCHITECTURES.get(family, {}), **overrides})


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory, bpe_tokenizer):
    base = tmp_path_factory.mktemp("export-ckpts")
    return {family: make_checkpoint(base / family, family, bpe_tokenizer) for family in ARCHITECTURES}
