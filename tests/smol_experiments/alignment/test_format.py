"""One prompt format: the same tokens end the prompt and begin the completion in SFT, pairs, DPO, CPO and eval.

Each stage's trainer is built on the same example and its own tokenized dataset is inspected, so a change
in TRL's tokenization (a BOS added, a stripped space) shows up here.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from smol_experiments.alignment import cpo, dpo, sft
from smol_experiments.alignment.build_preference_pairs import pairs_from_samples
from smol_experiments.alignment.fixtures import write_synthetic_gec, write_tiny_model
from smol_experiments.alignment.generation import generate_corrections
from smol_experiments.alignment.prompt_format import encode_completion, encode_prompt, make_completion, make_prompt
from smol_experiments.pretrained import load_model_and_tokenizer

SRC = "Fix grammar: Lily were happy in the park."
TGT = "Lily was happy in the park."
REJECTED = "Lily were happy in the park."


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("format")
    data = write_synthetic_gec(root / "data", num_train=60, num_validation=10)
    model_dir = write_tiny_model(root / "model", data)
    model, tokenizer = load_model_and_tokenizer(str(model_dir))
    return root, model_dir, model, tokenizer


@pytest.fixture(scope="module")
def expected(tiny):
    """The prompt ids and the chosen/rejected completion ids as the format module defines them."""
    _, _, _, tok = tiny
    prompt = make_prompt(SRC)
    return {"prompt": encode_prompt(tok, prompt),
            "chosen": encode_completion(tok, prompt, make_completion(TGT)),
            "rejected": encode_completion(tok, prompt, make_completion(REJECTED))}


def test_format_strings():
    assert make_prompt(SRC) == SRC + "\nCorrection:"
    assert make_completion(TGT) == " " + TGT
    assert make_completion("  " + TGT + "\n") == " " + TGT  # pairs from sampled text get the same leading space


def test_completion_starts_with_a_space_token_and_ends_with_eos(tiny, expected):
    _, _, _, tok = tiny
    assert tok.convert_ids_to_tokens(expected["chosen"][0]).startswith("Ġ")  # byte-level BPE's space
    assert expected["chosen"][-1] == tok.eos_token_id
    assert tok.decode(expected["prompt"]).endswith("\nCorrection:")


def test_sft_uses_the_format(tiny, expected, tmp_path):
    root, model_dir, model, tok = tiny
    args = sft.build_parser().parse_args(["--model", str(model_dir), "--output-dir", str(tmp_path)])
    rows = _rows([{"src": SRC, "tgt": TGT}])
    row = sft.build_sft_trainer(model, tok, rows, args).train_dataset[0]
    n_prompt = sum(label == -100 for label in row["labels"])
    assert row["input_ids"][:n_prompt] == expected["prompt"]
    assert row["input_ids"][n_prompt:] == expected["chosen"]
    assert row["labels"][n_prompt:] == expected["chosen"]  # loss on the completion only


def test_pairs_use_the_format():
    (pair,) = pairs_from_samples([{"src": SRC, "tgt": TGT, "samples": [TGT, " " + REJECTED + " "]}])
    assert pair["prompt"] == make_prompt(SRC)
    assert pair["chosen"] == make_completion(TGT) and pair["rejected"] == make_completion(REJECTED)


def test_dpo_uses_the_format(tiny, expected, tmp_path):
    _, model_dir, model, tok = tiny
    args = dpo.build_parser().parse_args(["--model", str(model_dir), "--dataset", "x", "--output-dir", str(tmp_path)])
    row = dpo.build_dpo_trainer(model, tok, _pair_rows(), args).train_dataset[0]
    assert row["prompt_ids"] == expected["prompt"]
    assert row["chosen_ids"] == expected["chosen"]
    assert row["rejected_ids"] == expected["rejected"]


def test_cpo_uses_the_format(tiny, expected, tmp_path):
    _, model_dir, model, tok = tiny
    args = cpo.build_parser().parse_args(["--model", str(model_dir), "--dataset", "x", "--output-dir", str(tmp_path)])
    row = cpo.build_cpo_trainer(model, tok, _pair_rows(), args).train_dataset[0]
    n_prompt = len(row["prompt_input_ids"])
    assert row["prompt_input_ids"] == expected["prompt"]
    for side in ("chosen", "rejected"):
        assert row[f"{side}_input_ids"] == expected["prompt"] + expected[side]
        assert row[f"{side}_labels"] == [-100] * n_prompt + expected[side]


def test_stock_trl_cpo_would_prepend_bos(tiny, expected, tmp_path):
    """Why cpo.py tokenizes itself: TRL's CPO puts BOS (SmolLM's <|endoftext|>) before every prompt."""
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    _, _, model, tok = tiny
    config = CPOConfig(output_dir=str(tmp_path), report_to=[], remove_unused_columns=False, bf16=False)
    row = CPOTrainer(model=model, args=config, processing_class=tok, train_dataset=_pair_rows()).train_dataset[0]
    assert row["prompt_input_ids"] == [tok.bos_token_id] + expected["prompt"]


def test_evaluation_and_pair_sampling_feed_the_format(tiny, expected):
    _, _, _, tok = tiny
    seen = []

    class RecordingModel(torch.nn.Module):
        def generate(self, input_ids, attention_mask, **kwargs):
            seen.extend(ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask, strict=True))
            return torch.cat([input_ids, torch.full((len(input_ids), 1), tok.eos_token_id)], dim=1)

    generate_corrections(RecordingModel(), tok, [make_prompt(SRC), make_prompt("Fix: a b")], temperature=0.0)
    generate_corrections(RecordingModel(), tok, [make_prompt(SRC)], temperature=1.0)
    assert len(seen) == 3 and seen.count(expected["prompt"]) == 2  # greedy (eval) and sampled (pairs)


def _rows(rows):
    from datasets import Dataset

    return Dataset.from_list(rows)


def _pair_rows():
    return _rows([{"prompt": make_prompt(SRC), "chosen": make_completion(TGT), "rejected": make_completion(REJECTED)}])
