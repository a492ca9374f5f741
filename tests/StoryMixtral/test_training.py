"""StoryMixtral's quick preset trains briefly through its own trainer CLI and writes a StoryMixtral checkpoint."""

import json
import math

from smolhub_hub.checkpoint import LATEST
from smolhub_hub.training.metrics import series


def test_the_quick_preset_trains_and_saves_a_story_mixtral(story_run):
    losses = series(story_run / "metrics.csv")["train/loss"][1]
    assert losses and all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert any(k.startswith("train/moe/layer1/") for k in series(story_run / "metrics.csv"))
    config = json.loads((story_run / (story_run / LATEST).read_text().strip() / "config.json").read_text())
    assert config["family"] == "StoryMixtral" and config["step"] == 6
