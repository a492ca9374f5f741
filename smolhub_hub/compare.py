"""`smolhub compare`: training runs side by side, one table and one plot of their loss curves.

Numbers come from each run's metrics.csv (long format: step, tokens, name, value) and from the
config.json of its LATEST checkpoint; nothing is recomputed, so comparing is instant.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smolhub_hub import checkpoint as ckpt_io
from smolhub_hub.errors import UserError
from smolhub_hub.training.metrics import curves as read_curves
from smolhub_hub.training.metrics import log_y

# Settings that differ between any two runs without changing what was trained.
BOOKKEEPING = {"train.out_dir", "train.resume", "train.overwrite", "train.wandb", "train.wandb_project",
               "train.wandb_mode"}


@dataclass
class RunSummary:
    name: str
    family: str
    params_total: int
    params_active: int
    steps: int
    tokens: int
    train_loss: float | None
    val_loss: float | None
    tokens_per_s: float | None
    # name -> (steps, tokens, values), rows up to the checkpoint's step only
    curves: dict[str, tuple[list[int], list[int], list[float]]] = field(default_factory=dict, repr=False)
    # "model.dim", "train.lr", "data.dataset" ... as saved in the checkpoint
    settings: dict[str, Any] = field(default_factory=dict, repr=False)


def _last(curves, name) -> float | None:
    return curves[name][2][-1] if name in curves and curves[name][2] else None


def _typical_speed(curves) -> float | None:
    """Median logged throughput; the first interval (start-up, compilation) is left out when there are others."""
    vals = curves.get("train/tokens_per_s", ([], [], []))[2]
    vals = vals[1:] if len(vals) > 1 else vals
    return statistics.median(vals) if vals else None


def summarize_checkpoint(ckpt: Path, run: Path | None, name: str | None = None) -> RunSummary:
    cfg = ckpt_io.read_config(ckpt)
    step = int(cfg.get("step", 0))
    curves = read_curves(run / "metrics.csv", step) if run is not None else {}
    counts = cfg.get("param_counts") or {}
    val = _last(curves, "val/loss")
    if val is None and cfg.get("val_loss") == cfg.get("val_loss"):  # NaN until the first evaluation
        val = cfg.get("val_loss")
    return RunSummary(name=name or (run or ckpt).name, family=cfg["family"], params_total=counts.get("total", 0),
                      params_active=counts.get("active", 0), steps=step, tokens=int(cfg.get("tokens_seen", 0)),
                      train_loss=_last(curves, "train/loss"), val_loss=val, tokens_per_s=_typical_speed(curves),
                      curves=curves, settings={f"{section}.{k}": v for section in ("model", "train", "data")
                                               for k, v in (cfg.get(section) or {}).items()})


def summarize_run(path: str | Path) -> RunSummary:
    """A run folder (its LATEST checkpoint), one of its step_* folders, or a pulled Hub repo."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"run folder '{path}' does not exist; pass the --out-dir of a training run")
    ckpt = ckpt_io.resolve_checkpoint(ckpt_io.checkpoint_in(p))
    run = ckpt_io.run_dir_of(ckpt)
    if run is None:
        raise UserError(f"'{path}' has no metrics.csv next to its checkpoint; pass a training run folder")
    return summarize_checkpoint(ckpt, run, name=p.resolve().name)


def _unique_names(runs: list[RunSummary], paths: list[str]):
    """Two runs both called `run` in different folders are labelled with their parent folder too."""
    names = [r.name for r in runs]
    for r, p in zip(runs, paths, strict=False):
        if names.count(r.name) > 1:
            r.name = "/".join(Path(p).resolve().parts[-2:])


def compare(paths: list[str]) -> list[RunSummary]:
    runs = [summarize_run(p) for p in paths]
    _unique_names(runs, paths)
    return runs


# --- table ---------------------------------------------------------------------------------------
COLUMNS = ["run", "family", "params", "active", "steps", "tokens", "train loss", "val loss", "tokens/s"]


def differing_settings(runs: list[RunSummary]) -> list[str]:
    """The settings (learning rate, size, data ...) whose values are not the same in every run, in config order."""
    keys = list(dict.fromkeys(k for r in runs for k in r.settings))
    return [k for k in keys if k not in BOOKKEEPING
            and len({json.dumps(r.settings.get(k), sort_keys=True) for r in runs}) > 1]


def _setting_names(keys: list[str]) -> list[str]:
    """`lr` for train.lr; the section stays where two sections share a name (model and data vocab_size)."""
    short = [k.split(".", 1)[1] for k in keys]
    return [s if short.count(s) == 1 else k for k, s in zip(keys, short, strict=False)]


def _setting(value) -> str:
    return "-" if value is None else format(value, "g") if isinstance(value, float) else str(value)


def _cells(r: RunSummary, settings: list[str]) -> list[str]:
    def num(x, fmt):
        return "-" if x is None else format(x, fmt)

    return [r.name, r.family, *(_setting(r.settings.get(k)) for k in settings), _human(r.params_total),
            _human(r.params_active), str(r.steps), _human(r.tokens), num(r.train_loss, ".4f"), num(r.val_loss, ".4f"),
            num(r.tokens_per_s, ",.0f")]


def _human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def format_table(runs: list[RunSummary], fmt: str = "text") -> str:
    """One row per run: its numbers, and a column for every setting that is not the same in all runs."""
    settings = differing_settings(runs)
    header = [*COLUMNS[:2], *_setting_names(settings), *COLUMNS[2:]]
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(header)
        w.writerows([r.name, r.family, *(r.settings.get(k) for k in settings), r.params_total, r.params_active,
                     r.steps, r.tokens, r.train_loss, r.val_loss, r.tokens_per_s] for r in runs)
        return buf.getvalue().rstrip("\n")
    rows = [_cells(r, settings) for r in runs]
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in rows])
    widths = [max(len(h), *(len(c[i]) for c in rows)) for i, h in enumerate(header)]
    fmt_row = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w)  # noqa: E731
                                      for i, (c, w) in enumerate(zip(cells, widths, strict=False)))
    return "\n".join([fmt_row(header), fmt_row(["-" * w for w in widths]), *map(fmt_row, rows)])


# --- plot ----------------------------------------------------------------------------------------
def loss_curves_figure(runs: list[RunSummary], x: str = "tokens"):
    """Train loss and held-out loss in two panels side by side (log scale), one colour per run."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    col = 1 if x == "tokens" else 0
    for i, r in enumerate(runs):
        for ax, name in zip(axes, ("train/loss", "val/loss"), strict=False):
            if name in r.curves:
                ax.plot(r.curves[name][col], r.curves[name][2], color=f"C{i % 10}", label=r.name,
                        **({"marker": "o", "markersize": 5} if name == "val/loss" else {"linewidth": 1}))
    for ax, title in zip(axes, ("train loss", "held-out loss"), strict=False):
        ax.set_title(title)
        log_y(ax)
        ax.set_xlabel("tokens seen" if x == "tokens" else "step")
        ax.set_ylabel("cross-entropy (nats/token)")
        ax.yaxis.set_tick_params(labelleft=True)  # sharey hides the right panel's labels
        ax.xaxis.set_major_formatter(EngFormatter())
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_loss_curves(runs: list[RunSummary], out: Path, x: str = "tokens") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = loss_curves_figure(runs, x)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
