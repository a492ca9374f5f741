"""`smolhub export --format gguf`: transformers' own GGUF loader (`gguf_file=`) reads the file back as the
model SmolHub computes, with the same tokenizer; what llama.cpp needs to accept the tokenizer is declared."""

import pytest
import torch

from smolhub_hub import cli
from smolhub_hub.cli import export_to_gguf
from smolhub_hub.errors import UserError
from smolhub_hub.export.gguf import encode_tensor
from smolhub_hub.generation import SamplingConfig, generate
from smolhub_hub.inference import load_model
from tests.export.conftest import PROMPT, make_checkpoint

gguf = pytest.importorskip("gguf", reason="the gguf package is installed by `bash install.sh --dev`")
GREEDY = 20


@pytest.fixture(scope="module")
def gguf_checkpoints(checkpoints, bpe_tokenizer, tmp_path_factory):
    # transformers' GGUF loader reads GPT-2's context_length into an unused field and builds 1024 positions,
    # so the GPT-2 round trip uses a model with GPT-2's context (llama.cpp reads any context_length).
    gpt2 = make_checkpoint(tmp_path_factory.mktemp("gpt2") / "run", "SmolTransformer", bpe_tokenizer, max_seq_len=1024)
    return {"StoryLlama": checkpoints["StoryLlama"], "SmolTransformer": gpt2}


def _read_back(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()
    return model, AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def _as_stored(model, outtype: str):
    """`model` with each matrix rounded as the file stores it (f16, or q8_0 blocks), read back to fp32."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                data, ggml_type = encode_tensor(p.numpy(), outtype, keep_f32="pos_emb" in name)
                p.copy_(torch.from_numpy(gguf.quants.dequantize(data, ggml_type)).reshape(p.shape))
    return model


# |logits - SmolHub fp32 logits| / max |logits|: the rounding of the stored weights, nothing else
ROUNDING = {"f16": 2e-3, "q8_0": 5e-2}


@pytest.mark.parametrize("outtype", ["f16", "q8_0"])
@pytest.mark.parametrize("family", ["StoryLlama", "SmolTransformer"])
def test_gguf_reads_back_as_the_same_function(family, outtype, gguf_checkpoints, tmp_path):
    path = export_to_gguf(str(gguf_checkpoints[family]), tmp_path / "gguf", outtype)
    hf, tok = _read_back(path)
    ours = load_model(str(gguf_checkpoints[family]), device="cpu")
    ids = tok(PROMPT, return_tensors="pt")["input_ids"]
    assert ids[0].tolist() == ours.tokenizer(PROMPT)["input_ids"]
    with torch.no_grad():
        theirs, exact = hf(ids).logits, ours(ids).logits
        stored = _as_stored(ours, outtype)
        assert (theirs - stored(ids).logits).abs().max() < 1e-4  # the same function, weights as stored
    assert (theirs - exact).abs().max() < ROUNDING[outtype] * exact.abs().max()
    greedy = hf.generate(ids, max_new_tokens=GREEDY, min_new_tokens=GREEDY, do_sample=False,
                         pad_token_id=tok.pad_token_id)
    assert torch.equal(greedy, generate(stored, ids, SamplingConfig(max_new_tokens=GREEDY, greedy=True)))


def test_the_declared_pre_tokenizer_splits_text_as_the_tokenizer_does(bpe_tokenizer):
    """"gpt-2" makes llama.cpp split with GPT-2's regex; SmolHub's ByteLevel pre-tokenizer splits identically."""
    import regex

    from smolhub_hub.export.gguf import GPT2_SPLIT, pre_tokenizer_name

    assert pre_tokenizer_name(bpe_tokenizer) == "gpt-2"
    text = "Lily's  dog—it'll run 3,000 miles!\n\n  Tom said: \"ok\"\t été 你好 123abc  "
    ours = [span for _, span in bpe_tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)]
    assert ours == [m.span() for m in regex.finditer(GPT2_SPLIT, text)]


def test_gguf_metadata_declares_the_tokenizer_for_llama_cpp(checkpoints, tmp_path):
    path = export_to_gguf(str(checkpoints["StoryLlama"]), tmp_path / "g", "q8_0")
    reader = gguf.GGUFReader(path)

    def field(key):
        f = reader.fields[key]
        return f.contents()

    ours = load_model(str(checkpoints["StoryLlama"]), device="cpu")
    eos = ours.tokenizer.eos_token_id
    assert field("general.architecture") == "llama" and field("tokenizer.ggml.model") == "gpt2"
    assert field("tokenizer.ggml.pre") == "gpt-2" and field("tokenizer.ggml.add_bos_token") is False
    assert field("tokenizer.ggml.eos_token_id") == eos and field("llama.rope.freq_base") == ours.config.rope_base
    tokens, types = field("tokenizer.ggml.tokens"), field("tokenizer.ggml.token_type")
    assert len(tokens) == ours.config.vocab_size and tokens[-1] == f"[PAD{len(tokens) - 1}]"
    assert types[eos] == gguf.TokenType.CONTROL and types[-1] == gguf.TokenType.UNUSED
    assert {t.name: t.tensor_type.name for t in reader.tensors}["blk.0.attn_q.weight"] == "Q8_0"
    assert "output.weight" not in {t.name for t in reader.tensors}  # tied: llama.cpp reuses token_embd
    assert "gguf_file=\"model-q8_0.gguf\"" in (path.parent / "README.md").read_text()
    assert (path.parent / "Modelfile").read_text().startswith("FROM ./model-q8_0.gguf\n")


@pytest.mark.parametrize("family", ["SmolMixtral", "StoryKimi"])
def test_gguf_export_of_an_architecture_transformers_cannot_read_is_refused(family, checkpoints, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["export", str(checkpoints[family]), str(tmp_path / "g"), "--format", "gguf"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"no GGUF export for {family}" in err and "--format hf" in err
    assert not (tmp_path / "g").exists()


def test_an_rmsnorm_smoltransformer_is_refused_before_anything_is_written(bpe_tokenizer, tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "run", "SmolTransformer", bpe_tokenizer, norm="rmsnorm")
    with pytest.raises(SystemExit) as e:
        cli.main(["export", str(ckpt), str(tmp_path / "g"), "--format", "gguf"])
    assert e.value.code == 2 and "--norm layernorm" in capsys.readouterr().err and not (tmp_path / "g").exists()


def test_a_tokenizer_llama_cpp_would_split_differently_is_refused():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from smolhub_hub.export.gguf import pre_tokenizer_name

    raw = Tokenizer(models.BPE(vocab={"a": 0, "b": 1}, merges=[]))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(UserError, match="pre-tokenizer Whitespace.*--format hf"):
        pre_tokenizer_name(PreTrainedTokenizerFast(tokenizer_object=raw))
