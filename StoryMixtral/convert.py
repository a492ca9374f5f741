"""StoryMixtral <-> transformers `MixtralForCausalLM`: SmolMixtral's converter, building a StoryMixtral."""

from __future__ import annotations

from SmolMixtral import convert
from SmolMixtral.convert import hf_config, to_hf
from StoryMixtral.config import FAMILY

__all__ = ["from_hf", "hf_config", "to_hf"]


def from_hf(hf):
    """A StoryMixtral with the weights of a transformers Mixtral."""
    return convert.from_hf(hf, FAMILY)
