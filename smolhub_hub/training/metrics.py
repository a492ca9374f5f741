"""Metrics: a long-format CSV next to the checkpoints, optional wandb, and PNG plots.

metrics.csv has one row per (step, name): new metrics (per-layer routing, say) need no schema.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from pathlib import Path

FIELDS = ["step", "tokens", "name", "value"]


class MetricsLog:
    def __init__(self, run_dir: Path, resume_step: int | None = None, wandb_run=None):
        self.path = Path(run_dir) / "metrics.csv"
        self.wandb = wandb_run
        if resume_step is not None and self.path.exists():
            # Drop rows written after the checkpoint we resume from: they will be written again.
            rows = [r for r in read_metrics(self.path) if int(r["step"]) <= resume_step]
            self._rewrite(rows)
        elif not self.path.exists() or resume_step is None:
            self._rewrite([])

    def _rewrite(self, rows):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, FIELDS)
            w.writeheader()
            w.writerows(rows)

    def log(self, step: int, tokens: int, metrics: dict[str, float]):
        with open(self.path, "a", newline="") as f:
            w = csv.writer(f)
            for name, value in metrics.items():
                w.writerow([step, tokens, name, f"{value:.6g}"])
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)


def read_metrics(path: Path) -> list[dict]:
    """The complete rows of a metrics.csv; a row cut short by a kill in the middle of a write is dropped."""
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if _complete(r)]


def _complete(row: dict) -> bool:
    try:
        int(row["step"]), int(row["tokens"]), float(row["value"])
    except (TypeError, ValueError):
        return False
    return bool(row["name"]) and None not in row  # None key: more fields than the header


def series(path: Path) -> dict[str, tuple[list[int], list[float]]]:
    out: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
    for r in read_metrics(path):
        xs, ys = out[r["name"]]
        xs.append(int(r["step"]))
        ys.append(float(r["value"]))
    return dict(out)


def plot_run(run_dir: Path) -> list[Path]:
    """loss_curve.png (train and held-out loss) and, for MoE models, expert_load.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    s = series(run_dir / "metrics.csv")
    written = []
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, label in [("train/loss", "train"), ("val/loss", "held-out")]:
        if name in s:
            ax.plot(*s[name], label=label, marker="o" if name.startswith("val") else None, markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(run_dir.name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(run_dir / "loss_curve.png", dpi=120)
    plt.close(fig)
    written.append(run_dir / "loss_curve.png")

    load = defaultdict(dict)
    for name in s:
        m = re.fullmatch(r"train/moe/layer(\d+)/load_e(\d+)", name)
        if m:
            load[int(m.group(1))][int(m.group(2))] = s[name]
    if load:
        n = len(load)
        cols = min(4, n)
        rows = (n + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False, sharey=True)
        for ax, layer in zip(axes.flat, sorted(load)):
            for e, (xs, ys) in sorted(load[layer].items()):
                ax.plot(xs, ys, label=f"e{e}", linewidth=1)
            ax.set_title(f"layer {layer}", fontsize=9)
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[n:]:
            ax.axis("off")
        axes[0][0].set_ylabel("share of tokens")
        axes[0][-1].legend(fontsize=6, ncol=2)
        fig.suptitle("expert load per layer over training")
        fig.tight_layout()
        fig.savefig(run_dir / "expert_load.png", dpi=110)
        plt.close(fig)
        written.append(run_dir / "expert_load.png")
    return written
