"""Pictures and one self-contained HTML report for continued pretraining and specialization runs.

    python -m smol_experiments.moe.analyze --cpt runs/moe/cpt --specialize runs/moe/specialize --output runs/moe/report

Writes PNGs (training curves, expert load / active share / router entropy over training, domain × expert
routing heatmaps before/after averaged and per layer, routing accuracy per layer, token-level routing)
and report.html with every image embedded (base64), so the report is one file to share.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from smol_experiments.flags import Parser, path, positive_int  # noqa: E402
from smol_experiments.stages import check_output_folder, stage_main  # noqa: E402
from smolhub_hub.errors import UserError  # noqa: E402
from smolhub_hub.training.metrics import METRICS_CSV, series  # noqa: E402

Series = dict[str, tuple[list[int], list[float]]]  # metric name -> (steps, values), as metrics.series reads them
LOAD = re.compile(r"val/moe/layer(\d+)/load_e(\d+)")

EXPERT_COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7"]


def _color(expert: int) -> str:
    return EXPERT_COLORS[expert % len(EXPERT_COLORS)]


def _series(metrics: Series, name: str) -> tuple[list[int], list[float]]:
    return metrics.get(name, ([], []))


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _integer_ticks(axis):
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def expert_loads(metrics: Series) -> tuple[list[int], np.ndarray]:
    """The evaluations' steps and each expert's load at them, (steps, layers, experts), from `val/moe/...` rows."""
    found = {tuple(map(int, m.groups())): metrics[name] for name in metrics if (m := LOAD.fullmatch(name))}
    steps = sorted({s for xs, _ in found.values() for s in xs})
    n_layers, n_experts = 1 + max(layer for layer, _ in found), 1 + max(expert for _, expert in found)
    grid = np.zeros((len(steps), n_layers, n_experts))
    index = {s: i for i, s in enumerate(steps)}
    for (layer, expert), (xs, ys) in found.items():
        for s, load in zip(xs, ys, strict=True):
            grid[index[s], layer, expert] = load
    return steps, grid


def expert_load_figure(metrics: Series):
    """Load per expert (mean over layers, band = min..max layer) plus active share and router entropy."""
    steps, grid = expert_loads(metrics)
    n_experts = grid.shape[2]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    for e in range(n_experts):
        ax1.plot(steps, grid[:, :, e].mean(1), marker="o", color=_color(e), label=f"expert {e}")
        ax1.fill_between(steps, grid[:, :, e].min(1), grid[:, :, e].max(1), color=_color(e), alpha=0.15)
    ax1.axhline(1 / n_experts, color="gray", ls="--", lw=1, label=f"uniform (1/{n_experts})")
    ax1.set(title="expert load (band: min–max over layers)", xlabel="step", ylabel="share of top-k slots",
            ylim=(0, min(1.0, 1.25 * max(grid.max(), 1 / n_experts))))
    ax1.legend(fontsize=8)
    for key, style in (("active_share", "-o"), ("router_entropy", "-s")):
        ax2.plot(*_series(metrics, f"val/{key}"), style, label=key.replace("_", " "))
    ax2.set(title="share of active experts, router entropy", xlabel="step", ylabel="share / entropy ÷ log E",
            ylim=(0, 1.05))
    ax2.legend(fontsize=8)
    return fig


EXPERT_LOAD_CAPTION = ("Expert load over training: each expert's share of the top-k routing slots (mean over layers, "
                       "band: min–max over layers; dashed: the uniform share). Right: the share of experts that "
                       "receive tokens, and the router entropy normalised by its maximum log E.")


def training_curves_figure(metrics: Series):
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    for key, label in (("train/lm_loss", "train"), ("val/loss", "held-out")):
        ax1.plot(*_series(metrics, key), marker="." if key == "train/lm_loss" else "o", label=label)
    ax1.set(title="LM loss", xlabel="step", ylabel="cross-entropy (nats/token)")
    ax1.legend()
    for key, label in (("train/balance_loss", "train"), ("val/balance_loss", "held-out")):
        ax2.plot(*_series(metrics, key), marker="o", label=label)
    ax2.set(title="load-balancing loss", xlabel="step", ylabel="balance loss (1.0 = balanced)")
    ax2.legend()
    return fig


def plot_pretraining(run_dir: str | Path) -> list[tuple[Path, str]]:
    """The continued-pretraining pictures, written next to the run: (path, caption) each."""
    run_dir = Path(run_dir)
    metrics = series(run_dir / METRICS_CSV)
    return [(_save(training_curves_figure(metrics), run_dir / "training_curves.png"),
             "Continued pretraining: language-model loss on training batches and held-out documents (left); "
             "load-balancing loss, 1.0 when the tokens are spread evenly over the experts (right)."),
            (_save(expert_load_figure(metrics), run_dir / "expert_load.png"), EXPERT_LOAD_CAPTION)]


def specialization_figure(metrics: Series, domains: list[str], stage_a_steps: int):
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8), layout="constrained")
    for key in ("lm_loss", "guide_loss", "balance_loss"):
        axes[0].plot(*_series(metrics, f"train/{key}"), label=key.replace("_", " "))
    axes[0].set(title="training losses", xlabel="step", ylabel="loss")
    axes[0].legend(fontsize=8)
    for d, name in enumerate(domains):
        axes[1].plot(*_series(metrics, f"val/routing_accuracy/{name}"), marker="o", color=_color(d), label=name)
        axes[2].plot(*_series(metrics, f"val/loss/{name}"), marker="o", color=_color(d), label=name)
    axes[1].axhline(0.9, color="gray", ls="--", lw=1)
    axes[1].set(title="held-out routing accuracy (mean over layers)", xlabel="step", ylabel="routing accuracy",
                ylim=(0, 1.02))
    axes[2].set(title="held-out LM loss per domain", xlabel="step", ylabel="cross-entropy (nats/token)")
    for ax in axes[1:]:
        ax.legend(fontsize=8)
    for ax in axes:
        ax.axvline(stage_a_steps + 0.5, color="k", lw=0.8, ls=":")  # stage A | stage B
    return fig


def plot_specialization(run_dir: str | Path) -> list[tuple[Path, str]]:
    """The specialization pictures, written next to the run: (path, caption) each."""
    run_dir = Path(run_dir)
    metrics = series(run_dir / METRICS_CSV)
    stage_a_steps = json.loads((run_dir / "config.json").read_text())["stage_a_steps"]
    before = json.loads((run_dir / "routing_before.json").read_text())
    after = json.loads((run_dir / "routing_after.json").read_text())
    domains = before["domains"]
    mean_map, layer_maps = heatmap_figures(domains, before, after)
    return [
        (_save(specialization_figure(metrics, domains, stage_a_steps), run_dir / "specialization_curves.png"),
         "Specialization: training losses (left); held-out routing accuracy per domain, mean over layers, dashed at "
         "90% (middle); held-out LM loss per domain (right). The dotted line ends stage A (routers only)."),
        (_save(expert_load_figure(metrics), run_dir / "expert_load.png"), EXPERT_LOAD_CAPTION),
        (_save(mean_map, run_dir / "routing_heatmap_mean.png"),
         "Share of each domain's held-out tokens whose top-1 expert is E0, E1, …, averaged over layers: before "
         "(left) and after (right) specialization."),
        (_save(layer_maps, run_dir / "routing_heatmap_layers.png"),
         "The same shares layer by layer: before (top row) and after (bottom row) specialization."),
        (_save(accuracy_by_layer_figure(domains, before, after), run_dir / "routing_accuracy_by_layer.png"),
         "Held-out routing accuracy per layer (share of a domain's tokens whose top-1 expert is the domain's "
         "expert): dashed before, solid after specialization."),
    ]


def _heatmap(ax, share: np.ndarray, domains: list[str], title: str, annotate: bool = True):
    image = ax.imshow(share, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(share.shape[1]), [f"E{e}" for e in range(share.shape[1])])
    ax.set_yticks(range(len(domains)), domains)
    ax.set_title(title, fontsize=9)
    if annotate:
        for (i, j), v in np.ndenumerate(share):
            ax.text(j, i, f"{v:.0%}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 else "k")
    return image


def heatmap_figures(domains: list[str], before: dict, after: dict):
    """domain × expert top-1 shares: averaged over layers, and one small map per layer; before | after."""
    b, a = np.array(before["domain_expert_share"]), np.array(after["domain_expert_share"])  # (D, L, E)
    mean_map, axes = plt.subplots(1, 2, figsize=(8, 3.4), layout="constrained")
    for ax, share, title in zip(axes, (b, a), ("before", "after"), strict=True):
        image = _heatmap(ax, share.mean(1), domains, f"{title}: mean over layers")
        ax.set_xlabel("top-1 expert")
    axes[0].set_ylabel("domain")
    mean_map.colorbar(image, ax=axes, label="share of the domain's tokens", shrink=0.9)
    n_layers = b.shape[1]
    layer_maps, axes = plt.subplots(2, n_layers, figsize=(max(6, 1.6 * n_layers), 3.8), squeeze=False,
                                    layout="constrained")
    for row, (share, when) in enumerate(((b, "before"), (a, "after"))):
        for layer in range(n_layers):
            _heatmap(axes[row, layer], share[:, layer], domains if layer == 0 else [""] * len(domains),
                     f"{when}, layer {layer}", annotate=n_layers <= 8)
        axes[row, 0].set_ylabel("domain")
    for ax in axes[1]:
        ax.set_xlabel("top-1 expert")
    return mean_map, layer_maps


def accuracy_by_layer_figure(domains: list[str], before: dict, after: dict):
    fig, ax = plt.subplots(figsize=(7, 3.5), layout="constrained")
    for d, name in enumerate(domains):
        ax.plot(np.array(before["routing_accuracy"][d]), "--", color=_color(d), label=f"{name} before")
        ax.plot(np.array(after["routing_accuracy"][d]), "-o", color=_color(d), label=f"{name} after")
    ax.set(title="held-out routing accuracy per layer", xlabel="layer", ylabel="routing accuracy", ylim=(0, 1.02))
    _integer_ticks(ax.xaxis)
    ax.legend(fontsize=7, ncol=2)
    return fig


@torch.no_grad()
def token_routing(model, tokenizer, text: str, layer: int, max_tokens: int) -> list[tuple[str, int]]:
    """Each token of `text` (first `max_tokens`) with its top-1 expert at `layer`."""
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids[:, :max_tokens]
    out = model(input_ids=ids.to(model.device), output_router_logits=True, use_cache=False)
    experts = out.router_logits[layer].argmax(-1).tolist()
    return [(tokenizer.decode([t]), e) for t, e in zip(ids[0].tolist(), experts, strict=True)]


def routing_html(tokens: list[tuple[str, int]]) -> str:
    spans = (f'<span style="background:{_color(e)}33;border-bottom:3px solid {_color(e)}" title="expert {e}">'
             f"{html.escape(t)}</span>" for t, e in tokens)
    return '<div class="tokens">' + "".join(spans) + "</div>"


TOKEN_FONT_PT, LINE_IN, LEFT_IN, WIDTH_IN = 7, 0.24, 1.1, 12.0
CHAR_IN = 0.62 * TOKEN_FONT_PT / 72  # width of one monospace character


def _wrap_tokens(tokens: list[tuple[str, int]]) -> list[list[tuple[str, int, float]]]:
    """Tokens as lines of (shown text, expert, x in inches), wrapped at the figure's width."""
    lines, line, x = [], [], LEFT_IN
    for text, expert in tokens:
        shown = text.replace("\n", "⏎")
        width = CHAR_IN * max(1, len(shown)) + 0.04
        if line and x + width > WIDTH_IN - 0.1:
            lines.append(line)
            line, x = [], LEFT_IN
        line.append((shown, expert, x))
        x += width
    return lines + [line] if line else lines


def token_routing_figure(rows: dict[str, list[tuple[str, int]]], num_experts: int, title: str):
    """Tokens laid out as text, each on a box coloured by its top-1 expert, one block per domain.

    The layout is computed in inches first, so the figure is exactly as tall as the text it holds."""
    blocks = {domain: _wrap_tokens(tokens) for domain, tokens in rows.items()}
    height = 0.6 + sum(LINE_IN * len(lines) + 0.2 for lines in blocks.values()) + 0.5
    fig = plt.figure(figsize=(WIDTH_IN, height))
    fig.suptitle(title, fontsize=10, y=1 - 0.15 / height, va="top")
    y = 0.6
    for domain, lines in blocks.items():
        fig.text(0.1 / WIDTH_IN, 1 - y / height, domain, fontsize=9, weight="bold", va="top")
        for line in lines:
            for shown, expert, x in line:
                fig.text(x / WIDTH_IN, 1 - y / height, shown, fontsize=TOKEN_FONT_PT, family="monospace", va="top",
                         bbox=dict(facecolor=_color(expert), alpha=0.45, pad=0.6, edgecolor="none"))
            y += LINE_IN
        y += 0.2
    handles = [plt.Rectangle((0, 0), 1, 1, color=_color(e), alpha=0.6) for e in range(num_experts)]
    fig.legend(handles, [f"expert {e}" for e in range(num_experts)], loc="lower right", ncol=num_experts, fontsize=8)
    return fig


def _img(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _summary_table(spec_dir: Path) -> str:
    summary = json.loads((spec_dir / "summary.json").read_text())
    rows = "".join(
        f"<tr><td>{html.escape(d)}</td><td>{r['routing_accuracy_before']:.1%}</td><td>{r['routing_accuracy_after']:.1%}</td>"
        f"<td>{r['heldout_loss_before']:.3f}</td><td>{r['heldout_loss_after']:.3f}</td></tr>"
        for d, r in summary["domains"].items())
    return ("<table><tr><th>domain</th><th>routing acc. before</th><th>after</th><th>held-out loss before</th>"
            f"<th>after</th></tr>{rows}</table><p>all domains ≥ 90%: {summary['all_domains_at_least_90pct']}; "
            f"no domain's loss worse: {summary['no_domain_loss_worse']}</p>")


STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}img{max-width:100%}"
         "figcaption{color:#444;font-size:90%;margin-bottom:1.5em}"
         "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
         ".tokens{font-family:monospace;white-space:pre-wrap;line-height:1.9;border:1px solid #eee;padding:6px}")


def build_report(cpt_dir: Path | None, spec_dir: Path | None, output: Path, layer: int | None = None,
                 max_tokens: int = 120) -> Path:
    """Render every picture for the runs given and write output/report.html (self-contained)."""
    from smol_experiments.moe.engine import load_moe

    output.mkdir(parents=True, exist_ok=True)
    parts = [f"<html><head><meta charset='utf-8'><title>SmolHub MoE report</title><style>{STYLE}</style>"
             "</head><body><h1>Dense → MoE: upcycling, continued pretraining, specialization</h1>"]
    if cpt_dir is not None:
        summary = json.loads((cpt_dir / "summary.json").read_text())
        parts.append(f"<h2>Continued pretraining</h2><p>val loss {summary['val_loss_before']:.4f} → "
                     f"{summary['val_loss_after']:.4f}; share of active experts {summary['active_share_after']:.2f}; "
                     f"router entropy {summary['router_entropy_after']:.3f}</p>")
        parts += [_img(p, caption) for p, caption in plot_pretraining(cpt_dir)]
    if spec_dir is not None:
        parts.append("<h2>Specialization (held-out documents, real tokens only)</h2>" + _summary_table(spec_dir))
        parts += [_img(p, caption) for p, caption in plot_specialization(spec_dir)]
        samples = json.loads((spec_dir / "samples.json").read_text())
        config = json.loads((spec_dir / "config.json").read_text())
        device = torch.device("cpu")
        for label, model_dir in (("before", Path(config["model"])), ("after", spec_dir / "model")):
            if not model_dir.exists():
                continue
            model, tokenizer = load_moe(str(model_dir), device)
            model.eval()
            n_layers = model.config.num_hidden_layers
            at = n_layers // 2 if layer is None else layer
            if not -n_layers <= at < n_layers:
                raise UserError(f"--layer {layer} is out of range: the model has {n_layers} layers.")
            rows = {d: token_routing(model, tokenizer, text, at, max_tokens) for d, text in samples.items()}
            caption = f"Top-1 expert of each token at layer {at}, {label} specialization (one block per domain)."
            png = _save(token_routing_figure(rows, model.config.num_local_experts, caption),
                        output / f"token_routing_{label}.png")
            parts.append(f"<h3>Token-level routing {label} specialization (layer {at})</h3>" + _img(png, caption))
            parts += [f"<p><b>{html.escape(d)}</b> (expert {i})</p>{routing_html(t)}"
                      for i, (d, t) in enumerate(rows.items())]
    parts.append("</body></html>")
    path = output / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def run(argv=None) -> Path:
    p = Parser(prog="python -m smol_experiments.moe.analyze", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpt", type=path, help="continued-pretraining output folder")
    p.add_argument("--specialize", type=path, help="specialization output folder")
    p.add_argument("--output", default="runs/moe/report", type=path, help="folder for report.html and token pictures")
    p.add_argument("--layer", type=int, default=None, help="layer for token-level routing (default: middle)")
    p.add_argument("--max-tokens", type=positive_int, default=120, help="tokens shown per domain sample")
    args = p.parse_args(argv)
    if not args.cpt and not args.specialize:
        raise UserError("give --cpt DIR and/or --specialize DIR (folders written by the training scripts).")
    dirs = [Path(d) if d else None for d in (args.cpt, args.specialize)]
    for d, needed in zip(dirs, (METRICS_CSV, "routing_after.json"), strict=True):
        if d is not None and not (d / needed).exists():
            raise UserError(f"{d} has no {needed}; is it the output folder of the matching script?")
    check_output_folder(Path(args.output), "--output")
    report = build_report(*dirs, Path(args.output), args.layer, args.max_tokens)
    print(f"report: {report}")
    return report


@stage_main
def main(argv=None) -> Path:
    return run(argv)


if __name__ == "__main__":
    main()
