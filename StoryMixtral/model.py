"""StoryMixtral is SmolMixtral's architecture under its own family name (checkpoints say which)."""

from __future__ import annotations

from SmolMixtral.model import SmolMixtral
from StoryMixtral.config import StoryMixtralConfig


class StoryMixtral(SmolMixtral):
    config_class = StoryMixtralConfig
    family = "StoryMixtral"
