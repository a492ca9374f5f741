"""One owner per run folder, and --overwrite means it: the folder must be writable before anything runs, any
checkpoint in it counts, an overwrite clears the old run, and contradictory flags are refused. (A second trainer
on a busy folder is tested against a live one in test_signals_and_torchrun.py.)"""

import os
import subprocess

import pytest

from smolhub_hub.training import main
from smolhub_hub.training.metrics import series
from StoryLlama.config import FAMILY
from tests.reliability.conftest import assert_clean, latest, run_args, run_cli


def trainer(argv) -> tuple[int, str]:
    code, err = run_cli(lambda a: main(FAMILY, a), argv)
    assert_clean(code, err)
    return code, err


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody may write to: root ignores permission bits, so as root it is a read-only tmpfs."""
    path = tmp_path / "read-only"
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)]).returncode != 0:
        pytest.skip("running as root, but no read-only tmpfs can be mounted here")
    yield path
    subprocess.run(["umount", str(path)], check=True)


def test_an_out_dir_that_is_a_file_or_read_only_is_refused_before_anything_runs(tmp_path, read_only_dir):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    code, err = trainer(run_args("StoryLlama", a_file, 2))
    assert code == 2 and f"error: --out-dir {a_file} is a file; give a folder" in err
    code, err = trainer(run_args("StoryLlama", read_only_dir / "run", 2))
    assert code == 2 and f"error: --out-dir {read_only_dir / 'run'} is not writable (" in err


def test_any_checkpoint_counts_and_overwrite_clears_the_old_run(tmp_path, monkeypatch):
    """Reference bugs: without LATEST, a new run silently wrote over the old checkpoints; --overwrite left the old
    run's later checkpoints and metrics beside the new ones; --resume --overwrite silently dropped one flag."""
    monkeypatch.setenv("HOME", str(tmp_path))
    run = tmp_path / "run"
    main(FAMILY, run_args("StoryLlama", "~/run", 6))  # step_0000003 and step_0000006, in $HOME/run as in a shell
    (run / "LATEST").unlink()
    (run / "notes.txt").write_text("the user's own file")
    code, err = trainer(run_args("StoryLlama", run, 2))
    assert code == 2 and f"{run} already holds a checkpoint (step_0000003, step_0000006); pass --resume" in err

    main(FAMILY, run_args("StoryLlama", run, 2, ["--overwrite"]))
    assert sorted(p.name for p in run.glob("step_*")) == ["step_0000002"] and latest(run).name == "step_0000002"
    assert max(series(run / "metrics.csv")["train/loss"][0]) == 2
    assert (run / "notes.txt").read_text() == "the user's own file"

    code, err = trainer(run_args("StoryLlama", run, 4, ["--resume", "--overwrite"]))
    assert code == 2 and "--resume continues the run in --out-dir and --overwrite replaces it" in err
    assert latest(run).name == "step_0000002"
