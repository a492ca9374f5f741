"""SFT, preference pairs, DPO and CPO on a tiny random Llama and the synthetic GEC set (offline, CPU)."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from smol_experiments.alignment import build_preference_pairs, cpo, dpo, sft
from smol_experiments.alignment.data import load_gec_examples, load_preference_pairs
from smol_experiments.alignment.fixtures import write_synthetic_gec, write_tiny_model
from smol_experiments.alignment.prompt_format import make_completion, make_prompt, strip_instruction
from smol_experiments.pretrained import load_model_and_tokenizer
from smol_experiments.stages import StageInterrupted, read_marker
from smolhub_hub.errors import UserError
from tests.smol_experiments.interrupt import signal_at_call

FAST = ["--batch-size", "16", "--logging-steps", "1", "--save-steps", "1000"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("training")
    data = write_synthetic_gec(root / "data", num_train=96, num_validation=16)
    write_tiny_model(root / "model", data)
    return root


@pytest.fixture(scope="module")
def sft_dir(workdir):
    out = workdir / "sft"
    sft.run(["--model", str(workdir / "model"), "--dataset", str(workdir / "data"), "--output-dir", str(out),
             "--learning-rate", "3e-3", "--epochs", "2", "--eval-samples", "16", *FAST])
    return out


@pytest.fixture(scope="module")
def reference_pairs(workdir):
    """chosen = the reference correction, rejected = the uncorrected input: a preference any GEC model should learn."""
    rows = load_gec_examples(str(workdir / "data"), "train", 40)
    pairs = [{"prompt": make_prompt(r["src"]), "chosen": make_completion(r["tgt"]),
              "rejected": make_completion(strip_instruction(r["src"]))}
             for r in rows if strip_instruction(r["src"]) != r["tgt"]]
    path = workdir / "reference_pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return path


def test_sft_lowers_the_completion_loss(workdir, tmp_path):
    model, tok = load_model_and_tokenizer(str(workdir / "model"))
    args = sft.build_parser().parse_args(["--model", "m", "--output-dir", str(tmp_path), "--learning-rate", "3e-3",
                                          "--epochs", "2", "--report-to", "none", *FAST])
    train = load_gec_examples(str(workdir / "data"), "train")
    held_out = load_gec_examples(str(workdir / "data"), "validation")
    trainer = sft.build_sft_trainer(model, tok, train, args, held_out)
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    assert after < before - 1.0, (before, after)


def test_sft_cli_writes_a_loadable_model_and_its_record(sft_dir):
    marker = read_marker(sft_dir)
    assert marker["stage"] == "sft" and marker["done"]
    assert marker["summary"]["eval_completion_loss"] < 6.0
    assert marker["settings"]["learning_rate"] == 3e-3 and len(marker["settings"]["model_sha256"]) == 64
    model, tok = load_model_and_tokenizer(str(sft_dir))
    assert tok.eos_token == "<|endoftext|>"


def test_pairs_are_built_saved_and_reused(workdir, sft_dir, monkeypatch):
    out = workdir / "pairs"
    argv = ["--model", str(sft_dir), "--dataset", str(workdir / "data"), "--output-dir", str(out),
            "--max-samples", "24", "--max-new-tokens", "24", "--chunk-size", "16"]
    metrics = build_preference_pairs.run(argv)
    assert metrics["pairs"] + metrics["ties_dropped"] == 24 and metrics["pairs"] > 0
    pairs = load_preference_pairs(str(out))
    assert all(p["chosen"].startswith(" ") and p["rejected"].startswith(" ") for p in pairs)
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["temperatures"] == [1.0, 0.5] and meta["model_sha256"] and meta["seed"] == 42

    def no_sampling(*args, **kwargs):
        raise AssertionError("matching pairs must be reused, not sampled again")

    monkeypatch.setattr(build_preference_pairs, "generate_corrections", no_sampling)
    assert build_preference_pairs.run(argv) == metrics
    with pytest.raises(UserError, match="temperatures"):
        build_preference_pairs.run(argv + ["--temperatures", "1.0", "0.7"])


def test_dpo_raises_the_reward_margin(workdir, sft_dir, reference_pairs, tmp_path):
    model, tok = load_model_and_tokenizer(str(sft_dir))
    pairs = load_preference_pairs(str(reference_pairs))
    args = dpo.build_parser().parse_args(["--model", str(sft_dir), "--dataset", "x", "--output-dir", str(tmp_path),
                                          "--learning-rate", "1e-3", "--epochs", "2", *FAST])
    trainer = dpo.build_dpo_trainer(model, tok, pairs, args, eval_pairs=pairs)
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert abs(before["eval_rewards/margins"]) < 1e-4  # policy == reference at the start
    assert after["eval_rewards/margins"] > 0.02, after  # beta 0.05: a log-ratio gap of 0.4 nats
    assert after["eval_rewards/accuracies"] > 0.7


def test_dpo_cli_with_precomputed_reference_log_probs(sft_dir, reference_pairs, tmp_path):
    out = tmp_path / "dpo"
    metrics = dpo.run(["--model", str(sft_dir), "--dataset", str(reference_pairs), "--output-dir", str(out),
                       "--learning-rate", "1e-3", "--precompute-ref-log-probs", "--max-samples", "16", *FAST])
    assert metrics["pairs"] == 16 and metrics["last_logged_reward_margin"] is not None
    assert (out / "model.safetensors").is_file() and read_marker(out)["done"]


def test_cpo_trains_without_a_reference_model(sft_dir, reference_pairs, tmp_path):
    model, tok = load_model_and_tokenizer(str(sft_dir))
    pairs = load_preference_pairs(str(reference_pairs))
    args = cpo.build_parser().parse_args(["--model", str(sft_dir), "--dataset", "x", "--output-dir", str(tmp_path),
                                          "--learning-rate", "1e-3", *FAST])
    trainer = cpo.build_cpo_trainer(model, tok, pairs, args)
    assert getattr(trainer, "ref_model", None) is None
    result = trainer.train()
    margins = [log["rewards/margins"] for log in trainer.state.log_history if "rewards/margins" in log]
    assert result.training_loss == result.training_loss  # not NaN
    assert margins[-1] > margins[0]


def test_a_stage_stopped_by_sigterm_resumes_from_its_checkpoint(workdir, tmp_path, monkeypatch):
    from trl import SFTTrainer

    out = tmp_path / "sft"
    argv = ["--model", str(workdir / "model"), "--dataset", str(workdir / "data"), "--output-dir", str(out),
            "--max-samples", "32", "--batch-size", "8", "--save-steps", "100", "--eval-samples", "0"]
    original = signal_at_call(monkeypatch, SFTTrainer, "training_step", 3)
    with pytest.raises(StageInterrupted, match="SIGTERM at step 3 of 4"):
        sft.run(argv)
    assert (out / "checkpoint-3").is_dir() and not read_marker(out)["done"]  # saved at the signal, not finished
    assert not (out / "model.safetensors").exists()
    monkeypatch.setattr(SFTTrainer, "training_step", original)
    metrics = sft.run(argv)
    assert metrics["resumed_from"].endswith("checkpoint-3") and metrics["global_step"] == 4
    assert (out / "model.safetensors").is_file() and read_marker(out)["done"]

    monkeypatch.setattr(SFTTrainer, "training_step", lambda *a, **k: pytest.fail("a finished run must not train"))
    assert sft.run(argv) == metrics  # the same settings: reused
    with pytest.raises(UserError, match=r"finished sft run made with other settings \(learning_rate 7e-05 → 0.001"):
        sft.run(argv + ["--learning-rate", "1e-3"])
