"""StoryMixtral is SmolMixtral's code under its own config: its default size is the one its description gives."""

import torch

from SmolMixtral.config import MixtralConfig
from SmolMixtral.model import SmolMixtral
from StoryMixtral.config import FAMILY, StoryMixtralConfig
from StoryMixtral.model import StoryMixtral
from tests.helpers import REPO


def test_the_default_model_builds_on_the_meta_device_at_its_documented_size():
    """197.7M total / 77.4M active at the Llama-2 vocabulary (README's table, `smolhub list`): shapes alone."""
    with torch.device("meta"):
        model = StoryMixtral(StoryMixtralConfig())
    counts = model.param_counts()
    assert f"{counts['total'] / 1e6:.1f}M total / {counts['active'] / 1e6:.1f}M active" == "197.7M total / 77.4M active"
    assert "197.7M total / 77.4M active" in (REPO / "README.md").read_text()
    assert model.blocks[0].attn.wqkv.weight.device.type == "meta"


def test_story_mixtral_is_the_same_code():
    assert issubclass(StoryMixtral, SmolMixtral) and StoryMixtral.forward is SmolMixtral.forward
    assert issubclass(StoryMixtralConfig, MixtralConfig)
    assert FAMILY.model_class() is StoryMixtral and FAMILY.name == "StoryMixtral"
