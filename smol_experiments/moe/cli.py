"""Command-line flags generated from a config dataclass (one source of truth, no hand-kept flag lists).

Each field becomes `--field-name`; a field's `metadata["help"]` is its help text; booleans get
`--x / --no-x`. `--preset NAME` applies a named preset before the explicit flags. A field declares its own
checks (positive, non-negative, a range, choices), whether it is a path (`~` expands), and whether it is
recorded as a setting of the run (flags that only choose where and how a run is logged are not).
"""

from __future__ import annotations

import argparse
import dataclasses
import typing

from smolhub_hub.errors import UserError

from smol_experiments.flags import Parser
from smol_experiments.flags import path as expand_path


def field(default, help: str, *, positive: bool = False, non_negative: bool = False,
          within: tuple[float, float] | None = None, choices: tuple[str, ...] | None = None, path: bool = False,
          recorded: bool = True):
    """A dataclass field with help text, its value checks (`within` is a closed range), and two roles:
    `path` (expand `~`) and `recorded` (False: it changes how the run is logged or stored, not its result)."""
    return dataclasses.field(default=default, metadata=dict(help=help, positive=positive, non_negative=non_negative,
                                                            within=within, choices=choices, path=path,
                                                            recorded=recorded))


def build_parser(config_cls, prog: str, description: str, presets: dict) -> argparse.ArgumentParser:
    parser = Parser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(presets), help="named defaults, overridden by other flags")
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        flag, kind = "--" + f.name.replace("_", "-"), hints[f.name]
        help_text = f"{f.metadata.get('help', '')} (default: {f.default!r})"
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, type=expand_path if f.metadata.get("path") else kind, default=None,
                                choices=f.metadata.get("choices"), help=help_text, metavar=f.name.upper())
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
    args = build_parser(config_cls, prog, description, presets).parse_args(argv)
    values = dict(presets.get(args.preset, {})) if args.preset else {}
    values.update({k: v for k, v in vars(args).items() if k != "preset" and v is not None})
    config = config_cls(**values)
    for f in dataclasses.fields(config_cls):
        problem = _problem(f, getattr(config, f.name))
        if problem:
            raise UserError(f"--{f.name.replace('_', '-')} {problem}, got {getattr(config, f.name)}.")
    return config


def recorded_settings(config, **inputs: str) -> dict:
    """What decides a run's result: the recorded fields and the fingerprints of its inputs."""
    recorded = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.metadata.get("recorded", True)}
    return {**recorded, **inputs}
