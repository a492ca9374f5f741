"""smol_experiments and its tests pass the committed ruff configuration (pyproject's [tool.ruff])."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ruff_passes():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "smol_experiments", "tests/smol_experiments"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
