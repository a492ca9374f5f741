"""Every bench/ script imports (a rename elsewhere must not leave a benchmark broken until someone runs it)."""

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO

SCRIPTS = sorted(p.stem for p in (REPO / "bench").glob("*.py"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_bench_script_imports(name):
    proc = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=REPO / "bench", capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
