"""Training through the real CLI: it learns, resumes exactly, runs under torchrun, and fails clearly."""

import subprocess
import sys

import pytest
import torch

from smolhub_hub.checkpoint import LATEST
from smolhub_hub.training.metrics import series
from tests.helpers import REPO, interrupted_copy, latest_weights, run_cli, tiny_run_args


def test_quick_preset_learns(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("StoryLlama/trainer.py", "--preset", "quick", "--out-dir", out, "--max-steps", "120",
                   "--eval-interval", "20", "--eval-batches", "4", "--sample-interval", "0",
                   "--builtin-stories", "2000", check=True)
    val = series(out / "metrics.csv")["val/loss"][1]
    assert val[-1] < 0.55 * val[0], val   # ln(vocab) ~ 6.7 at the start
    assert val[-1] < 2.6
    assert "held-out loss" in proc.stdout and "sample: Once upon a time" in proc.stdout
    assert (out / "loss_curve.png").exists() and (out / LATEST).exists()


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    full = tmp_path / "full"
    run_cli("StoryLlama/trainer.py", *tiny_run_args(full, steps=16, extra=["--keep-last", "3"]), check=True)
    # "Interrupt" after step 8: keep only the step-8 checkpoint, then --resume.
    part = tmp_path / "part"
    interrupted_copy(full, part, at_step=8, drop_step=16)
    proc = run_cli("StoryLlama/trainer.py", "--resume", "--out-dir", part, "--max-steps", "16", check=True)
    assert "resumed" in proc.stdout
    a, b = latest_weights(full), latest_weights(part)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    la, lb = series(full / "metrics.csv")["train/loss"], series(part / "metrics.csv")["train/loss"]
    assert la == lb


def test_two_process_torchrun_matches_one_process(tmp_path):
    common = ["--batch-size", "4", "--total-batch-tokens", str(4 * 2 * 128)]
    one, two = tmp_path / "one", tmp_path / "two"
    run_cli("StoryLlama/trainer.py", *tiny_run_args(one, steps=6, extra=common), check=True)
    env = {"OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(REPO / "StoryLlama/trainer.py"), *map(str, tiny_run_args(two, steps=6, extra=common))],
                          capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**__import__("os").environ, **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout and "2 micro-step" not in proc.stdout
    a, b = latest_weights(one), latest_weights(two)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=2e-5), k
    la, lb = series(one / "metrics.csv")["train/loss"][1], series(two / "metrics.csv")["train/loss"][1]
    assert la == pytest.approx(lb, abs=1e-4)


@pytest.mark.parametrize("args, message", [
    (["--preset", "nope"], "invalid choice"),
    (["--no-such-flag"], "unrecognized arguments"),
    (["--lr", "abc"], "invalid float value"),
    (["--dataset", "/no/such/file.txt", "--max-steps", "1"], "does not exist"),
    (["--resume", "--out-dir", "{tmp}/empty"], "no checkpoint"),
    (["--preset", "quick", "--seq-len", "4096", "--max-steps", "1", "--builtin-stories", "200"],
     "longer than the model's context"),
])
def test_cli_mistakes_are_one_clear_line_and_exit_2(tmp_path, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = run_cli("StoryLlama/trainer.py", "--out-dir", tmp_path / "r", *args) if "--out-dir" not in args \
        else run_cli("StoryLlama/trainer.py", *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_existing_run_is_never_overwritten_by_accident(llama_run):
    before = (llama_run / LATEST).read_text()
    proc = run_cli("StoryLlama/trainer.py", *tiny_run_args(llama_run, steps=2))
    assert proc.returncode == 2 and "--resume" in proc.stderr
    assert (llama_run / LATEST).read_text() == before


def test_init_from_a_transformers_llama(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "hf")
    out = tmp_path / "run"
    proc = run_cli("StoryLlama/trainer.py", *tiny_run_args(out, steps=2, extra=["--init-from", tmp_path / "hf",
                                                                             "--dropout", "0.1"]), check=True)
    assert "0.10M parameters" in proc.stdout or "parameters" in proc.stdout
    import json
    saved = json.loads((out / (out / LATEST).read_text().strip() / "config.json").read_text())["model"]
    assert (saved["dim"], saved["n_layers"], saved["n_kv_heads"], saved["vocab_size"]) == (64, 2, 2, 512)
    assert saved["dropout"] == 0.1  # a training setting: from the command line, not the imported checkpoint
