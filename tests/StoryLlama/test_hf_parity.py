"""StoryLlama == transformers' LlamaForCausalLM: logits to 1e-4 (fp32), identical greedy text, both ways."""

import subprocess
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, pipeline

from smolhub_hub.generation import SamplingConfig, generate
from smolhub_hub.inference import generate_text, load_model
from StoryLlama.convert import from_hf, to_hf
from tests.helpers import randomise_norms_and_biases, tiny_llama


def _hf_greedy(hf, x, n):
    return hf.generate(x, max_new_tokens=n, do_sample=False, min_new_tokens=n)


def test_export_matches_transformers_llama():
    m = randomise_norms_and_biases(tiny_llama(n_kv_heads=2, rope_base=5000.0))
    hf = to_hf(m)
    x = torch.randint(0, 97, (2, 30))
    assert (hf(x).logits - m(x).logits).abs().max() < 1e-4
    ours = generate(m, x[:, :5], SamplingConfig(max_new_tokens=20, greedy=True))
    assert torch.equal(ours, _hf_greedy(hf, x[:, :5], 20))


def test_import_from_random_transformers_llama(tmp_path):
    cfg = LlamaConfig(vocab_size=128, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=64,
                      tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 500.0})
    torch.manual_seed(0)
    randomise_norms_and_biases(LlamaForCausalLM(cfg)).save_pretrained(tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    m = from_hf(hf)
    assert m.config.n_kv_heads == 1 and not m.config.tie_embeddings
    x = torch.randint(0, 128, (2, 25))
    assert (hf(x).logits - m(x).logits).abs().max() < 1e-4
    ours = generate(m, x[:, :4], SamplingConfig(max_new_tokens=16, greedy=True))
    assert torch.equal(ours, _hf_greedy(hf, x[:, :4], 16))


def test_smolhub_export_cli_loads_offline_with_auto_classes(llama_run, tmp_path):
    out = tmp_path / "hf"
    proc = subprocess.run([sys.executable, "-m", "smolhub_hub.cli", "export", str(llama_run), str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    ours = load_model(llama_run, device="cpu")
    prompt = "Once upon a time, Lily"
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    assert (hf(ids).logits - ours(ids).logits).abs().max() < 1e-4
    # greedy text from transformers == StoryLlama's greedy text, token for token
    theirs = hf.generate(ids, max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=tok.pad_token_id)
    ours_ids = generate(ours, ids, SamplingConfig(max_new_tokens=20, greedy=True))
    assert torch.equal(theirs, ours_ids)
    pipe = pipeline("text-generation", model=str(out), device="cpu")
    assert pipe(prompt, max_new_tokens=5, do_sample=False)[0]["generated_text"].startswith(prompt)
    assert generate_text(ours, prompt, max_length=5, greedy=True).startswith(prompt)
