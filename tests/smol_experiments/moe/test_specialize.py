"""A short CPU specialization run on the synthetic domains, measured on held-out documents, and its report."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json

import pytest

from smol_experiments.moe.analyze import build_report
from smol_experiments.moe.specialize import SpecializeConfig, specialize


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_moe):
    root = tmp_path_factory.mktemp("specialize")
    cfg = SpecializeConfig(model=str(tiny_moe), output=str(root / "run"),
                           data="synthetic", train_docs=200, heldout_docs=30, max_len=96, docs_per_domain=4,
                           eval_batch_size=45, stage_a_steps=40, stage_b_steps=40, stage_a_lr=1e-2,
                           stage_b_lr=5e-4, warmup_steps=5, log_every=10, eval_every=20, precision="fp32")
    summary = specialize(cfg)
    return root / "run", summary


def test_heldout_routing_accuracy_above_90_percent_for_every_domain(run):
    run_dir, summary = run
    before = json.loads((run_dir / "routing_before.json").read_text())
    after = json.loads((run_dir / "routing_after.json").read_text())
    assert before["domains"] == ["code", "math", "stories"]
    layers = len(after["routing_accuracy"][0])
    for d, name in enumerate(after["domains"]):
        assert after["routing_accuracy_mean"][d] > 0.9, (name, after["routing_accuracy"][d])
        assert before["routing_accuracy_mean"][d] < 0.7, name  # random routers: about 1/3
        assert len(after["routing_accuracy"][d]) == layers
        assert after["tokens_per_domain"][d] > 1000  # held-out real tokens, not a handful
    assert summary["all_domains_at_least_90pct"]
    assert summary["no_domain_loss_worse"], summary


def test_report_files_are_written(run, tmp_path):
    run_dir, _ = run
    report = build_report(None, run_dir, tmp_path, max_tokens=40)
    for name in ("specialization_curves.png", "expert_load.png", "routing_heatmap_mean.png",
                 "routing_heatmap_layers.png", "routing_accuracy_by_layer.png"):
        assert (run_dir / name).stat().st_size > 5000, name
    for label in ("before", "after"):
        assert (tmp_path / f"token_routing_{label}.png").stat().st_size > 5000
    html = report.read_text()
    assert html.count("data:image/png;base64,") == 7  # five run pictures + two token pictures, embedded
    assert 'src="http' not in html and "<table>" in html and 'title="expert' in html


def test_packaged_domains_with_general_text_and_a_baseline(tmp_path, tiny_moe, capsys):
    """--data packaged (a stand-in data folder), --general-data measured but never trained on, --baseline-model
    measured once on the same held-out text (here the starting model itself: its losses are the 'before' ones)."""
    from smol_experiments.moe.fixtures import save_packaged_stand_in
    from smolhub_hub.data.builtin import generate_stories
    from smolhub_hub.training.metrics import read_metrics

    general = tmp_path / "general.jsonl"
    general.write_text("".join(json.dumps({"text": t}) + "\n" for t in generate_stories(12, seed=7)))
    cfg = SpecializeConfig(model=str(tiny_moe), output=str(tmp_path / "run"), data="packaged",
                           data_dir=str(save_packaged_stand_in(tmp_path / "data")), general_data=str(general),
                           baseline_model=str(tiny_moe), train_docs=60, heldout_docs=8, max_len=64, docs_per_domain=2,
                           eval_batch_size=24, stage_a_steps=4, stage_b_steps=4, stage_a_lr=1e-2, stage_b_lr=5e-4,
                           warmup_steps=1, log_every=2, eval_every=100, precision="fp32")
    summary = specialize(cfg)
    out = capsys.readouterr().out
    assert "baseline " in out and " general " in out
    assert summary["baseline_model"] == str(tiny_moe) and "no_domain_loss_worse_than_baseline" in summary
    assert list(summary["domains"]) == ["code", "math", "prose"]
    for row in [*summary["domains"].values(), summary["general"]]:
        assert row["heldout_loss_baseline"] == pytest.approx(row["heldout_loss_before"], abs=1e-6)
        assert row["heldout_loss_change_from_baseline"] == pytest.approx(row["heldout_loss_change"], abs=1e-6)
        assert row["heldout_loss_after"] != row["heldout_loss_before"]
    baseline = json.loads((tmp_path / "run/routing_baseline.json").read_text())
    assert baseline["general"]["heldout_loss"] == pytest.approx(summary["general"]["heldout_loss_before"])
    names = {row["name"] for row in read_metrics(tmp_path / "run/metrics.csv")}
    assert {"val/loss/general", "val/loss/prose", "val/routing_accuracy/prose"} <= names
