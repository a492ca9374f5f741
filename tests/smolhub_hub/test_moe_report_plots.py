"""The MoE report's pictures (smol_experiments.moe.analyze): labelled axes, integer layer ticks, captions, and
no blank space."""

from __future__ import annotations

import csv

import matplotlib
import pytest

from smol_experiments.moe import analyze

matplotlib.use("Agg")
DOMAINS = ["code", "math", "stories"]
LAYERS, EXPERTS = 4, 3


def _write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)


@pytest.fixture
def cpt_dir(tmp_path):
    _write_csv(tmp_path / "metrics.csv", [
        {"step": s, "train_lm_loss": 3 - s / 100, "val_loss": 3.1 - s / 100, "train_balance_loss": 1.01,
         "val_balance_loss": 1.0, "active_share": 1.0, "router_entropy": 0.9} for s in (0, 40, 80)])
    _write_csv(tmp_path / "expert_load.csv", [{"step": s, "layer": layer, "expert": e, "load": 1 / EXPERTS}
                                              for s in (0, 40, 80) for layer in range(LAYERS) for e in range(EXPERTS)])
    return tmp_path


def _routing(accuracy: float) -> dict:
    share = [[[accuracy if e == d else (1 - accuracy) / 2 for e in range(EXPERTS)] for _ in range(LAYERS)]
             for d in range(len(DOMAINS))]
    return {"domains": DOMAINS, "domain_expert_share": share, "routing_accuracy": [[accuracy] * LAYERS] * 3}


def _labelled(fig) -> bool:
    return all(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes if ax.get_label() != "<colorbar>")


def test_every_panel_has_labelled_axes(cpt_dir):
    metrics = analyze._read_csv(cpt_dir / "metrics.csv")
    assert _labelled(analyze.training_curves_figure(metrics))
    assert _labelled(analyze.expert_load_figure(cpt_dir, metrics))
    rows = [{"step": s, "stage": "A" if s < 50 else "B", "lm_loss": 2, "guide_loss": 0.1, "balance_loss": 1,
             **{f"acc_{d}": 0.5 for d in DOMAINS}, **{f"heldout_loss_{d}": 2 for d in DOMAINS}} for s in (0, 40, 80)]
    assert _labelled(analyze.specialization_figure(rows, DOMAINS))
    mean_map, layer_maps = analyze.heatmap_figures(DOMAINS, _routing(0.4), _routing(0.95))
    assert [ax.get_xlabel() for ax in mean_map.axes[:2]] == ["top-1 expert"] * 2
    assert mean_map.axes[0].get_ylabel() == "domain" and layer_maps.axes[0].get_ylabel() == "domain"


def test_layers_are_integer_ticks(cpt_dir):
    ax = analyze.accuracy_by_layer_figure(DOMAINS, _routing(0.4), _routing(0.95)).axes[0]
    ax.figure.canvas.draw()
    ticks = [t for t in ax.get_xticks() if 0 <= t <= LAYERS - 1]
    assert ticks == list(range(LAYERS)) and ax.get_xlabel() == "layer"


def test_captions_say_what_a_picture_shows_not_its_file_name(cpt_dir):
    pictures = analyze.plot_pretraining(cpt_dir)
    assert [p.name for p, _ in pictures] == ["training_curves.png", "expert_load.png"]
    for path, caption in pictures:
        assert ".png" not in analyze._img(path, caption) and len(caption) > 40  # base64 has no "."


@pytest.mark.parametrize("n_tokens", [10, 400])
def test_token_picture_is_as_tall_as_its_text(n_tokens):
    rows = {d: [(f"tok{i} ", i % EXPERTS) for i in range(n_tokens)] for d in DOMAINS[:2]}
    fig = analyze.token_routing_figure(rows, EXPERTS, "title")
    height = fig.get_figheight()
    tokens = [t for t in fig.texts if t.get_text().startswith("tok")]
    lowest = min(t.get_position()[1] for t in tokens) * height  # inches above the bottom edge
    assert 0 < lowest < 1.2  # no blank half below the text, and nothing cut off
