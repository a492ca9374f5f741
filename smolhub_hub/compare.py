"""`smolhub compare`: training runs side by side, one table and one plot of their loss curves.

Numbers come from each run's metrics.csv (long format: step, tokens, name, value) and from the
config.json of its LATEST checkpoint; nothing is recomputed, so comparing is instant.
"""

from __future__ import annotations

import csv
import io
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from smolhub_hub import checkpoint as ckpt_io
from smolhub_hub.errors import UserError


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


def _read_curves(metrics: Path, max_step: int) -> dict[str, tuple[list[int], list[int], list[float]]]:
    out: dict[str, tuple[list[int], list[int], list[float]]] = {}
    try:
        with open(metrics, newline="") as f:
            for r in csv.DictReader(f):
                step = int(r["step"])
                if step <= max_step:
                    s, t, v = out.setdefault(r["name"], ([], [], []))
                    s.append(step), t.append(int(r["tokens"])), v.append(float(r["value"]))
    except (KeyError, ValueError, csv.Error) as e:
        raise UserError(f"{metrics} is not a SmolHub metrics file ({type(e).__name__}: {e})") from None
    return out


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
    curves = _read_curves(run / "metrics.csv", step) if run is not None else {}
    counts = cfg.get("param_counts") or {}
    val = _last(curves, "val/loss")
    if val is None and cfg.get("val_loss") == cfg.get("val_loss"):  # NaN until the first evaluation
        val = cfg.get("val_loss")
    return RunSummary(name=name or (run or ckpt).name, family=cfg["family"], params_total=counts.get("total", 0),
                      params_active=counts.get("active", 0), steps=step, tokens=int(cfg.get("tokens_seen", 0)),
                      train_loss=_last(curves, "train/loss"), val_loss=val, tokens_per_s=_typical_speed(curves),
                      curves=curves)


def summarize_run(path: str | Path) -> RunSummary:
    """A run folder (its LATEST checkpoint), one of its step_* folders, or a pulled Hub repo."""
    from smolhub_hub.hub import checkpoint_in, run_dir_of

    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"run folder '{path}' does not exist; pass the --out-dir of a training run")
    ckpt = ckpt_io.resolve_checkpoint(checkpoint_in(p))
    run = run_dir_of(ckpt)
    if run is None:
        raise UserError(f"'{path}' has no metrics.csv next to its checkpoint; pass a training run folder")
    return summarize_checkpoint(ckpt, run, name=p.resolve().name)


def _unique_names(runs: list[RunSummary], paths: list[str]):
    """Two runs both called `run` in different folders are labelled with their parent folder too."""
    names = [r.name for r in runs]
    for r, p in zip(runs, paths):
        if names.count(r.name) > 1:
            r.name = "/".join(Path(p).resolve().parts[-2:])


def compare(paths: list[str]) -> list[RunSummary]:
    runs = [summarize_run(p) for p in paths]
    _unique_names(runs, paths)
    return runs


# --- table ---------------------------------------------------------------------------------------
COLUMNS = ["run", "family", "params", "active", "steps", "tokens", "train loss", "val loss", "tokens/s"]


def _cells(r: RunSummary) -> list[str]:
    def num(x, fmt):
        return "-" if x is None else format(x, fmt)

    return [r.name, r.family, _human(r.params_total), _human(r.params_active), str(r.steps), _human(r.tokens),
            num(r.train_loss, ".4f"), num(r.val_loss, ".4f"), num(r.tokens_per_s, ",.0f")]


def _human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def format_table(runs: list[RunSummary], fmt: str = "text") -> str:
    rows = [_cells(r) for r in runs]
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(COLUMNS)
        w.writerows([r.name, r.family, r.params_total, r.params_active, r.steps, r.tokens, r.train_loss,
                     r.val_loss, r.tokens_per_s] for r in runs)
        return buf.getvalue().rstrip("\n")
    if fmt == "markdown":
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in rows])
    widths = [max(len(h), *(len(c[i]) for c in rows)) for i, h in enumerate(COLUMNS)]
    fmt_row = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w)  # noqa: E731
                                      for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt_row(COLUMNS), fmt_row(["-" * w for w in widths]), *map(fmt_row, rows)])


# --- plot ----------------------------------------------------------------------------------------
def plot_loss_curves(runs: list[RunSummary], out: Path, x: str = "tokens") -> Path:
    """Train loss and held-out loss in two panels side by side, one colour per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    col = 1 if x == "tokens" else 0
    for i, r in enumerate(runs):
        color = f"C{i % 10}"
        for ax, name, marker in ((axes[0], "train/loss", None), (axes[1], "val/loss", "o")):
            if name in r.curves:
                ax.plot(r.curves[name][col], r.curves[name][2], color=color, marker=marker, markersize=3,
                        label=r.name)
    for ax, title in zip(axes, ("train loss", "held-out loss")):
        ax.set_title(title)
        ax.set_xlabel("tokens seen" if x == "tokens" else "step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("cross-entropy (nats/token)")
    if any(ax.get_legend_handles_labels()[0] for ax in axes):
        (axes[1] if axes[1].get_legend_handles_labels()[0] else axes[0]).legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
