"""--wandb follows wandb's own environment (WANDB_MODE, WANDB_DIR) and --resume continues the same wandb run."""

import json

from smolhub_hub.checkpoint import LATEST
from tests.helpers import run_cli, tiny_run_args


def test_wandb_offline_from_the_environment_and_resume_continues_the_run(tmp_path):
    """Before, the flag's default mode "online" overrode WANDB_MODE=offline (a traceback without a network),
    and every --resume opened a new wandb run."""
    env = {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "wandb-home"), "WANDB_SILENT": "true"}
    run = tmp_path / "run"
    run_cli("StoryLlama/trainer.py", *tiny_run_args(run, steps=4, extra=["--wandb", "--dim", "32", "--n-layers", "1"]),
            env=env, check=True)
    run_id = json.loads((run / (run / LATEST).read_text().strip() / "config.json").read_text())["wandb_run_id"]
    offline_runs = lambda: sorted((tmp_path / "wandb-home" / "wandb").glob("offline-run-*"))  # noqa: E731
    assert run_id and [r.name.endswith(run_id) for r in offline_runs()] == [True]
    run_cli("StoryLlama/trainer.py", "--resume", "--out-dir", run, "--max-steps", "6", env=env, check=True)
    assert [r.name.endswith(run_id) for r in offline_runs()] == [True, True]  # the same run, continued
