"""SmolMixtral through the real CLIs: it learns with routing telemetry, two torchrun processes train the same
model as one, and --init-from keeps this run's training settings."""

import os
import subprocess
import sys

import pytest
import torch

from smolhub_hub.checkpoint import LATEST
from smolhub_hub.training.metrics import series
from tests.helpers import REPO, latest_weights, run_cli, tiny_run_args
from tests.SmolMixtral.conftest import SMALL


def test_quick_preset_learns_and_logs_routing(tmp_path):
    out = tmp_path / "run"
    run_cli("SmolMixtral/trainer.py", "--preset", "quick", "--out-dir", out, "--max-steps", "40",
            "--eval-interval", "20", "--eval-batches", "4", "--sample-interval", "0", "--builtin-stories", "2000",
            "--batch-size", "8", "--seq-len", "64", "--n-layers", "2", check=True)
    s = series(out / "metrics.csv")
    val = s["val/loss"][1]
    assert val[-1] < val[0] and val[-1] < 0.45 * 7.62, val  # ln(vocab) = 7.62 untrained
    for split in ("train", "val"):
        loads = [s[f"{split}/moe/layer1/load_e{e}"][1][-1] for e in range(8)]
        assert sum(loads) == pytest.approx(1.0, abs=1e-4)
        assert 0 < s[f"{split}/moe/layer0/entropy"][1][-1] <= 2.08 and s[f"{split}/moe/active_share"][1][-1] > 0
        assert 1.0 <= s[f"{split}/moe/balance_loss"][1][-1] < 2.0  # the balance loss keeps routing near uniform
    assert s["train/aux_loss"][1][-1] == pytest.approx(0.01 * 2 * s["train/moe/balance_loss"][1][-1], rel=0.2)
    assert (out / "loss_curve.png").exists() and (out / "expert_load.png").exists()


def test_two_process_torchrun_matches_one_process(tmp_path):
    # Router noise is drawn per rank by design, so the comparison runs without it.
    common = [*SMALL, "--no-noisy-topk", "--batch-size", "4", "--total-batch-tokens", str(4 * 2 * 64)]
    one, two = tmp_path / "one", tmp_path / "two"
    run_cli("SmolMixtral/trainer.py", *tiny_run_args(one, steps=5, extra=common), check=True)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(REPO / "SmolMixtral/trainer.py"), *map(str, tiny_run_args(two, steps=5, extra=common))],
                          capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout
    a, b = latest_weights(one), latest_weights(two)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=2e-5), k
    for name in ("train/loss", "train/aux_loss"):
        assert series(one / "metrics.csv")[name][1] == pytest.approx(series(two / "metrics.csv")[name][1], abs=1e-4)


def test_init_from_keeps_this_runs_training_settings_and_refuses_another_architecture(tmp_path):
    """Before, the noise, balance and z-loss settings were replaced by the imported checkpoint's without a word,
    and an architecture flag that contradicts the source was dropped."""
    import json

    from transformers import MixtralConfig as HFMixtralConfig
    from transformers import MixtralForCausalLM

    hf = tmp_path / "hf"
    MixtralForCausalLM(HFMixtralConfig(vocab_size=512, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
                                       num_experts_per_tok=2, max_position_embeddings=128, tie_word_embeddings=True,
                                       router_aux_loss_coef=0.02)).save_pretrained(hf)
    training = ["--balance-coef", "0.05", "--z-loss-coef", "0.001", "--noisy-topk", "--moe-impl", "loop"]
    out = tmp_path / "run"
    run_cli("SmolMixtral/trainer.py", *tiny_run_args(out, steps=2, extra=["--init-from", hf, "--seq-len", "64",
                                                                          *training]), check=True)
    saved = json.loads((out / (out / LATEST).read_text().strip() / "config.json").read_text())["model"]
    assert (saved["dim"], saved["n_experts"], saved["vocab_size"]) == (64, 4, 512)  # the source's architecture
    assert (saved["balance_coef"], saved["z_loss_coef"], saved["noisy_topk"], saved["moe_impl"]) == (0.05, 0.001,
                                                                                                    True, "loop")
    assert "blocks.0.moe.router.w_noise" in latest_weights(out)  # the noise this run asked for, learned from zero
    proc = run_cli("SmolMixtral/trainer.py", *tiny_run_args(tmp_path / "other", steps=2, extra=[
        "--init-from", hf, "--n-experts", "8", "--dim", "64"]))
    assert proc.returncode == 2 and "--n-experts 4 (source) vs 8 (given)" in proc.stderr
    assert "--dim" not in proc.stderr  # equal to the source's: nothing to refuse
