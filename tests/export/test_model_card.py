"""Model cards state what the checkpoint is: its license, its real size, its data and its run — never the
family's defaults — and `smolhub export` writes one beside the files."""

import json
import re

import pytest
from transformers import AutoTokenizer

from smolhub_hub import checkpoint as ckpt_io
from smolhub_hub.cli import export_to_hf
from smolhub_hub.inference import load_model
from tests.export.conftest import make_checkpoint


def _front_matter(card: str) -> dict:
    block = card.split("---\n")[1]
    return {k: json.loads(v) for k, v in (line.split(": ", 1) for line in block.strip().splitlines())}


def test_export_writes_a_card_with_the_run_s_license_size_and_data(checkpoints, tmp_path):
    out = export_to_hf(str(checkpoints["StoryLlama"]), tmp_path / "hf")
    card = (out / "README.md").read_text()
    meta = _front_matter(card)
    assert meta["license"] == "mit" and meta["library_name"] == "transformers" and "storyllama" in meta["tags"]
    assert "datasets" not in meta  # the built-in corpus is no Hub dataset
    model = load_model(str(checkpoints["StoryLlama"]), device="cpu")
    cfg = ckpt_io.read_config(checkpoints["StoryLlama"])
    for text in [f"Parameters: {model.param_counts()['total']:,}", f"Steps: {cfg['step']:,}",
                 f"tokens seen: {cfg['tokens_seen']:,}", f"{cfg['val_loss']:.4f}", "built-in offline story corpus",
                 f'AutoModelForCausalLM.from_pretrained("{out}")']:
        assert text in card, text
    assert not re.search(r"~\d+M|TinyStories", card)  # the family's default size and data are not this model's


def test_exported_tokenizer_knows_the_model_s_context(checkpoints, tmp_path):
    out = export_to_hf(str(checkpoints["SmolMixtral"]), tmp_path / "hf")
    context = load_model(str(checkpoints["SmolMixtral"]), device="cpu").max_seq_len
    assert AutoTokenizer.from_pretrained(out).model_max_length == context


@pytest.mark.parametrize("tokenizer, license_id", [("gpt2", "mit"), ("hf-internal-testing/llama-tokenizer", "llama2")])
def test_card_license_follows_the_tokenizer_and_records_the_hub_dataset(tokenizer, license_id, bpe_tokenizer,
                                                                       tmp_path, monkeypatch):
    """A Hub dataset id goes to `datasets:`; the Llama-2 tokenizer brings its license into the weights."""
    from smolhub_hub.compare import summarize_checkpoint
    from smolhub_hub.model_card import render_export_card

    ckpt = make_checkpoint(tmp_path / "run", "StoryLlama", bpe_tokenizer)
    model = load_model(str(ckpt), device="cpu")
    model.checkpoint_config["data"].update(dataset="roneneldan/TinyStories", tokenizer=tokenizer)
    card = render_export_card(model, summarize_checkpoint(ckpt, None), tmp_path / "out")
    meta = _front_matter(card)
    assert meta["license"] == license_id and meta["datasets"] == ["roneneldan/TinyStories"]
    assert "`roneneldan/TinyStories`; data license: CDLA-Sharing-1.0" in card
