"""A tiny random LlamaForCausalLM with a locally trained tokenizer: SmolLM-135M's shape, at toy size.

It stands in for `HuggingFaceTB/SmolLM-135M` in tests and in `run_pipeline --quick`, so the whole MoE
pipeline runs offline on a CPU in seconds. Same architecture family (tied embeddings, GQA, SwiGLU MLP).
"""

from __future__ import annotations

from pathlib import Path

import torch

from smol_experiments.moe.domains import SYNTHETIC_DOMAINS, synthetic_documents
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
