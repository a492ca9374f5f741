"""Pictures and one self-contained HTML report for continued pretraining and specialization runs.

    python -m smol_experiments.moe.analyze --cpt runs/moe/cpt --specialize runs/moe/specialize --output runs/moe/report

Writes PNGs (training curves, expert load / active share / router entropy over training, domain × expert
routing heatmaps before/after averaged and per layer, routing accuracy per layer, token-level routing)
and report.html with every image embedded (base64), so the report is one file to share.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from smol_experiments.flags import Parser, path, positive_int  # noqa: E402
from smol_experiments.stages import check_output_folder, stage_main  # noqa: E402
from smolhub_hub.errors import UserError  # noqa: E402

EXPERT_COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7"]


def _color(expert: int) -> str:
    return EXPERT_COLORS[expert % len(EXPERT_COLORS)]


def _read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(int(r["step"]), float(r[key])) for r in rows if r.get(key, "") != ""]
    return [p[0] for p in pts], [p[1] for p in pts]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_expert_load(run_dir: Path, metrics: list[dict]) -> Path:
    """Load per expert (mean over layers, band = min..max layer) plus active share and router entropy."""
    loads = _read_csv(run_dir / "expert_load.csv")
    steps = sorted({int(r["step"]) for r in loads})
    n_layers = 1 + max(int(r["layer"]) for r in loads)
    n_experts = 1 + max(int(r["expert"]) for r in loads)
    grid = np.zeros((len(steps), n_layers, n_experts))
    index = {s: i for i, s in enumerate(steps)}
    for r in loads:
        grid[index[int(r["step"])], int(r["layer"]), int(r["expert"])] = float(r["load"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    for e in range(n_experts):
        ax1.plot(steps, grid[:, :, e].mean(1), marker="o", color=_color(e), label=f"expert {e}")
        ax1.fill_between(steps, grid[:, :, e].min(1), grid[:, :, e].max(1), color=_color(e), alpha=0.15)
    ax1.axhline(1 / n_experts, color="gray", ls="--", lw=1, label="uniform")
    ax1.set(title="expert load (share of top-k slots; band: min–max over layers)", xlabel="step", ylim=(0, 1))
    ax1.legend(fontsize=8)
    for key, style in (("active_share", "-o"), ("router_entropy", "-s")):
        x, y = _series(metrics, key)
        ax2.plot(x, y, style, label=key.replace("_", " "))
    ax2.set(title="share of active experts, router entropy (normalised)", xlabel="step", ylim=(0, 1.05))
    ax2.legend(fontsize=8)
    return _save(fig, run_dir / "expert_load.png")


def plot_pretraining(run_dir: str | Path) -> list[Path]:
    run_dir = Path(run_dir)
    metrics = _read_csv(run_dir / "metrics.csv")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    for key in ("train_lm_loss", "val_loss"):
        ax1.plot(*_series(metrics, key), marker="." if key == "train_lm_loss" else "o", label=key)
    ax1.set(title="continued pretraining: LM loss", xlabel="step", ylabel="nats/token")
    ax1.legend()
    for key in ("train_balance_loss", "val_balance_loss"):
        ax2.plot(*_series(metrics, key), marker="o", label=key)
    ax2.set(title="load-balancing loss (1.0 = balanced)", xlabel="step")
    ax2.legend()
    return [_save(fig, run_dir / "training_curves.png"), plot_expert_load(run_dir, metrics)]


def plot_specialization(run_dir: str | Path) -> list[Path]:
    run_dir = Path(run_dir)
    metrics = _read_csv(run_dir / "metrics.csv")
    before = json.loads((run_dir / "routing_before.json").read_text())
    after = json.loads((run_dir / "routing_after.json").read_text())
    domains = before["domains"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for key in ("lm_loss", "guide_loss", "balance_loss"):
        axes[0].plot(*_series(metrics, key), label=key)
    axes[0].set(title="specialization: training losses", xlabel="step")
    axes[0].legend(fontsize=8)
    for d, name in enumerate(domains):
        axes[1].plot(*_series(metrics, f"acc_{name}"), marker="o", color=_color(d), label=name)
        axes[2].plot(*_series(metrics, f"heldout_loss_{name}"), marker="o", color=_color(d), label=name)
    axes[1].axhline(0.9, color="gray", ls="--", lw=1)
    axes[1].set(title="held-out routing accuracy (mean over layers)", xlabel="step", ylim=(0, 1.02))
    axes[2].set(title="held-out LM loss per domain", xlabel="step")
    for ax in axes[1:]:
        ax.legend(fontsize=8)
    stage_a = [int(r["step"]) for r in metrics if r["stage"] in ("before", "A")]
    for ax in axes:
        ax.axvline(max(stage_a) + 0.5, color="k", lw=0.8, ls=":")  # stage A | stage B
    paths = [_save(fig, run_dir / "specialization_curves.png"), plot_expert_load(run_dir, metrics)]
    return paths + plot_heatmaps(run_dir, domains, before, after)


def _heatmap(ax, share: np.ndarray, domains: list[str], title: str, annotate: bool = True):
    ax.imshow(share, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(share.shape[1]), [f"E{e}" for e in range(share.shape[1])])
    ax.set_yticks(range(len(domains)), domains)
    ax.set_title(title, fontsize=9)
    if annotate:
        for (i, j), v in np.ndenumerate(share):
            ax.text(j, i, f"{v:.0%}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 else "k")


def plot_heatmaps(run_dir: Path, domains: list[str], before: dict, after: dict) -> list[Path]:
    """domain × expert top-1 shares: averaged over layers, and one small map per layer; before | after."""
    b, a = np.array(before["domain_expert_share"]), np.array(after["domain_expert_share"])  # (D, L, E)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
    _heatmap(axes[0], b.mean(1), domains, "before: top-1 expert share (mean over layers)")
    _heatmap(axes[1], a.mean(1), domains, "after")
    mean_path = _save(fig, run_dir / "routing_heatmap_mean.png")
    n_layers = b.shape[1]
    fig, axes = plt.subplots(2, n_layers, figsize=(max(6, 1.6 * n_layers), 3.8), squeeze=False)
    for layer in range(n_layers):
        small = n_layers > 8
        _heatmap(axes[0, layer], b[:, layer], domains if layer == 0 else [""] * len(domains),
                 f"before L{layer}", annotate=not small)
        _heatmap(axes[1, layer], a[:, layer], domains if layer == 0 else [""] * len(domains),
                 f"after L{layer}", annotate=not small)
    layers_path = _save(fig, run_dir / "routing_heatmap_layers.png")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for d, name in enumerate(domains):
        ax.plot(np.array(before["routing_accuracy"][d]), "--", color=_color(d), label=f"{name} before")
        ax.plot(np.array(after["routing_accuracy"][d]), "-o", color=_color(d), label=f"{name} after")
    ax.set(title="held-out routing accuracy per layer", xlabel="layer", ylim=(0, 1.02))
    ax.legend(fontsize=7, ncol=2)
    return [mean_path, layers_path, _save(fig, run_dir / "routing_accuracy_by_layer.png")]


@torch.no_grad()
def token_routing(model, tokenizer, text: str, layer: int, max_tokens: int) -> list[tuple[str, int]]:
    """Each token of `text` (first `max_tokens`) with its top-1 expert at `layer`."""
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids[:, :max_tokens]
    out = model(input_ids=ids.to(model.device), output_router_logits=True, use_cache=False)
    experts = out.router_logits[layer].argmax(-1).tolist()
    return [(tokenizer.decode([t]), e) for t, e in zip(ids[0].tolist(), experts)]


def routing_html(tokens: list[tuple[str, int]]) -> str:
    spans = (f'<span style="background:{_color(e)}33;border-bottom:3px solid {_color(e)}" title="expert {e}">'
             f"{html.escape(t)}</span>" for t, e in tokens)
    return '<div class="tokens">' + "".join(spans) + "</div>"


def plot_token_routing(rows: dict[str, list[tuple[str, int]]], num_experts: int, path: Path, title: str) -> Path:
    """Tokens laid out as text, each on a box coloured by its top-1 expert, one block per domain."""
    fig = plt.figure(figsize=(12, 1.4 + 1.3 * len(rows)))
    fig.suptitle(title, fontsize=10)
    y = 0.9
    for domain, tokens in rows.items():
        fig.text(0.01, y, domain, fontsize=9, weight="bold")
        x, y = 0.1, y
        for text, expert in tokens:
            shown = text.replace("\n", "⏎")
            width = 0.0062 * max(1, len(shown))
            if x + width > 0.99:
                x, y = 0.1, y - 0.05
            fig.text(x, y, shown, fontsize=7, family="monospace",
                     bbox=dict(facecolor=_color(expert), alpha=0.45, pad=0.6, edgecolor="none"))
            x += width + 0.002
        y -= 0.09
    handles = [plt.Rectangle((0, 0), 1, 1, color=_color(e), alpha=0.6) for e in range(num_experts)]
    fig.legend(handles, [f"expert {e}" for e in range(num_experts)], loc="lower right", ncol=num_experts, fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    name = html.escape(f"{path.parent.name}/{path.name}")
    return f'<figure><img src="data:image/png;base64,{data}" alt="{name}"><figcaption>{name}</figcaption></figure>'


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
        parts += [_img(p) for p in plot_pretraining(cpt_dir)]
    if spec_dir is not None:
        parts.append("<h2>Specialization (held-out documents, real tokens only)</h2>" + _summary_table(spec_dir))
        parts += [_img(p) for p in plot_specialization(spec_dir)]
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
            png = plot_token_routing(rows, model.config.num_local_experts, output / f"token_routing_{label}.png",
                                     f"top-1 expert per token at layer {at}, {label} specialization")
            parts.append(f"<h3>Token-level routing {label} specialization (layer {at})</h3>" + _img(png))
            parts += [f"<p><b>{html.escape(d)}</b> (expert {i})</p>{routing_html(t)}" for i, (d, t) in enumerate(rows.items())]
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
    for d, needed in zip(dirs, ("metrics.csv", "routing_after.json")):
        if d is not None and not (d / needed).exists():
            raise UserError(f"{d} has no {needed}; is it the output folder of the matching script?")
    check_output_folder(Path(args.output), "--output")
    report = build_report(*dirs, Path(args.output), args.layer, args.max_tokens)
    print(f"report: {report}")
    return report


main = stage_main(run)

if __name__ == "__main__":
    main()
