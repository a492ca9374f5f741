"""SmolTransformer through the real CLIs: it learns with progressive sequence length, starts from GPT-2
weights (`--init-from`), generates, and every mistake is one clear line."""

from __future__ import annotations

import pytest
import torch

from smolhub_hub.checkpoint import LATEST
from smolhub_hub.errors import UserError
from smolhub_hub.training.metrics import series
from SmolTransformer.inference import generate_text, load_model
from tests.helpers import run_cli, tiny_run_args

SMALL = ["--dim", "64", "--n-layers", "2", "--n-heads", "4"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """The quick preset (smaller), with the sequence length growing from 64 to 128 over 20 steps."""
    out = tmp_path_factory.mktemp("smoltransformer") / "run"
    proc = run_cli("SmolTransformer/trainer.py", *tiny_run_args(out, steps=50, extra=[
        *SMALL, "--seq-len", "128", "--seq-len-warmup", "20", "--log-interval", "1", "--eval-interval", "10",
        "--lr", "3e-3"]), check=True)
    return out, proc


def test_quick_preset_learns(quick_run):
    out, proc = quick_run
    val = series(out / "metrics.csv")["val/loss"][1]
    assert val[-1] < 0.7 * val[0], val  # ln(512) ~ 6.2 at the start
    assert "held-out loss" in proc.stdout and "sample: " in proc.stdout
    assert (out / "loss_curve.png").exists() and (out / LATEST).exists()


def test_sequence_length_warms_up_to_the_full_context(quick_run):
    steps, seq = series(quick_run[0] / "metrics.csv")["train/seq_len"]
    assert seq[0] == 64 and seq[-1] == 128
    assert all(a <= b for a, b in zip(seq, seq[1:], strict=False))           # grows, never shrinks
    assert len(set(seq)) > 3                                     # in several stages, not one jump
    assert all(s == 128 for st, s in zip(steps, seq, strict=True) if st > 20)  # full length once the warmup is over


def test_inference_api_and_context_guard(quick_run):
    model = load_model(str(quick_run[0]))
    text = generate_text(model, "Once upon a time", max_length=12, greedy=True)
    assert text.startswith("Once upon a time") and text == generate_text(model, "Once upon a time", 12, greedy=True)
    with pytest.raises(UserError, match="Shorten it"):
        generate_text(model, "Lily went to the park. " * 100, max_length=10)


def test_inference_cli_matches_api(quick_run):
    proc = run_cli("SmolTransformer/inference.py", "--checkpoint", quick_run[0], "--prompt", "Tom went", "--greedy",
                   "--max-length", "10", check=True)
    assert proc.stdout.strip() == generate_text(load_model(str(quick_run[0])), "Tom went", 10, greedy=True)


@pytest.fixture(scope="module")
def random_gpt2_folder(tmp_path_factory):
    """A randomly initialised GPT-2 whose vocabulary covers the tiny test tokenizer (512 ids)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("gpt2") / "random-gpt2"
    GPT2LMHeadModel(GPT2Config(vocab_size=512, n_positions=96, n_embd=64, n_layer=2, n_head=4)).save_pretrained(path)
    return path


def test_init_from_gpt2_starts_from_its_weights_and_exports_back(tmp_path, random_gpt2_folder):
    from transformers import AutoModelForCausalLM

    from smolhub_hub.cli import export_to_hf

    out = tmp_path / "ft"
    # A vanishing learning rate: the checkpoint must still be the GPT-2 we started from.
    run_cli("SmolTransformer/trainer.py", *tiny_run_args(out, steps=1, extra=[
        "--init-from", random_gpt2_folder, "--lr", "1e-12", "--min-lr", "1e-12", "--warmup-steps", "0"]), check=True)
    model = load_model(str(out))
    assert model.config.norm == "layernorm" and model.config.bias and model.config.max_seq_len == 96
    hf = AutoModelForCausalLM.from_pretrained(random_gpt2_folder).eval()
    idx = torch.randint(0, 512, (2, 96))
    exported = AutoModelForCausalLM.from_pretrained(export_to_hf(str(out), tmp_path / "hf")).eval()
    assert type(exported).__name__ == "GPT2LMHeadModel"
    with torch.no_grad():
        torch.testing.assert_close(model(idx).logits, hf(idx).logits, atol=1e-4, rtol=0)
        torch.testing.assert_close(exported(idx).logits, hf(idx).logits, atol=1e-4, rtol=0)


def test_rmsnorm_run_refuses_gpt2_export(quick_run, tmp_path):
    from smolhub_hub.cli import export_to_hf

    with pytest.raises(UserError, match="GPT-2 has no rmsnorm"):
        export_to_hf(str(quick_run[0]), tmp_path / "hf")


@pytest.mark.parametrize("args, message", [
    (["--seq-len", "4096"], "longer than the model's context"),
    (["--n-heads", "5"], "multiple of --n-heads"),
    (["--norm", "batchnorm"], "invalid choice"),
    (["--init-from", "{gpt2}", "--seq-len", "128"], "longer than the model's context (--max-seq-len 96)"),
])
def test_cli_mistakes_are_one_clear_line(tmp_path, random_gpt2_folder, capsys, args, message):
    from smolhub_hub.training import main
    from SmolTransformer.config import FAMILY

    args = [a.replace("{gpt2}", str(random_gpt2_folder)) for a in args]
    with pytest.raises(SystemExit) as exit_:  # in-process: the same entry point, without a new interpreter
        main(FAMILY, [str(a) for a in tiny_run_args(tmp_path / "r", steps=1, extra=args)])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
