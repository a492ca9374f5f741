"""loss_curve.png and expert_load.png: the panels, scales and labels a researcher needs (checked on the figures)."""

from __future__ import annotations

import pytest

from smolhub_hub.training.metrics import MetricsLog, expert_load_figure, loss_figure, plot_run, series

EXPERTS = 4


@pytest.fixture
def run(tmp_path):
    log = MetricsLog(tmp_path)
    for step in range(10, 110, 10):
        row = {"train/loss": 5.0 / step ** 0.3, "train/lr": 1e-3 * min(1, step / 30), "train/grad_norm": 1 + 1 / step}
        for layer in range(3):
            row.update({f"train/moe/layer{layer}/load_e{e}": (e + 1) / 10 for e in range(EXPERTS)})
        log.log(step, step * 256, row)
        if step % 50 == 0:
            log.log(step, step * 256, {"val/loss": 5.2 / step ** 0.3})
    return tmp_path


def test_loss_curve_has_log_loss_learning_rate_and_gradient_norm(run):
    loss, lr, norm = loss_figure(series(run / "metrics.csv"), "run").axes
    assert loss.get_yscale() == "log" and "nats" in loss.get_ylabel()
    assert [t.get_text() for t in loss.get_legend().get_texts()] == ["train", "held-out"]
    assert lr.get_ylabel() == "learning rate" and max(lr.get_lines()[0].get_ydata()) == pytest.approx(1e-3)
    assert norm.get_ylabel() == "gradient norm" and norm.get_yscale() == "log" and norm.get_xlabel() == "step"
    assert len(norm.get_lines()[0].get_xdata()) == 10


def test_expert_load_has_labels_and_the_uniform_share(run):
    fig = expert_load_figure(series(run / "metrics.csv"))
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.lines]
    assert len(panels) == 3
    assert panels[0].get_ylabel() == "share of routed tokens"
    assert all(ax.get_xlabel() == "step" for ax in panels)  # one row: every panel is the lowest of its column
    for ax in panels:
        uniform = [line for line in ax.lines if line.get_label().startswith("uniform")]
        assert len(uniform) == 1 and set(uniform[0].get_ydata()) == {1 / EXPERTS}
    assert "expert 0" in [t.get_text() for t in fig.legends[0].get_texts()]


def test_plot_run_writes_both_pictures(run):
    assert {p.name for p in plot_run(run)} == {"loss_curve.png", "expert_load.png"}
    assert expert_load_figure({"train/loss": ([1], [2.0])}) is None  # a dense model: no expert_load.png
