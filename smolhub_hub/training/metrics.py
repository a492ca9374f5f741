"""Metrics: a long-format CSV next to the checkpoints, optional wandb, and PNG plots.

metrics.csv has one row per (step, name): new metrics (per-layer routing, say) need no schema.
"""

from __future__ import annotations

import csv
import re
import sys
from collections import defaultdict
from pathlib import Path

from tqdm import tqdm

from smolhub_hub.errors import UserError

FIELDS = ["step", "tokens", "name", "value"]
METRICS_CSV, LOSS_PLOT, LOAD_PLOT = "metrics.csv", "loss_curve.png", "expert_load.png"
RUN_FILES = (METRICS_CSV, LOSS_PLOT, LOAD_PLOT)  # what this module writes into a run folder


class MetricsLog:
    def __init__(self, run_dir: Path, resume_step: int | None = None, wandb_run=None):
        self.path = Path(run_dir) / METRICS_CSV
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


LOG_LINE_EVERY_S = 30  # in a log file, a progress line at least this often (and at every logged step)


def progress_bar(total: int, initial: int, disable: bool = False) -> tqdm:
    """tqdm's bar on a terminal; where stderr is not a terminal (a log file, CI, a notebook), plain lines on
    stdout instead of carriage-return redraws: one at every logged step and one every LOG_LINE_EVERY_S."""
    if disable or sys.stderr.isatty():
        return tqdm(total=total, initial=initial, disable=disable, desc="train", unit="step", dynamic_ncols=True)
    return LogLines(total=total, initial=initial, desc="train", unit="step", file=sys.stdout, leave=False,
                    mininterval=LOG_LINE_EVERY_S, bar_format="{desc}: step {n_fmt}/{total_fmt} ({percentage:.0f}%) "
                                                             "[{elapsed}<{remaining}, {rate_fmt}{postfix}]")


class LogLines(tqdm):
    """A progress bar for logs: every refresh prints one line (once per step count), nothing is ever redrawn."""

    _printed_n = None

    def display(self, msg=None, pos=None):
        if msg is None and self.n != self._printed_n:  # msg="" asks to clear a bar; there is none
            self.fp.write(self.__str__() + "\n")
            self.fp.flush()
            self._printed_n = self.n
        return msg is None

    def clear(self, nolock=False):
        pass


def read_metrics(path: Path) -> list[dict]:
    """The complete rows of a metrics.csv; a row cut short by a kill in the middle of a write is dropped.

    The one reader of metrics.csv: training (resume, plots), `smolhub compare` and `smolhub push` use it."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header = ",".join(reader.fieldnames or [])
            if header != ",".join(FIELDS):
                if ",".join(FIELDS).startswith(header):  # empty, or the header itself was cut short
                    return []
                raise UserError(f"{path} is not a SmolHub metrics file (columns {header}; expected "
                                f"{','.join(FIELDS)})")
            return [r for r in reader if _complete(r)]
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a SmolHub metrics file (not UTF-8 text)") from None


def _complete(row: dict) -> bool:
    try:
        int(row["step"]), int(row["tokens"]), float(row["value"])
    except (TypeError, ValueError):
        return False
    return bool(row["name"]) and None not in row  # None key: more fields than the header


def curves(path: Path, max_step: int | None = None) -> dict[str, tuple[list[int], list[int], list[float]]]:
    """name -> (steps, tokens, values) from the complete rows, up to `max_step` (a checkpoint's step)."""
    out: dict[str, tuple[list[int], list[int], list[float]]] = defaultdict(lambda: ([], [], []))
    for r in read_metrics(path):
        step = int(r["step"])
        if max_step is None or step <= max_step:
            steps, tokens, values = out[r["name"]]
            steps.append(step), tokens.append(int(r["tokens"])), values.append(float(r["value"]))
    return dict(out)


def series(path: Path) -> dict[str, tuple[list[int], list[float]]]:
    """name -> (steps, values)."""
    return {name: (steps, values) for name, (steps, _, values) in curves(path).items()}


def plot_run(run_dir: Path) -> list[Path]:
    """loss_curve.png (losses, learning rate, gradient norm) and, for MoE models, expert_load.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    s = series(run_dir / METRICS_CSV)
    written = []
    for name, fig in ((LOSS_PLOT, loss_figure(s, run_dir.name)), (LOAD_PLOT, expert_load_figure(s))):
        if fig is not None:
            fig.savefig(run_dir / name, dpi=120)
            plt.close(fig)
            written.append(run_dir / name)
    return written


def loss_figure(s: dict[str, tuple[list[int], list[float]]], title: str):
    """Three panels over the steps: train and held-out loss (log scale), learning rate, gradient norm."""
    import matplotlib.pyplot as plt

    fig, (loss, lr, norm) = plt.subplots(3, 1, figsize=(7, 7.5), sharex=True, height_ratios=[2, 1, 1])
    for name, label, marker in [("train/loss", "train", None), ("val/loss", "held-out", "o")]:
        if name in s:
            loss.plot(*s[name], label=label, marker=marker, markersize=4)
    log_y(loss)
    loss.set_ylabel("cross-entropy (nats/token)")
    loss.set_title(title)
    loss.legend()
    for ax, name, label in [(lr, "train/lr", "learning rate"), (norm, "train/grad_norm", "gradient norm")]:
        if name in s:
            ax.plot(*s[name], color="C2" if ax is lr else "C3", linewidth=1)
        ax.set_ylabel(label)
    log_y(norm)
    norm.set_xlabel("step")
    for ax in (loss, lr, norm):
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def log_y(ax):
    """A log y axis labelled with plain numbers (3, 4, 5 rather than 3x10^0); minor ticks are labelled where
    the axis spans too few decades to show a power of ten, as matplotlib's own log formatter decides."""
    from matplotlib.ticker import LogFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.5)))


def expert_load_figure(s: dict[str, tuple[list[int], list[float]]]):
    """One panel per MoE layer: each expert's share of the routed tokens over the steps, and the uniform share."""
    import matplotlib.pyplot as plt

    load = defaultdict(dict)
    for name in s:
        m = re.fullmatch(r"train/moe/layer(\d+)/load_e(\d+)", name)
        if m:
            load[int(m.group(1))][int(m.group(2))] = s[name]
    if not load:
        return None
    n = len(load)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols + 1.2, 2.9 * rows), squeeze=False, sharex=True,
                             sharey=True, layout="constrained")
    for i, (ax, layer) in enumerate(zip(axes.flat, sorted(load), strict=False)):
        experts = len(load[layer])
        for e, (xs, ys) in sorted(load[layer].items()):
            ax.plot(xs, ys, label=f"expert {e}", linewidth=1)
        ax.axhline(1 / experts, color="black", linestyle="--", linewidth=1, label=f"uniform (1/{experts})")
        ax.set_title(f"layer {layer}", fontsize=9)
        ax.grid(alpha=0.3)
        if i % cols == 0:
            ax.set_ylabel("share of routed tokens")
        if i + cols >= n:  # the lowest panel of its column
            ax.set_xlabel("step")
            ax.xaxis.set_tick_params(labelbottom=True)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside right upper", fontsize=7)
    fig.suptitle("expert load per layer over training")
    return fig
