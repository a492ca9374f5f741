"""SIGTERM saves and exits 0 at once; a torchrun rank killed mid-run is restarted (--max-restarts) and
the job continues from the last checkpoint with every rank holding the same parameters."""

import signal
import sys
import time

from smolhub_hub import checkpoint as ck
from tests.reliability.conftest import finish, latest, run_args, start, trainer_cmd, wait_for_step


def test_sigterm_saves_a_checkpoint_and_exits_0_within_seconds(tmp_path):
    run = tmp_path / "run"
    proc = start(trainer_cmd("StoryLlama", *run_args("StoryLlama", run, 400)))
    wait_for_step(run, 4, proc)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code, out, err = finish(proc, timeout=30)
    assert code == 0, err[-2000:]
    assert time.monotonic() - sent < 5
    step = int(out.split("saving a checkpoint at step ")[1].split()[0])
    assert 4 <= step < 400 and "received signal 15" in out
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
