"""Command-line flags of the MoE training stages, generated from their config dataclasses.

The flags come from smolhub_hub's generator, the one the trainers use (`smolhub_hub.config.add_fields`):
each field becomes `--field-name` with its help text, booleans get `--x / --no-x`, path fields expand `~`.
`--preset NAME` applies a named preset before the explicit flags. A field also declares its own checks
(positive, non-negative, a range, choices) and whether it is recorded as a setting of the run (flags that
only choose where and how a run is logged are not).
"""

from __future__ import annotations

import argparse
import dataclasses

from smol_experiments.flags import Parser
from smolhub_hub.config import add_fields, flag, opt
from smolhub_hub.errors import UserError


def field(default, help: str, *, positive: bool = False, non_negative: bool = False,
          within: tuple[float, float] | None = None, choices: tuple[str, ...] | None = None, path: bool = False,
          recorded: bool = True):
    """A config field (`smolhub_hub.config.opt`) with its value checks (`within` is a closed range), and two
    roles: `path` (expand `~`) and `recorded` (False: it changes how the run is logged or stored, not its result)."""
    checks = dict(positive=positive, non_negative=non_negative, within=within, choices=choices, path=path)
    return opt(default, help, recorded=recorded, **{k: v for k, v in checks.items() if v})


def build_parser(config_cls, prog: str, description: str, presets: dict) -> argparse.ArgumentParser:
    parser = Parser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(presets), help="named defaults, overridden by other flags")
    add_fields(parser, config_cls, config_cls())
    return parser


def _problem(f: dataclasses.Field, value) -> str | None:
    """What is wrong with a field's value, judged by its own declaration (None when nothing)."""
    meta = f.metadata
    if meta.get("positive") and value <= 0:
        return "must be positive"
    if meta.get("non_negative") and value < 0:
        return "must be 0 or more"
    if meta.get("within") and not meta["within"][0] <= value <= meta["within"][1]:
        return f"must be between {meta['within'][0]} and {meta['within'][1]}"
    if meta.get("choices") and value not in meta["choices"]:
        return f"must be one of {', '.join(meta['choices'])}"
    return None


def parse_config(config_cls, argv, prog: str, description: str, presets: dict):
    """The config: dataclass defaults, then the preset, then explicit flags; every value checked."""
    given = vars(build_parser(config_cls, prog, description, presets).parse_args(argv))
    preset = given.pop("preset")
    config = config_cls(**{**presets.get(preset, {}), **given})
    for f in dataclasses.fields(config_cls):
        problem = _problem(f, getattr(config, f.name))
        if problem:
            raise UserError(f"{flag(f.name)} {problem}, got {getattr(config, f.name)}.")
    return config


def recorded_settings(config, **inputs: str) -> dict:
    """What decides a run's result: the recorded fields and the fingerprints of its inputs."""
    recorded = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.metadata.get("recorded", True)}
    return {**recorded, **inputs}
