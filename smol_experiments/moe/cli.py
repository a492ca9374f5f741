"""Command-line flags of the MoE training stages, generated from their config dataclasses.

The flags come from smolhub_hub's generator, the one the trainers use (`smolhub_hub.config.add_fields`):
each field becomes `--field-name` with its help text, booleans get `--x / --no-x`, path fields expand `~`.
`--preset NAME` applies a named preset before the explicit flags. The fields are declared with
`smolhub_hub.config.opt`, like the trainers' own: a number's range (`min=`, `above=`, ...; checked by
`check_ranges`), choices, and `recorded=False` for a setting that only chooses where and how a run is logged
(it is not part of what decides the run's result).
"""

from __future__ import annotations

import argparse
import dataclasses

from smol_experiments.flags import Parser
from smolhub_hub.config import add_fields, check_ranges


def build_parser(config_cls, prog: str, description: str, presets: dict) -> argparse.ArgumentParser:
    parser = Parser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(presets), help="named defaults, overridden by other flags")
    add_fields(parser, config_cls, config_cls())
    return parser


def parse_config(config_cls, argv, prog: str, description: str, presets: dict):
    """The config: dataclass defaults, then the preset, then explicit flags; every number inside its declared range."""
    given = vars(build_parser(config_cls, prog, description, presets).parse_args(argv))
    preset = given.pop("preset")
    config = config_cls(**{**presets.get(preset, {}), **given})
    check_ranges(config)
    return config


def recorded_settings(config, **inputs: str) -> dict:
    """What decides a run's result: the recorded fields and the fingerprints of its inputs."""
    recorded = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.metadata.get("recorded", True)}
    return {**recorded, **inputs}
