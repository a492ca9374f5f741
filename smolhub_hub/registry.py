"""The model families SmolHub knows, imported lazily by name."""

from __future__ import annotations

import importlib

from smolhub_hub.errors import UserError

FAMILIES = ["SmolTransformer", "StoryLlama", "SmolMixtral", "StoryMixtral", "StoryKimi"]


def available_families() -> list[str]:
    """Families whose folder is installed (a folder still being built is simply absent)."""
    out = []
    for name in FAMILIES:
        try:
            importlib.import_module(f"{name}.config")
            out.append(name)
        except ModuleNotFoundError:
            pass
    return out


def get_family(name: str):
    if name not in FAMILIES:
        raise UserError(f"unknown model family '{name}'; SmolHub has {', '.join(FAMILIES)}")
    try:
        return importlib.import_module(f"{name}.config").FAMILY
    except ModuleNotFoundError as e:
        raise UserError(f"model family {name} is not installed ({e}); run `pip install -e .` in the repository") from None
