"""Command-line pieces both pipelines and every stage share: one-line flag errors, checked values, paths.

A bad flag value ends in one line `error: argument --x: ...` (exit 2 through `stages.stage_main`), not in
argparse's usage block or a traceback from deep inside a library. Paths behave as the shell would (`~`).
"""

from __future__ import annotations

import argparse
import os
import shlex

from smolhub_hub.errors import ArgumentParser as Parser  # noqa: F401  (errors are one UserError line)
from smolhub_hub.errors import UserError


def path(value: str) -> str:
    """A file or folder flag: `~` is the home folder, as in the shell (a Hub id is left as it is)."""
    return os.path.expanduser(value)


def _number(kind, check, requirement: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {requirement}, got {text!r}") from None
        if not check(value):
            raise argparse.ArgumentTypeError(f"expected {requirement}, got {text}")
        return value

    parse.__name__ = requirement
    return parse


positive_int = _number(int, lambda v: v > 0, "a positive integer")
non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: v > 0, "a positive number")
non_negative_float = _number(float, lambda v: v >= 0, "a number >= 0")


def split_stage_args(flag: str, text: str) -> list[str]:
    """A stage's extra flags (`--dpo-args "--beta 0.5"`) split as the shell would; a bad quote names the flag."""
    try:
        return shlex.split(text)
    except ValueError as e:
        raise UserError(f"{flag} {text!r}: {e} (close the quote, e.g. {flag} \"--beta 0.5\").") from None
