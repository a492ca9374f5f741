"""Helpers for tests: tiny training runs through the real CLI entry points."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Small enough to train in seconds on one CPU thread, big enough to learn the built-in stories.
TINY_DATA = ["--dataset", "builtin", "--builtin-stories", "1500", "--tokenizer", "bpe", "--vocab-size", "512"]


def tiny_data(extra=()) -> list[str]:
    """TINY_DATA, without the built-in corpus's size when `extra` names another --dataset (it would be refused)."""
    return TINY_DATA[4:] if "--dataset" in map(str, extra) else TINY_DATA


def tiny_run_args(out_dir, steps=20, extra=()):
    return ["--preset", "quick", "--out-dir", str(out_dir), "--max-steps", str(steps), "--batch-size", "8",
            "--eval-interval", str(max(steps // 2, 1)), "--eval-batches", "2", "--sample-interval", "0",
            "--log-interval", "5", "--save-interval", str(max(steps // 2, 1)), "--warmup-steps", "5",
            *tiny_data(extra), *extra]


def tiny_llama(**kw):
    """A tiny StoryLlama in eval mode, seeded: the model the shared-library tests run."""
    import torch

    from StoryLlama.config import StoryLlamaConfig
    from StoryLlama.model import StoryLlama

    cfg = dict(vocab_size=97, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=64)
    cfg.update(kw)
    torch.manual_seed(0)
    return StoryLlama(StoryLlamaConfig(**cfg)).eval()


def randomise_norms_and_biases(model, seed: int = 0):
    """Give every vector parameter of `model` (ours or transformers') a random value: norm weights around 1
    but never 1, biases around 0 but never 0. Initial values (all 1, all 0) would let a converter that
    swaps two norms, or drops a bias, pass a parity test. Returns the model."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:  # norm weights and biases: the only vectors in these architectures
                noise = 0.2 * torch.randn(p.shape, generator=g)
                p.copy_(1.0 + noise if name.endswith("weight") else noise)
    return model


def tiny_checkpoint(path, family: str, tokenizer, weight_scale: float = 4.0, **overrides):
    """A checkpoint as the trainer writes it, of `family`'s quick preset with `overrides`, in seconds (no training).
    Weights are the model's init times `weight_scale`, so that attention is sharp and a wrong position encoding
    shows in the logits, as in a trained model; norms and biases are random, so that a swapped or dropped one
    shows too."""
    import torch

    from smolhub_hub import checkpoint as ckpt_io
    from smolhub_hub.registry import get_family

    fam = get_family(family)
    mcfg, tcfg, dcfg = fam.resolve("quick")
    mcfg = mcfg.replace(vocab_size=len(tokenizer) + 48, **overrides)
    torch.manual_seed(0)
    model = randomise_norms_and_biases(fam.model_class()(mcfg))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(weight_scale)
    cfg = {"family": family, "model": mcfg.to_dict(), "train": tcfg.to_dict(), "data": dcfg.to_dict(), "step": 120,
           "tokens_seen": 245_760, "val_loss": 3.25, "param_counts": model.param_counts()}
    return ckpt_io.save_checkpoint(path, 120, model, cfg, tokenizer)


def show_routing_table(capsys, family, ckpt, n_new: int = 6) -> list[str]:
    """What `<family>/inference.py --show-routing` prints after the text: a header, then one row per new token."""
    from smolhub_hub import inference

    inference.main(family, ["--checkpoint", str(ckpt), "--prompt", "Once upon a time", "--greedy",
                            "--max-length", str(n_new), "--show-routing", "--device", "cpu"], show_routing=True)
    lines = capsys.readouterr().out.strip().splitlines()
    return lines[next(i for i, line in enumerate(lines) if line.startswith("token")):]


def assert_loop_experts_match_grouped_under_bf16(model, experts):
    """One bf16-autocast training forward and backward with `experts` (every MoE layer's GroupedExperts) grouped,
    then with the reference loop: logits and the last layer's expert gradient agree to bf16 accuracy."""
    import torch

    idx = torch.randint(0, model.config.vocab_size, (2, 24))
    results = []
    for impl in ("grouped", "loop"):
        model.zero_grad()
        for e in experts:
            e.impl = impl
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(idx, targets=idx)
        out.loss.backward()
        results.append((out.logits.float(), experts[-1].w_down.grad.clone()))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=0.02, atol=0.02)


def run_cli(script: str, *args, timeout=600, env=None, check=False, cwd=None):
    """Run a folder's script (e.g. 'StoryLlama/trainer.py') as a user would, capturing its output."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run([sys.executable, str(REPO / script), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=full_env, cwd=cwd or REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def latest_checkpoint(run: Path) -> Path:
    """The checkpoint folder a run's LATEST names."""
    from smolhub_hub.checkpoint import LATEST

    return run / (run / LATEST).read_text().strip()


def latest_weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(latest_checkpoint(run) / "model.safetensors")


def interrupted_copy(full: Path, part: Path, at_step: int, drop_step: int) -> Path:
    """`part`: a copy of the finished run `full` as it was when stopped after step `at_step` (the later checkpoint
    `drop_step` removed, LATEST pointing back)."""
    import shutil

    from smolhub_hub.checkpoint import LATEST

    shutil.copytree(full, part)
    shutil.rmtree(part / f"step_{drop_step:07d}")
    (part / LATEST).write_text(f"step_{at_step:07d}\n")
    return part
