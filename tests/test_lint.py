"""The code passes ruff with the repository's configuration (`[tool.ruff]` in pyproject.toml)."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_ruff_passes():
    pytest.importorskip("ruff", reason="ruff is in requirements-dev.txt")
    cmd = [sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
