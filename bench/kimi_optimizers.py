"""StoryKimi quality check: Muon (+ AdamW for the rest) vs AdamW alone, same preset, same step count.

Each optimizer runs at a few learning rates through the real trainer (same data order, schedule and
held-out batches); the best of each is compared on held-out loss. Prints a table and writes JSON.

    python bench/kimi_optimizers.py --steps 150 --out bench/kimi_optimizers.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from smolhub_hub.training import train
from smolhub_hub.training.metrics import series
from StoryKimi.config import FAMILY

# (optimizer, AdamW lr, Muon lr): AdamW's lr also drives the embeddings/head/norms/routers under Muon.
RUNS = [("adamw", 3e-3, None), ("adamw", 6e-3, None), ("adamw", 1e-2, None),
        ("muon", 3e-3, 0.02), ("muon", 3e-3, 0.05), ("muon", 6e-3, 0.05), ("muon", 6e-3, 0.1)]


def one_run(opt: str, lr: float, muon_lr: float | None, steps: int, out_dir: str) -> dict:
    mcfg, tcfg, dcfg = FAMILY.resolve("quick")
    if muon_lr is not None:
        tcfg = tcfg.replace(muon_lr=muon_lr)
    tcfg = tcfg.replace(optimizer=opt, lr=lr, min_lr=lr / 10, max_steps=steps, warmup_steps=steps // 10,
                        eval_interval=max(steps // 5, 1), sample_interval=0, save_interval=steps,
                        out_dir=out_dir, overwrite=True)
    summary = train(FAMILY, mcfg, tcfg, dcfg, "quick")
    s = series(Path(out_dir) / "metrics.csv")
    return {"optimizer": opt, "lr": lr, "muon_lr": muon_lr, "steps": steps, "val_loss": summary["val_loss"],
            "val_curve": list(zip(*s["val/loss"], strict=True)),
            "train_curve": list(zip(*s["train/loss"], strict=True))}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--only", type=int, nargs="*", help="indices into RUNS (to split the sweep across processes)")
    p.add_argument("--out", default="bench/kimi_optimizers.json")
    args = p.parse_args()
    rows = []
    for i, (opt, lr, muon_lr) in enumerate(RUNS):
        if args.only is None or i in args.only:
            with tempfile.TemporaryDirectory() as d:
                rows.append(one_run(opt, lr, muon_lr, args.steps, d))
            print(json.dumps({k: v for k, v in rows[-1].items() if not k.endswith("curve")}), flush=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
