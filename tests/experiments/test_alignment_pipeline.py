"""The whole `--quick` pipeline runs offline end to end and writes its results table."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from smol_experiments.alignment import run_pipeline
from smol_experiments.alignment.fixtures import force_offline_hub, torch_threads

SYSTEMS = ["copy-input", "base", "sft", "sft+dpo", "sft+cpo"]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    with torch_threads(1):
        yield


def test_quick_pipeline_writes_its_table_and_rerun_skips_finished_stages(tmp_path, monkeypatch):
    force_offline_hub(monkeypatch)
    monkeypatch.setattr(run_pipeline, "QUICK_MODEL", {"hidden_size": 64, "num_layers": 2})  # the test checks plumbing
    monkeypatch.setattr(run_pipeline, "QUICK_TRAIN_ROWS", 200)
    root = tmp_path / "quick"
    small = ["--quick", "--output-dir", str(root), "--max-samples", "96", "--eval-samples", "16",
             "--sft-args", "--epochs 2"]
    results = run_pipeline.run(small)

    assert list(results["systems"]) == SYSTEMS and results["rows"] == 16 and results["decoding"] == "greedy"
    for name in SYSTEMS:
        assert 0.0 <= results["systems"][name]["bleu"] <= 1.0
    assert results["systems"]["copy-input"]["bleu"] > 0.5  # one injected error per sentence
    table = (root / "eval" / "results.md").read_text()
    assert all(f"| {name} |" in table for name in SYSTEMS)
    assert json.loads((root / "eval" / "results.json").read_text()) == results
    assert (root / "eval" / "results.png").stat().st_size > 10_000

    weights = {stage: (root / stage / "model.safetensors").stat().st_mtime_ns for stage in ("sft", "dpo", "cpo")}
    assert run_pipeline.run(small) == results  # finished stages and predictions are reused
    assert weights == {stage: (root / stage / "model.safetensors").stat().st_mtime_ns for stage in weights}
