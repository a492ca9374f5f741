"""StoryMixtral: SmolMixtral's architecture at ~200M total parameters, tuned for stories.

The network is SmolMixtral's, read in SmolMixtral/model.py (Llama attention, a Mixtral MoE feed-forward): only the
config's defaults and presets differ (StoryMixtral/config.py). Its own class name keeps its checkpoints its own:
they say `"family": "StoryMixtral"` and load back as a StoryMixtral.
"""

from __future__ import annotations

from SmolMixtral.model import SmolMixtral
from StoryMixtral.config import StoryMixtralConfig


class StoryMixtral(SmolMixtral):
    """`StoryMixtral(StoryMixtralConfig(...))`: SmolMixtral's __init__ and forward."""

    config: StoryMixtralConfig
