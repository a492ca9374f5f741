"""The whole `--quick` pipeline runs offline end to end, resumes after SIGTERM, and redoes only changed stages."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from smol_experiments.alignment import run_pipeline
from smol_experiments.stages import StageInterrupted, read_marker
from smolhub_hub.errors import UserError
from tests.smol_experiments.interrupt import signal_at_call

SYSTEMS = ["copy-input", "base", "sft", "sft+dpo", "sft+cpo"]


def weights_times(root):
    return {stage: (root / stage / "model.safetensors").stat().st_mtime_ns for stage in ("sft", "dpo", "cpo")}


def test_quick_pipeline_resumes_after_sigterm_and_redoes_only_changed_stages(tmp_path, monkeypatch):
    from trl import SFTTrainer

    monkeypatch.setattr(run_pipeline, "QUICK_MODEL", {"hidden_size": 64, "num_layers": 2})  # the test checks plumbing
    monkeypatch.setattr(run_pipeline, "QUICK_TRAIN_ROWS", 200)
    root = tmp_path / "quick"
    small = ["--quick", "--output-dir", str(root), "--max-samples", "96", "--eval-samples", "16",
             "--sft-args", "--epochs 2 --save-steps 4", "--cpo-args", "--epochs 1", "--dpo-args", "--epochs 1"]
    original = signal_at_call(monkeypatch, SFTTrainer, "training_step", 6)
    with pytest.raises(StageInterrupted, match="SIGTERM at step 6 of 12"):
        run_pipeline.run(small)
    assert not (root / "pairs").exists()  # the pipeline stopped with its interrupted stage
    monkeypatch.setattr(SFTTrainer, "training_step", original)
    results = run_pipeline.run(small)
    sft_summary = read_marker(root / "sft")["summary"]
    assert sft_summary["resumed_from"].endswith("checkpoint-6") and sft_summary["global_step"] == 12

    assert list(results["systems"]) == SYSTEMS and results["rows"] == 16 and results["decoding"] == "greedy"
    for name in SYSTEMS:
        low, high = results["systems"][name]["bleu_ci"]
        assert 0.0 <= low <= results["systems"][name]["bleu"] <= high <= 1.0
    assert results["systems"]["copy-input"]["bleu"] > 0.5  # one injected error per sentence
    assert results["systems"]["copy-input"]["unchanged"] == 1.0
    assert results["compare_to"] == "sft" and set(results["comparisons"]) == set(SYSTEMS) - {"sft"}
    table = (root / "eval" / "results.md").read_text()
    assert all(f"| {name} |" in table for name in SYSTEMS) and "smoke test" in table
    assert json.loads((root / "eval" / "results.json").read_text()) == results
    assert (root / "eval" / "results.png").stat().st_size > 10_000

    weights = weights_times(root)
    assert run_pipeline.run(small) == results  # finished stages and predictions are reused
    assert weights_times(root) == weights

    changed = small[:-1] + ["--epochs 1 --beta 0.2"]
    with pytest.raises(UserError, match=r"finished dpo run made with other settings \(beta 0.5 → 0.2\).*--overwrite"):
        run_pipeline.run(changed)
    redone = run_pipeline.run(changed + ["--overwrite"])  # only DPO has other settings: only DPO is trained again
    after = weights_times(root)
    assert after["dpo"] != weights["dpo"] and {k: after[k] for k in ("sft", "cpo")} == {
        k: weights[k] for k in ("sft", "cpo")}
    assert read_marker(root / "dpo")["settings"]["beta"] == 0.2
    assert redone["systems"]["sft"] == results["systems"]["sft"]
