"""`--help` of every entry point a user can run: exit 0, and every flag listed with a help text.

Entry points are discovered, not listed: every model folder's trainer.py / inference.py / gradio/app.py,
every `smolhub` subcommand, and every smol_experiments module with a `main`. They run in-process (the
parsers they build are captured as they parse) and one of each kind also as a real subprocess.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import io
import runpy
import subprocess
import sys

import pytest

from smolhub_hub import cli
from smolhub_hub.registry import family_names
from tests.helpers import REPO

FOLDER_SCRIPTS = ["trainer.py", "inference.py", "gradio/app.py"]


def _scripts() -> list[str]:
    """The scripts of every model folder (a folder with a trainer.py)."""
    folders = sorted(p.parent.name for p in REPO.glob("*/trainer.py"))
    assert set(family_names()) <= set(folders)
    return [f"{folder}/{script}" for folder in folders for script in FOLDER_SCRIPTS]


def _experiment_modules() -> list[str]:
    """smol_experiments modules that define a top-level `main` (found by parsing, not importing)."""
    out = []
    for path in sorted((REPO / "smol_experiments").glob("*/*.py")):
        tree = ast.parse(path.read_text())
        if any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body):
            out.append(".".join(path.relative_to(REPO).with_suffix("").parts))
    assert {"smol_experiments.alignment.run_pipeline", "smol_experiments.moe.run_pipeline"} <= set(out)
    return out


def _subcommands() -> list[str]:
    (sub,) = [a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(sub.choices)


def _run_help(monkeypatch, call) -> tuple[str, list[argparse.ArgumentParser]]:
    """Call `call()` (which parses --help) and return its output and every parser that parsed."""
    parsers = []
    real = argparse.ArgumentParser.parse_known_args

    def recording(self, *args, **kwargs):
        parsers.append(self)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", recording)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        call()
    assert exit_info.value.code in (0, None), out.getvalue()
    assert parsers, "no argparse parser ran"
    return out.getvalue(), parsers


def _undocumented(parser: argparse.ArgumentParser) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            missing += [f"subcommand {c.dest}" for c in action._choices_actions if not c.help]
        elif not isinstance(action, argparse._HelpAction) and (not action.help or action.help == argparse.SUPPRESS):
            missing.append("/".join(action.option_strings) or action.dest)
    return missing


def _check(output: str, parsers: list[argparse.ArgumentParser]):
    helped = parsers[-1]  # the innermost parser is the one that printed its help
    assert helped.format_usage().split()[1] in output
    assert _undocumented(helped) == []
    for action in helped._actions:
        for flag in action.option_strings:
            assert flag in output


@pytest.mark.parametrize("script", _scripts())
def test_folder_script_help(script, monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(REPO / script), "--help"])
    _check(*_run_help(monkeypatch, lambda: runpy.run_path(str(REPO / script), run_name="__main__")))


@pytest.mark.parametrize("command", [None, *_subcommands()])
def test_smolhub_help(command, monkeypatch):
    argv = ["--help"] if command is None else [command, "--help"]
    _check(*_run_help(monkeypatch, lambda: cli.main(argv)))


@pytest.mark.parametrize("module", _experiment_modules())
def test_experiment_help(module, monkeypatch):
    main = importlib.import_module(module).main
    _check(*_run_help(monkeypatch, lambda: main(["--help"])))


@pytest.mark.parametrize("argv", [["StoryLlama/trainer.py"], ["-m", "smolhub_hub.cli", "export"],
                                  ["-m", "smol_experiments.moe.run_pipeline"]])
def test_help_as_a_user_runs_it(argv):
    """The same from a shell, as the README says (a real interpreter, a real terminal width)."""
    proc = subprocess.run([sys.executable, *argv, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage:") and not proc.stderr
