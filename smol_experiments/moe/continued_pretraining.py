"""Continued pretraining of an upcycled MoE: LM loss + load-balancing loss, packed windows, split by document.

    python -m smol_experiments.moe.continued_pretraining --model runs/moe/upcycled --output runs/moe/cpt
    python -m smol_experiments.moe.continued_pretraining --preset quick      # offline, tiny, CPU

Each evaluation runs over the whole held-out set (up to --eval-batches) and logs val loss, balance loss,
expert load per layer, share of active experts and router entropy to metrics.csv (smolhub_hub's layout:
step, tokens, name, value; the same reader, plots and `smolhub compare` curves as the trainers' runs).
A checkpoint is saved at every evaluation and when a stop signal arrives; rerunning the same command
resumes it (the same settings and inputs only: anything else is refused, naming what differs).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from smol_experiments.moe import data, engine, outputs
from smol_experiments.moe.cli import parse_config, recorded_settings
from smol_experiments.moe.engine import BETAS, StageConfig
from smol_experiments.moe.routing import RoutingStats, balance_loss
from smol_experiments.stages import (
    FRESH,
    RESUME,
    REUSE,
    StopRequests,
    begin,
    claim,
    mark_done,
    model_fingerprint,
    reused,
    stage_main,
    write_atomic,
)
from smolhub_hub.config import opt
from smolhub_hub.errors import UserError
from smolhub_hub.training.metrics import MetricsLog
from smolhub_hub.training.optim import adamw
from smolhub_hub.training.schedule import lr_factor, scale_lr


@dataclass
class PretrainConfig(StageConfig):
    model: str = opt("runs/moe/upcycled", "upcycled MoE folder (output of upcycle)", path=True)
    output: str = opt("runs/moe/cpt", "folder for the model, metrics.csv and plots", path=True, recorded=False)
    data: str = opt("HuggingFaceTB/cosmopedia-100k", "Hub dataset id, local file/folder, 'builtin' or 'synthetic'",
                    path=True)
    text_column: str = opt("text", "text column for .jsonl/.parquet/Hub data")
    max_documents: int = opt(20_000, "documents to read (streamed from the Hub)", min=1)
    val_fraction: float = opt(0.01, "share of documents held out for validation", above=0, below=1)
    seq_len: int = opt(512, "tokens per packed window", min=1)
    batch_size: int = opt(8, "windows per micro-batch", min=1)
    grad_accum: int = opt(4, "micro-batches per optimizer step", min=1)
    steps: int = opt(2000, "optimizer steps", min=1)
    lr: float = opt(1e-4, "peak learning rate", above=0)
    min_lr_ratio: float = opt(0.1, "final learning rate as a share of the peak", min=0, max=1)
    warmup_steps: int = opt(100, "linear warmup steps", min=0)
    weight_decay: float = opt(0.1, "AdamW weight decay (matrices only)", min=0)
    eval_every: int = opt(200, "steps between evaluations (and checkpoints)", min=1)
    eval_batches: int = opt(50, "held-out batches per evaluation (all of val if fewer)", min=1)
    seed: int = opt(0, "seed for the split, batch order and init", min=0)


STAGE = "continued_pretraining"
VAL_DOCUMENTS = "val_documents.jsonl"
PRESETS = {
    "quick": dict(model="runs/moe/quick/upcycled", output="runs/moe/quick/cpt", data="synthetic",
                  max_documents=900, val_fraction=0.1, seq_len=128, batch_size=8, grad_accum=1, steps=120,
                  lr=2e-3, warmup_steps=10, log_every=10, eval_every=40, eval_batches=8),
    # the upcycled SmolLM2-135M on the Python docs (Debian python3.11-doc, PSF-2.0), sized for a 2-core CPU
    "real": dict(model="runs/moe/real/upcycled", output="runs/moe/real/cpt", data="data/python-docs/python-docs.jsonl",
                 max_documents=100_000, val_fraction=0.02, seq_len=256, batch_size=4, grad_accum=1, steps=60,
                 lr=5e-5, warmup_steps=5, weight_decay=0.0, log_every=5, eval_every=30, eval_batches=8),
}


@torch.no_grad()
def evaluate(model, windows: torch.Tensor, cfg: PretrainConfig, device, ctx) -> dict:
    """Token-weighted val loss and routing statistics over the held-out windows, in eval mode."""
    model.eval()
    c = model.config
    stats = RoutingStats(c.num_hidden_layers, c.num_local_experts, c.num_experts_per_tok)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    count = 0
    for batch in windows[: cfg.eval_batches * cfg.batch_size].split(cfg.batch_size):
        batch = batch.to(device)
        logits, router_logits = engine.forward(model, batch, None, ctx)
        losses, real = engine.token_losses(logits, batch, None)
        loss_sum += losses.sum()
        count += int(real.sum())
        stats.update(router_logits, torch.ones_like(batch))
    model.train()
    return {"val_loss": float(loss_sum) / count, **stats.summary(cfg.active_min_share)}


def _tokens(step: int, cfg: PretrainConfig) -> int:
    return step * cfg.grad_accum * cfg.batch_size * cfg.seq_len


def _log_eval(step: int, result: dict, log: MetricsLog, cfg: PretrainConfig):
    log.log(step, _tokens(step, cfg), {"val/loss": result["val_loss"], **engine.routing_metrics(result)})
    print(f"step {step:>6} | val loss {result['val_loss']:.4f} | balance {result['balance_loss']:.4f} | "
          f"active {result['active_share']:.2f} | entropy {result['router_entropy']:.3f}", flush=True)


def _windows(cfg: PretrainConfig, tokenizer) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Packed training and validation windows, and the validation documents themselves."""
    train_docs, val_docs = data.split_by_document(
        data.load_texts(cfg.data, cfg.text_column, cfg.max_documents, cfg.seed), cfg.val_fraction, cfg.seed)
    train_windows = data.pack(train_docs, tokenizer, cfg.seq_len)
    val_windows = data.pack(val_docs, tokenizer, cfg.seq_len)
    print(f"{len(train_docs)} train / {len(val_docs)} val documents -> {len(train_windows)} / "
          f"{len(val_windows)} windows of {cfg.seq_len} tokens", flush=True)
    return train_windows, val_windows, val_docs


def _val_set_id(windows: torch.Tensor) -> str:
    """sha256 of the validation tokens: the loss before and after must be measured on the same ones."""
    return hashlib.sha256(windows.numpy().tobytes()).hexdigest()


def train(cfg: PretrainConfig) -> dict:
    out = Path(cfg.output)
    device, ctx = engine.device_and_autocast(cfg.precision)
    settings = recorded_settings(cfg, model_sha256=model_fingerprint(cfg.model),
                                 data_sha256=outputs.data_fingerprint(cfg.data))
    status = claim(out, STAGE, settings, overwrite=cfg.overwrite, flag="--output")
    if status == REUSE:
        return reused(out, STAGE)
    resume = status == RESUME and outputs.has_checkpoint(out)
    torch.manual_seed(cfg.seed)
    model, tokenizer = engine.load_moe(str(out / outputs.CHECKPOINT) if resume else cfg.model, device)
    train_windows, val_windows, val_docs = _windows(cfg, tokenizer)
    if status == FRESH:
        begin(out, STAGE, settings)
    # never trained on: specialization measures its general-text loss on them (--general-data)
    write_atomic(out / VAL_DOCUMENTS, "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in val_docs))
    val_set = _val_set_id(val_windows[: cfg.eval_batches * cfg.batch_size])
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    params = list(model.parameters())
    optimizer = adamw(params, cfg.lr, cfg.weight_decay, BETAS, device)
    start = 0
    if resume:
        state = outputs.load_state(out)
        if state["val_set"] != val_set:
            raise UserError(f"--data {cfg.data} now gives other validation text than when the run in {out} started, "
                            "so its val loss before and after would not compare; delete that folder or use another "
                            "--output to start again.")
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        start, val_loss_before = state["step"], state["val_loss_before"]
        print(f"resuming from the checkpoint at step {start}", flush=True)
    with engine.metrics_log(out, start if resume else None, cfg) as log:
        if not resume:
            first = evaluate(model, val_windows, cfg, device, ctx)
            _log_eval(0, first, log, cfg)
            val_loss_before = first["val_loss"]
        batches = data.random_batches(train_windows, cfg.batch_size, cfg.seed)
        for _ in itertools.islice(batches, start * cfg.grad_accum):  # same batch order as an unbroken run
            pass

        def save(step: int):
            outputs.save_checkpoint(out, model, tokenizer, {
                "optimizer": optimizer.state_dict(), "step": step, "rng": torch.get_rng_state(),
                "val_loss_before": val_loss_before, "val_set": val_set})

        with StopRequests() as stop:
            last = _train_steps(model, optimizer, params, batches, val_windows, cfg, start, log, save, stop,
                                device, ctx)
    last = last or evaluate(model, val_windows, cfg, device, ctx)
    return _finish(model, tokenizer, out, {"val_loss_before": val_loss_before, "val_loss_after": last["val_loss"],
                                           "val_set_sha256": val_set}, last)


def _train_steps(model, optimizer, params, batches, val_windows, cfg, start, log, save, stop,
                 device, ctx) -> dict | None:
    """Steps start+1..cfg.steps, evaluating and checkpointing every eval_every; returns the last evaluation.
    A stop signal ends the current step, saves a checkpoint and raises StageInterrupted."""
    top_k = model.config.num_experts_per_tok
    model.train()
    window_sum = torch.zeros(3, device=device)  # loss, lm, balance summed since the last log (no per-step sync)
    window_steps, last = 0, None
    for step in range(start + 1, cfg.steps + 1):
        scale_lr([optimizer], lr_factor(step - 1, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio))
        for batch in itertools.islice(batches, cfg.grad_accum):
            batch = batch.to(device)
            logits, router_logits = engine.forward(model, batch, None, ctx)
            lm = engine.lm_loss(logits, batch, None)
            bal = balance_loss(router_logits, torch.ones_like(batch), top_k)
            loss = lm + cfg.balance_coef * bal
            (loss / cfg.grad_accum).backward()
            window_sum += torch.stack([loss, lm, bal]).detach() / cfg.grad_accum
        window_steps += 1
        grad_norm = engine.clip_and_step(params, optimizer, cfg.grad_clip)
        if step % cfg.log_every == 0:
            loss, lm, bal = (window_sum / window_steps).tolist()
            grad_norm = float(grad_norm)
            engine.check_finite(loss + grad_norm, step)
            window_sum.zero_()
            window_steps = 0
            log.log(step, _tokens(step, cfg), {"train/loss": loss, "train/lm_loss": lm, "train/balance_loss": bal,
                                               "train/grad_norm": grad_norm,
                                               "train/lr": optimizer.param_groups[0]["lr"]})
        if step % cfg.eval_every == 0 or step == cfg.steps:
            last = evaluate(model, val_windows, cfg, device, ctx)
            _log_eval(step, last, log, cfg)
        if step < cfg.steps and (step % cfg.eval_every == 0 or stop.signum is not None):
            save(step)
        if stop.signum is not None and step < cfg.steps:
            stop.interrupt(f" at step {step} of {cfg.steps} (checkpoint saved)")
    return last


def _finish(model, tokenizer, out: Path, losses: dict, last: dict) -> dict:
    model.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    summary = {**losses, "balance_loss_after": last["balance_loss"], "active_share_after": last["active_share"],
               "router_entropy_after": last["router_entropy"]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    from smol_experiments.moe.analyze import plot_pretraining

    plot_pretraining(out)
    mark_done(out, summary)
    shutil.rmtree(out / outputs.CHECKPOINT, ignore_errors=True)  # the final model supersedes it
    print(f"val loss {losses['val_loss_before']:.4f} -> {last['val_loss']:.4f} (same validation set); "
          f"saved to {out / 'model'}")
    return summary


def run(argv=None) -> dict:
    return train(parse_config(PretrainConfig, argv, "python -m smol_experiments.moe.continued_pretraining",
                              __doc__, PRESETS))


@stage_main
def main(argv=None) -> dict:
    return run(argv)


if __name__ == "__main__":
    main()
