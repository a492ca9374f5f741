"""StoryKimi through the real trainer CLI: it learns, resumes both optimizers and the routing biases exactly,
and two torchrun processes train the same model as one."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch

from smolhub_hub.checkpoint import load_training_state
from smolhub_hub.training.metrics import series
from tests.helpers import REPO, interrupted_copy, latest_checkpoint, latest_weights, run_cli, tiny_run_args

SMALL = ["--dim", "64", "--n-layers", "3", "--n-heads", "4", "--kv-lora-rank", "32", "--expert-hidden", "64",
         "--seq-len", "64"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_quick_preset_learns(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("StoryKimi/trainer.py", "--preset", "quick", "--out-dir", out, "--max-steps", "60",
                   "--eval-interval", "20", "--eval-batches", "4", "--sample-interval", "0",
                   "--builtin-stories", "1500", "--seq-len", "64", check=True)
    val = series(out / "metrics.csv")["val/loss"][1]
    assert val[-1] < 0.7 * val[0], val  # ln(vocab) ~ 7.6 at the start
    assert "held-out loss" in proc.stdout
    assert "moe/layer1/load_e0" in {r for r in series(out / "metrics.csv") for r in [r.split("/", 1)[-1]]}


def test_resume_restores_both_optimizers_and_routing_biases(tmp_path):
    full = tmp_path / "full"
    run_cli("StoryKimi/trainer.py", *tiny_run_args(full, steps=12, extra=[*SMALL, "--keep-last", "3"]), check=True)
    state = load_training_state(full / "step_0000006")
    assert len(state["optimizers"]) == 3  # Muon, ExpertMuon, AdamW: each with its own state
    assert all(sd["state"] for sd in state["optimizers"])
    assert latest_weights(full)["blocks.1.ffn.router.expert_bias"].abs().sum() > 0  # the biases moved and were saved
    part = tmp_path / "part"
    interrupted_copy(full, part, at_step=6, drop_step=12)
    proc = run_cli("StoryKimi/trainer.py", "--resume", "--out-dir", part, "--max-steps", "12", check=True)
    assert "resumed" in proc.stdout
    a, b = latest_weights(full), latest_weights(part)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert series(full / "metrics.csv")["train/loss"] == series(part / "metrics.csv")["train/loss"]


def test_two_process_torchrun_matches_one_process(tmp_path):
    """Reference bug: training bypassed the DDP wrapper, so gradients (and biases) never synced."""
    common = [*SMALL, "--batch-size", "4", "--total-batch-tokens", str(4 * 2 * 64)]
    one, two = tmp_path / "one", tmp_path / "two"
    run_cli("StoryKimi/trainer.py", *tiny_run_args(one, steps=6, extra=common), check=True)
    # An explicit loopback address: with --master_port=0 alone, rendezvous hangs on some sandboxed hosts.
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
                           str(REPO / "StoryKimi/trainer.py"), *map(str, tiny_run_args(two, steps=6, extra=common))],
                          capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout
    a, b = latest_weights(one), latest_weights(two)
    for k in a:
        if k.endswith("expert_bias"):
            assert torch.equal(a[k], b[k]), k  # loads summed across ranks: the same integer counts
        else:
            assert torch.allclose(a[k], b[k], atol=1e-3), k  # Muon's bf16 Newton-Schulz rounds differently
    la, lb = series(one / "metrics.csv")["train/loss"][1], series(two / "metrics.csv")["train/loss"][1]
    assert la == pytest.approx(lb, abs=1e-3)


def test_a_checkpoint_written_before_muon_moved_to_train_resumes_and_loads(kimi_run, tmp_path):
    """4d6f37b kept muon_* in config.json's "model" section and only rank 0's RNG state: such a run resumes."""
    from safetensors.torch import save_file

    from smolhub_hub.checkpoint import flatten_state
    from smolhub_hub.config import MUON_FIELDS
    from smolhub_hub.inference import load_model

    run = tmp_path / "run"
    shutil.copytree(kimi_run, run)
    ckpt = latest_checkpoint(run)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["model"].update({k: cfg["train"].pop(k) for k in MUON_FIELDS})
    for key in ("data_fingerprint", "wandb_run_id"):
        cfg.pop(key)
    (ckpt / "config.json").write_text(json.dumps(cfg))
    state = load_training_state(ckpt)
    rng = state.pop("rng")[0]
    state.update(rng_cpu=rng["cpu"], rng_cuda=None)
    tensors = {}
    (ckpt / "training_state.json").write_text(json.dumps(flatten_state(state, tensors)))
    save_file(tensors, ckpt / "training_state.safetensors")
    proc = run_cli("StoryKimi/trainer.py", "--resume", "--out-dir", run, "--max-steps", "8", check=True)
    assert "resumed" in proc.stdout and "after 8 steps" in proc.stdout
    assert load_model(str(ckpt)).config.dim == 64
