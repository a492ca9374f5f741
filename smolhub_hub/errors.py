"""User-facing errors: one clear line naming the fix, never a bare traceback."""

from __future__ import annotations

import argparse
import functools
import sys


class UserError(Exception):
    """A mistake the user can fix (bad flag, missing file, wrong checkpoint). Printed as one line."""

    exit_code = 2


class ArgumentParser(argparse.ArgumentParser):
    """A parser whose mistakes are a UserError: one line naming the flag, not the whole usage and then the error."""

    def error(self, message: str):
        raise UserError(f"{message} (see {self.prog} --help)")


def exit_on_user_error(fn):
    """Decorate a CLI entry point: a UserError prints `error: ...` on stderr and exits with code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper
