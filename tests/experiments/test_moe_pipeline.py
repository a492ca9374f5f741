"""The one-command pipeline (`run_pipeline --quick`) and the command-line contract of every MoE script."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from smol_experiments.moe import analyze, continued_pretraining, run_pipeline, specialize, upcycle

REPO = Path(__file__).resolve().parents[2]


def test_quick_pipeline_command_runs_end_to_end(tmp_path):
    # The real --quick command, with shorter stages so the test stays fast (same code path).
    cmd = [sys.executable, "-m", "smol_experiments.moe.run_pipeline", "--quick", "--output", str(tmp_path),
           "--cpt-args", "--steps 30 --eval-every 15 --max-documents 450",
           "--specialize-args", "--stage-a-steps 20 --stage-b-steps 20 --eval-every 10 --train-docs 120 --heldout-docs 15"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "pipeline_summary.json").read_text())
    assert summary["parity"]["greedy_identical"] and summary["parity"]["max_abs_logit_diff"] < 1e-5
    cpt = summary["continued_pretraining"]
    assert cpt["val_loss_after"] < cpt["val_loss_before"]
    with (tmp_path / "cpt" / "metrics.csv").open() as f:
        evals = [r for r in csv.DictReader(f) if r["val_loss"]]
    assert [int(r["step"]) for r in evals] == [0, 15, 30]
    assert all(0 < float(r["active_share"]) <= 1 and 0 < float(r["router_entropy"]) <= 1 for r in evals)
    loads = (tmp_path / "cpt" / "expert_load.csv").read_text().splitlines()
    assert len(loads) == 1 + 3 * 4 * 3  # header + evals x layers x experts
    assert (tmp_path / "report" / "report.html").stat().st_size > 50_000
    from transformers import AutoModelForCausalLM

    assert type(AutoModelForCausalLM.from_pretrained(tmp_path / "specialize" / "model")).__name__ == "MixtralForCausalLM"


@pytest.mark.parametrize("module", [upcycle, continued_pretraining, specialize, analyze, run_pipeline])
def test_every_script_has_help(module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    assert "usage: python -m smol_experiments.moe." in capsys.readouterr().out


def test_user_mistakes_give_one_line_and_exit_code_2(tmp_path, capsys):
    cases = [
        (continued_pretraining, ["--model", str(tmp_path / "nope")], "upcycle"),
        (specialize, ["--model", str(tmp_path), "--steps-typo"], None),
        (specialize, ["--model", str(tmp_path), "--stage-a-steps", "1", "--target-mass", "1.5"], "target-mass"),
        (continued_pretraining, ["--batch-size", "0"], "positive"),
        (analyze, ["--specialize", str(tmp_path)], "routing_after.json"),
    ]
    for module, argv, needle in cases:
        with pytest.raises(SystemExit) as exit_info:
            module.main(argv)
        assert exit_info.value.code == 2, argv
        err = capsys.readouterr().err
        if needle:
            assert err.startswith("error: ") and needle in err and err.count("\n") == 1, err
