"""SIGTERM, Ctrl-C (SIGINT) and SIGHUP save and exit 0 at once (a SIGHUP that nohup ignores stays ignored);
while a trainer runs, a second one on its folder is refused; a torchrun rank killed mid-run is restarted
(--max-restarts) and the job continues from the last checkpoint with every rank holding the same parameters."""

import signal
import sys
import time

import pytest

from smolhub_hub import checkpoint as ck
from smolhub_hub.training import main
from StoryLlama.config import FAMILY
from tests.reliability.conftest import (
    assert_clean,
    finish,
    latest,
    logged_steps,
    run_args,
    run_cli,
    start,
    trainer_cmd,
    wait_for_step,
)

STOPS = {  # case: (launcher, signals sent in turn, the one that stops the run)
    "SIGTERM": ([], [signal.SIGTERM], signal.SIGTERM),
    "SIGHUP": ([], [signal.SIGHUP], signal.SIGHUP),
    "SIGHUP under nohup, then Ctrl-C": (["nohup"], [signal.SIGHUP, signal.SIGINT], signal.SIGINT),
}


@pytest.mark.parametrize("case", STOPS)
def test_a_stop_signal_saves_a_checkpoint_and_exits_0_within_seconds(tmp_path, case):
    """Reference bugs: Ctrl-C and SIGHUP lost up to a save interval of steps; two trainers on one folder both ran."""
    launcher, signals, stopper = STOPS[case]
    run = tmp_path / "run"
    proc = start([*launcher, *trainer_cmd("StoryLlama", *run_args("StoryLlama", run, 400))])
    wait_for_step(run, 4, proc)
    code, err = run_cli(lambda a: main(FAMILY, a), run_args("StoryLlama", run, 400))
    assert_clean(code, err)
    assert code == 2 and f"{run} is in use by another trainer (pid {proc.pid})" in err
    for sig in signals:
        at = max(logged_steps(run))
        proc.send_signal(sig)
        if sig != stopper:  # ignored: the run goes on
            wait_for_step(run, at + 2, proc)
    sent = time.monotonic()
    code, out, err = finish(proc, timeout=30)
    assert code == 0, err[-2000:]
    assert time.monotonic() - sent < 5
    step = int(out.split("saving a checkpoint at step ")[1].split()[0])
    assert 4 <= step < 400 and out.count("received signal") == 1
    assert f"received signal {int(stopper)} ({stopper.name})" in out
    assert latest(run).name == f"step_{step:07d}" and ck.load_training_state(latest(run))["step"] == step


# Each rank prints a float64 checksum of its parameters when training ends.
CHECKSUMS = """
import os, torch
from smolhub_hub.training import engine
real_fit = engine.Trainer.fit
def fit(self):
    summary = real_fit(self)
    total = sum(p.detach().double().sum().item() for p in self.raw_model.parameters())
    print(f"checksum rank {self.dist.rank}: {total!r}", flush=True)
    return summary
engine.Trainer.fit = fit
"""


def test_torchrun_restarts_a_killed_rank_and_resumes_in_sync(tmp_path, driver):
    script = tmp_path / "checksummed_trainer.py"
    script.write_text(CHECKSUMS + driver.read_text())
    run = tmp_path / "run"
    proc = start([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                  "--max-restarts=2", script, "StoryLlama", *run_args("StoryLlama", run, 12)],
                 SMOLHUB_TEST_KILL_RANK="1", SMOLHUB_TEST_KILL_STEP="5")
    code, out, err = finish(proc)
    assert code == 0, out[-3000:] + err[-6000:]
    assert "resumed" in out and "at step 3" in out  # the second attempt continued the step-3 checkpoint
    assert "2 process(es)" in out and "exitcode  : -9" not in out
    sums = {line.split(":")[0]: float(line.split(":")[1]) for line in out.splitlines() if line.startswith("checksum")}
    assert set(sums) == {"checksum rank 0", "checksum rank 1"}
    assert sums["checksum rank 0"] == sums["checksum rank 1"]
    assert latest(run).name == "step_0000012"
