"""`smolhub compare` on runs as they are left on disk: a row cut short by a kill, and runs that differ in lr."""

from __future__ import annotations

import csv

import pytest
import torch

from smolhub_hub import cli
from smolhub_hub.checkpoint import save_checkpoint
from smolhub_hub.compare import compare, format_table, loss_curves_figure, summarize_checkpoint
from smolhub_hub.training.metrics import MetricsLog
from StoryLlama.config import FAMILY


def make_run(path, lr: float, dim: int = 32, cut_short: bool = False):
    """A run folder as the trainer leaves it (checkpoint at step 20 + metrics.csv), without training."""
    mcfg, tcfg, dcfg = FAMILY.resolve("quick", {"model": {"dim": dim, "vocab_size": 64},
                                                "train": {"lr": lr, "out_dir": str(path)}})
    torch.manual_seed(0)
    model = FAMILY.model_class()(mcfg)
    log = MetricsLog(path)
    for step in (10, 20):
        log.log(step, step * 128, {"train/loss": 3.0 / step + lr, "train/lr": lr, "train/tokens_per_s": 1000.0})
        log.log(step, step * 128, {"val/loss": 3.5 / step + lr})
    if cut_short:
        with open(path / "metrics.csv", "a") as f:
            f.write("3")  # killed while writing "30,3840,...": what is left reads as step 3, before the checkpoint
    save_checkpoint(path, 20, model, {"family": FAMILY.name, "model": mcfg.to_dict(), "train": tcfg.to_dict(),
                                      "data": dcfg.to_dict(), "step": 20, "tokens_seen": 2560,
                                      "param_counts": model.param_counts()})
    return path


def test_a_row_cut_short_by_a_kill_is_ignored_by_compare_and_push(tmp_path, capsys):
    run = make_run(tmp_path / "killed", lr=1e-3, cut_short=True)
    cli.main(["compare", str(run), "--plot", "none"])
    assert "killed" in capsys.readouterr().out
    summary = summarize_checkpoint(run / "step_0000020", run)  # what `smolhub push` writes the model card from
    assert summary.curves["train/loss"][0] == [10, 20] and summary.val_loss == pytest.approx(3.5 / 20 + 1e-3)


def test_the_table_shows_the_settings_that_differ(tmp_path, capsys):
    runs = [str(make_run(tmp_path / name, lr)) for name, lr in (("fast", 3e-3), ("slow", 3e-4))]
    cli.main(["compare", *runs, "--plot", "none"])
    header, _, fast, slow = capsys.readouterr().out.splitlines()[:4]
    assert header.split()[:4] == ["run", "family", "lr", "params"]  # out_dir differs too, but says nothing
    assert fast.split()[2] == "0.003" and slow.split()[2] == "0.0003"
    table = list(csv.DictReader(format_table(compare(runs), "csv").splitlines()))
    assert [float(r["lr"]) for r in table] == [3e-3, 3e-4]

    wider = str(make_run(tmp_path / "wide", 3e-3, dim=64))
    assert format_table(compare([runs[0], wider]), "markdown").splitlines()[0].startswith("| run | family | dim |")


def test_the_loss_plot_is_readable(tmp_path):
    runs = compare([str(make_run(tmp_path / name, lr)) for name, lr in (("a", 3e-3), ("b", 3e-4))])
    fig = loss_curves_figure(runs)
    train, held_out = fig.axes
    for ax in (train, held_out):
        assert ax.get_yscale() == "log" and ax.get_xlabel() == "tokens seen" and "nats" in ax.get_ylabel()
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
    assert all(line.get_marker() == "o" for line in held_out.get_lines())
    assert held_out.get_title() == "held-out loss"
