"""Conversion between SmolHub checkpoints and Hugging Face transformers models.

One module per transformers architecture; each exposes `to_hf(model) -> PreTrainedModel` and
`from_hf(hf_model) -> SmolHub model`. Conversion is kept out of the model code (torchtitan style).
"""

from __future__ import annotations

import importlib

from smolhub_hub.errors import UserError

CONVERTERS = {
    "StoryLlama": "smolhub_hub.export.llama",
    "SmolTransformer": "smolhub_hub.export.gpt2",
    "SmolMixtral": "smolhub_hub.export.mixtral",
    "StoryMixtral": "smolhub_hub.export.mixtral",
    "StoryKimi": "smolhub_hub.export.deepseek_v3",
}


def converter_for(family: str):
    if family not in CONVERTERS:
        raise UserError(f"no transformers export for model family '{family}'")
    try:
        return importlib.import_module(CONVERTERS[family])
    except ModuleNotFoundError as e:
        raise UserError(f"the {family} exporter is not available ({e})") from None
