"""A tiny random LlamaForCausalLM with a locally trained tokenizer: SmolLM-135M's shape, at toy size.

It stands in for `HuggingFaceTB/SmolLM-135M` in tests and in `run_pipeline --quick`, so the whole MoE
pipeline runs offline on a CPU in seconds. Same architecture family (tied embeddings, GQA, SwiGLU MLP).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from smol_experiments.moe.domains import PACKAGED_DOMAINS, SYNTHETIC_DOMAINS, synthetic_documents
from smolhub_hub.data.tokenizer import train_bpe

TINY_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512)


def tiny_tokenizer(vocab_size: int = 512, docs_per_domain: int = 200, seed: int = 0):
    """A byte-level BPE trained on the three synthetic domains."""
    texts = [t for d in SYNTHETIC_DOMAINS for t in synthetic_documents(d, docs_per_domain, seed)]
    return train_bpe(texts, vocab_size=vocab_size)


def tiny_llama(tokenizer, seed: int = 0, **overrides):
    """A randomly initialised LlamaForCausalLM sized for CPU tests (fp32, eval mode)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), tie_word_embeddings=True, rms_norm_eps=1e-5,
                         bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **{**TINY_SHAPE, **overrides})
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def save_tiny_dense(path: str | Path, seed: int = 0):
    """Write a tiny dense model + tokenizer folder that `upcycle --model PATH` accepts; returns the path."""
    path = Path(path)
    tokenizer = tiny_tokenizer(seed=seed)
    tiny_llama(tokenizer, seed=seed).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_tiny_moe(path: str | Path, num_experts: int = 3, top_k: int = 2, seed: int = 0):
    """A tiny upcycled MixtralForCausalLM + tokenizer folder (what `upcycle` writes); returns the path."""
    from smol_experiments.moe.upcycle import upcycle

    path = Path(path)
    tokenizer = tiny_tokenizer(seed=seed)
    upcycle(tiny_llama(tokenizer, seed=seed), num_experts, top_k, seed=seed).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _entries(n: int, seed: int) -> list[str]:
    """Glossary-like prose: sentences of words drawn from the built-in stories (the stories themselves repeat
    their phrases, and held-out text that repeats training text is dropped)."""
    import random

    from smolhub_hub.data.builtin import generate_stories

    words = sorted({w.strip(".,!?\"'") for story in generate_stories(50, seed=seed) for w in story.split()} - {""})
    rng = random.Random(seed)
    return [". ".join(" ".join(rng.choices(words, k=rng.randint(6, 12))).capitalize() for _ in range(4)) + "."
            for _ in range(n)]


def save_packaged_stand_in(data_dir: str | Path, files: int = 30, per_file: int = 6, seed: int = 0) -> Path:
    """A data folder laid out as `--data packaged` reads it (data_dir/NAME/NAME.jsonl for each corpus), with
    synthetic text in place of the packages: code and math cut into `files` files of `per_file` documents, the
    prose corpus one file of entries, as the Jargon File is. Returns data_dir."""
    data_dir = Path(data_dir)
    n = files * per_file
    for domain, corpus in PACKAGED_DOMAINS.items():
        if domain == "prose":
            docs, sources = _entries(n, seed), [f"jargon.txt.gz § entry {i}" for i in range(n)]
        else:
            suffix, part = (".py", ":f") if domain == "code" else (".rst.txt", " § section ")
            docs = synthetic_documents(domain, n, seed)
            sources = [f"file{i // per_file}{suffix}{part}{i % per_file}" for i in range(n)]
        (data_dir / corpus).mkdir(parents=True, exist_ok=True)
        (data_dir / corpus / f"{corpus}.jsonl").write_text(
            "".join(json.dumps({"text": t, "source": src}) + "\n" for t, src in zip(docs, sources, strict=True)))
    return data_dir
