"""--resume continues the same run: what the network computes and the data it learns from are the
checkpoint's (a flag that differs is refused), how it is trained may change (and really does), the
run keeps its own tokenizer, and under torchrun every rank continues its own random stream."""

import json
import os
import shutil
import subprocess
import sys

import torch

from smolhub_hub.checkpoint import LATEST, load_training_state
from smolhub_hub.data.builtin import generate_stories
from smolhub_hub.training.metrics import series
from tests.helpers import REPO, interrupted_copy, latest_checkpoint, latest_weights, run_cli, tiny_run_args


def _copy(run, tmp_path):
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


def test_new_training_settings_reach_the_optimizer_and_are_reported(llama_run, tmp_path):
    run = _copy(llama_run, tmp_path)
    proc = run_cli("StoryLlama/trainer.py", "--resume", "--out-dir", run, "--max-steps", "12", "--lr", "1e-3",
                   "--weight-decay", "0.2", "--beta2", "0.9", "--dropout", "0.1", check=True)
    groups = load_training_state(latest_checkpoint(run))["optimizers"][0]["param_groups"]
    assert [g["initial_lr"] for g in groups] == [1e-3, 1e-3]  # what the schedule scales
    assert [g["weight_decay"] for g in groups] == [0.2, 0.0] and all(tuple(g["betas"]) == (0.9, 0.9) for g in groups)
    assert json.loads((latest_checkpoint(run) / "config.json").read_text())["model"]["dropout"] == 0.1
    for line in ("resume: --lr 0.003 -> 0.001", "resume: --weight-decay 0.01 -> 0.2", "resume: --beta2 0.95 -> 0.9",
                 "resume: --dropout 0.0 -> 0.1", "resume: --max-steps 10 -> 12"):
        assert line in proc.stdout


def test_architecture_and_data_flags_that_differ_are_refused(llama_run, tmp_path):
    run = _copy(llama_run, tmp_path)
    before = (run / LATEST).read_text()
    other = tmp_path / "stories.txt"
    other.write_text("\n\n".join(generate_stories(50, seed=3)))
    proc = run_cli("StoryLlama/trainer.py", "--resume", "--out-dir", run, "--max-steps", "12", "--dim", "128",
                   "--n-layers", "3", "--vocab-size", "1024", "--dataset", other)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    error = proc.stderr.strip().splitlines()[-1]
    for flag in ("--dim 64 (checkpoint) vs 128 (given)", "--n-layers 2 (checkpoint) vs 3", "--vocab-size 512",
                 "--dataset 'builtin' (checkpoint)"):
        assert flag in error
    assert (run / LATEST).read_text() == before


def _write_stories(folder, first, count):
    folder.mkdir(exist_ok=True)
    (folder / f"part{first}.txt").write_text("\n\n".join(generate_stories(first + count, seed=0)[first:]))


def test_a_grown_dataset_is_refused_unless_accepted_and_the_tokenizer_stays(tmp_path):
    """Before: the grown folder got a new cache key, --resume retrained the BPE under the old weights and
    the loss jumped (2.03 -> 7.09 in the report), without a word."""
    data, run = tmp_path / "stories", tmp_path / "run"
    _write_stories(data, 0, 600)
    args = tiny_run_args(run, steps=8, extra=["--dataset", data, "--vocab-size", "400"])
    run_cli("StoryLlama/trainer.py", *args, check=True)
    tokenizer = (latest_checkpoint(run) / "tokenizer.json").read_text()
    _write_stories(data, 600, 300)
    refused = run_cli("StoryLlama/trainer.py", "--resume", "--out-dir", run, "--max-steps", "12")
    assert refused.returncode == 2
    assert "the dataset changed" in refused.stderr and "--allow-data-change" in refused.stderr
    run_cli("StoryLlama/trainer.py", "--resume", "--out-dir", run, "--max-steps", "12", "--allow-data-change",
            check=True)
    assert (latest_checkpoint(run) / "tokenizer.json").read_text() == tokenizer
    losses = series(run / "metrics.csv")["train/loss"][1]
    assert losses[-1] < losses[1] + 0.5, losses  # the weights still read the tokens they were trained on


def _torchrun(*args):
    # An explicit loopback address: with --master_port=0 alone, rendezvous hangs on some sandboxed hosts.
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           "--master_addr=127.0.0.1", f"--master_port={port}", str(REPO / "StoryLlama/trainer.py"),
                           *map(str, args)], capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_torchrun_resume_restores_every_ranks_random_state(tmp_path):
    """Dropout draws a different mask on each rank; before, rank 1 was reseeded on resume."""
    full, part = tmp_path / "full", tmp_path / "part"
    _torchrun(*tiny_run_args(full, steps=4, extra=["--dropout", "0.2", "--batch-size", "2", "--keep-last", "3",
                                                    "--dim", "32", "--n-layers", "1", "--seq-len", "32"]))
    interrupted_copy(full, part, at_step=2, drop_step=4)
    _torchrun("--resume", "--out-dir", part)
    a, b = latest_weights(full), latest_weights(part)
    for k in a:
        assert torch.equal(a[k], b[k]), k
