"""Shared pieces of the fault tests: tiny runs, a fault-injecting trainer driver, checkpoint readers."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from smolhub_hub.checkpoint import LATEST
from smolhub_hub.training.metrics import series
from tests.helpers import REPO, tiny_data

# Tiny enough for ~15 steps/s on one thread; every step logged and a checkpoint every 3 steps.
SMALL_MODEL = {"StoryLlama": ["--dim", "64", "--n-layers", "2"],
               "SmolMixtral": ["--dim", "64", "--n-layers", "2", "--n-heads", "4", "--n-kv-heads", "2",
                               "--n-experts", "4", "--expert-hidden", "64"],
              "StoryKimi": ["--dim", "64", "--n-layers", "2", "--n-heads", "4", "--kv-lora-rank", "32",
                            "--expert-hidden", "64"]}

# Runs a family's trainer with test-only faults from the environment, so production code carries no
# injection hooks: SMOLHUB_TEST_KILL_IN_SAVE=step_0000012 SIGKILLs the process right after that
# checkpoint's weights are written (its folder is half done); SMOLHUB_TEST_KILL_RANK=1 with
# SMOLHUB_TEST_KILL_STEP=5 SIGKILLs that torchrun rank at that step, on the first attempt only.
DRIVER = """
import os, signal, sys
from smolhub_hub import checkpoint as ck
from smolhub_hub.training import engine, main

def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)

kill_in_save = os.environ.get("SMOLHUB_TEST_KILL_IN_SAVE")
if kill_in_save:
    real_save_file = ck.save_file
    def save_file(tensors, path, *a, **k):
        real_save_file(tensors, path, *a, **k)
        if kill_in_save in str(path):
            die()
    ck.save_file = save_file

kill_rank = os.environ.get("SMOLHUB_TEST_KILL_RANK")
if kill_rank == os.environ.get("RANK") and os.environ.get("TORCHELASTIC_RESTART_COUNT") == "0":
    real_step = engine.Trainer.train_step
    def train_step(self, step):
        if step == int(os.environ["SMOLHUB_TEST_KILL_STEP"]):
            die()
        return real_step(self, step)
    engine.Trainer.train_step = train_step

family = sys.argv.pop(1)
main(__import__(f"{family}.config", fromlist=["FAMILY"]).FAMILY)
"""


def run_args(family: str, out_dir, steps: int = 30, extra=()) -> list[str]:
    return ["--preset", "quick", "--out-dir", str(out_dir), "--max-steps", str(steps), "--batch-size", "8",
            "--seq-len", "64", "--eval-interval", str(steps), "--eval-batches", "2", "--sample-interval", "0",
            "--log-interval", "1", "--save-interval", "3", "--keep-last", "2", "--warmup-steps", "5",
            *tiny_data(extra), *SMALL_MODEL[family], *extra]


def run_cli(fn, argv) -> tuple[int, str]:
    """Call a CLI entry point in-process: (exit code, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            fn(argv)
            code = 0
        except SystemExit as e:
            code = e.code or 0
    return code, err.getvalue()


def assert_clean(code: int, err: str):
    assert "Traceback" not in err, err
    assert code in (0, 2), (code, err)
    if code == 2:
        assert len([line for line in err.splitlines() if "error:" in line]) == 1, err


def child_env(**extra) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


@pytest.fixture(scope="session")
def driver(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("driver") / "faulty_trainer.py"
    path.write_text(DRIVER)
    return path


def start(cmd: list, **env) -> subprocess.Popen:
    return subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, env=child_env(**env))


def trainer_cmd(family: str, *args) -> list:
    return [sys.executable, REPO / family / "trainer.py", *args]


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()  # never leave a hung trainer behind
        raise
    return proc.returncode, out, err


def wait_for_step(run: Path, step: int, proc: subprocess.Popen, timeout: float = 120):
    """Block until metrics.csv shows `step` (the run is past it), or the process ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if logged_steps(run) and max(logged_steps(run)) >= step:
            return
        time.sleep(0.005)
    raise AssertionError(f"the run never reached step {step} (exit {proc.poll()})")


def logged_steps(run: Path) -> list[int]:
    try:
        return series(run / "metrics.csv")["train/loss"][0]
    except (FileNotFoundError, KeyError, TypeError, ValueError):  # not written yet, or a row half written
        return []


def losses(run: Path) -> list[float]:
    return series(run / "metrics.csv")["train/loss"][1]


def latest(run: Path) -> Path:
    return run / (run / LATEST).read_text().strip()


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(latest(run) / "model.safetensors")


def assert_same_weights(a: Path, b: Path):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


GOOD_RUN_STEPS = 3


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    """A finished StoryLlama run of GOOD_RUN_STEPS steps; tests copy it before damaging it."""
    from smolhub_hub.training import main
    from StoryLlama.config import FAMILY

    out = tmp_path_factory.mktemp("good") / "run"
    main(FAMILY, run_args("StoryLlama", out, GOOD_RUN_STEPS))
    return out


@pytest.fixture(scope="session", autouse=True)
def packed_data(_smolhub_cache):
    """Build the tiny corpus once, before any test starts two trainers that would both build it."""
    from smolhub_hub.config import parse_cli
    from smolhub_hub.data.packed import prepare_data
    from StoryLlama.config import FAMILY

    _, _, dcfg, _, _ = parse_cli(FAMILY, run_args("StoryLlama", "unused"))
    return prepare_data(dcfg)
