"""Command-line flags generated from a config dataclass (one source of truth, no hand-kept flag lists).

Each field becomes `--field-name`; a field's `metadata["help"]` is its help text; booleans get
`--x / --no-x`. `--preset NAME` applies a named preset before the explicit flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing

from smolhub_hub.errors import UserError


def build_parser(config_cls, prog: str, description: str, presets: dict) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(presets), help="named defaults, overridden by other flags")
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        flag, kind = "--" + f.name.replace("_", "-"), hints[f.name]
        help_text = f"{f.metadata.get('help', '')} (default: {f.default!r})"
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, type=kind, default=None, help=help_text, metavar=f.name.upper())
    return parser


def parse_config(config_cls, argv, prog: str, description: str, presets: dict):
    """The config: dataclass defaults, then the preset, then explicit flags."""
    args = build_parser(config_cls, prog, description, presets).parse_args(argv)
    values = dict(presets.get(args.preset, {})) if args.preset else {}
    values.update({k: v for k, v in vars(args).items() if k != "preset" and v is not None})
    config = config_cls(**values)
    for f in dataclasses.fields(config_cls):  # positive counts are a common typo to catch early
        if f.metadata.get("positive") and getattr(config, f.name) <= 0:
            raise UserError(f"--{f.name.replace('_', '-')} must be positive, got {getattr(config, f.name)}.")
    return config


def field(default, help: str, positive: bool = False):
    """A dataclass field with help text (and an optional positivity check)."""
    return dataclasses.field(default=default, metadata={"help": help, "positive": positive})
