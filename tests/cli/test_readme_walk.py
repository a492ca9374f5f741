"""The README's quick start, pasted line by line from the repository root, as a new user does.

The commands are read from README.md (not copied here), run one by one in a copy of the root (links to
its folders, so a run lands in the copy's runs/ and never in the repository's), with tiny training flags
added to the trainer. The demo is started and asked for its page, then stopped.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import urllib.request

import pytest

from smolhub_hub.demo import default_checkpoint
from StoryLlama.config import FAMILY
from tests.browser import demo_server
from tests.helpers import REPO, TINY_DATA

TINY_TRAINING = ["--max-steps", "10", "--batch-size", "8", "--eval-batches", "2", "--sample-interval", "0",
                 "--dim", "64", "--n-layers", "2", *TINY_DATA]
ALREADY_DONE = [["bash", "install.sh"], ["python", "-m", "pytest"]]  # the set-up the test suite itself runs in


def quick_start_lines() -> list[str]:
    """The lines of the ```bash blocks of README.md's "Quick start" section (its "Then:" block included)."""
    text = (REPO / "README.md").read_text()
    start = text.index("## Quick start")
    section = text[start:text.index("\n## ", start)]
    return [line for block in re.findall(r"```bash\n(.*?)```", section, re.S) for line in block.splitlines()
            if line.strip()]


def _commands(line: str) -> list[list[str]]:
    return [shlex.split(part, comments=True) for part in line.split("&&")]


def _as_test_command(argv: list[str]) -> list[str] | None:
    """What to run for one README command: None when the test environment has done it already."""
    if any(argv[:len(done)] == done for done in ALREADY_DONE):
        return None
    assert argv[0] != "cd", "a `cd` changes the folder of every later line: write paths from the root instead"
    if argv[0] == "smolhub":
        return [sys.executable, "-m", "smolhub_hub.cli", *argv[1:]]
    assert argv[0] == "python", f"unexpected command in the README: {argv}"
    if argv[1].endswith("trainer.py"):
        return [sys.executable, *argv[1:], *TINY_TRAINING]
    return [sys.executable, *argv[1:]]


@pytest.fixture
def root_copy(tmp_path):
    """The repository root as a user sees it, without its runs/ (links to everything else)."""
    for entry in REPO.iterdir():
        if entry.name not in ("runs", "exported", ".git"):
            (tmp_path / entry.name).symlink_to(entry)
    return tmp_path


def test_readme_quick_start_works_line_by_line_from_the_root(root_copy):
    lines = quick_start_lines()
    assert any("gradio/app.py" in line for line in lines) and any("inference.py" in line for line in lines)
    for line in lines:
        for argv in _commands(line):
            command = _as_test_command(argv)
            if command is None:
                continue
            if command[1].endswith("gradio/app.py"):  # a server: it must come up and serve its page
                with demo_server(command[1:], root_copy, root_copy / "demo.log") as url:
                    assert "StoryLlama demo" in urllib.request.urlopen(url + "config", timeout=30).read().decode()
                continue
            proc = subprocess.run(command, cwd=root_copy, capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, f"README line failed: {line}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    assert (root_copy / "runs" / "StoryLlama-quick" / "LATEST").exists()
    assert (root_copy / "exported" / "config.json").exists()


def test_demo_default_checkpoint_is_found_from_the_root_and_from_gradio(tmp_path, monkeypatch):
    in_repo = REPO / "runs" / "StoryLlama-quick"
    monkeypatch.chdir(REPO / "StoryLlama" / "gradio")
    assert default_checkpoint(FAMILY) == in_repo
    monkeypatch.chdir(REPO)
    assert default_checkpoint(FAMILY).resolve() == in_repo
    (tmp_path / "runs" / "StoryLlama-quick").mkdir(parents=True)  # trained from another folder: that run
    monkeypatch.chdir(tmp_path)
    assert default_checkpoint(FAMILY) == tmp_path.joinpath("runs", "StoryLlama-quick").relative_to(tmp_path)
