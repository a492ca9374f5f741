"""Offline stand-ins for SmolLM-135M and CoEdIT: a tiny random Llama and a synthetic GEC dataset.

The dataset takes sentences from the built-in story corpus and injects the errors CoEdIT's `gec` task
fixes (subject-verb agreement, articles, spelling), phrased like CoEdIT rows: `src` is an instruction
plus the broken sentence, `tgt` the original. Used by the tests and by `run_pipeline --quick`.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
from pathlib import Path

from smol_experiments.alignment.prompt_format import make_completion, make_prompt
from smolhub_hub.data.builtin import generate_stories
from smolhub_hub.data.tokenizer import train_bpe

INSTRUCTIONS = ["Fix grammar", "Fix grammatical errors in this sentence",
                "Remove all grammatical errors from this text", "Fix the grammar mistakes",
                "Improve the grammaticality"]
AGREEMENT_SWAPS = {"was": "were", "were": "was", "is": "are", "are": "is", "has": "have", "does": "do"}


def story_sentences(num_stories: int, seed: int) -> list[str]:
    """Distinct sentences of 4 to 18 words, in a fixed order."""
    seen, out = set(), []
    for story in generate_stories(num_stories, seed):
        for sentence in re.split(r"(?<=[.!?])\s+", story.replace("\n", " ")):
            n_words = len(sentence.split())
            if 4 <= n_words <= 18 and sentence not in seen:
                seen.add(sentence)
                out.append(sentence)
    return out


def _break_agreement(words: list[str], rng: random.Random) -> bool:
    spots = [i for i, w in enumerate(words) if w in AGREEMENT_SWAPS]
    if not spots:
        return False
    i = rng.choice(spots)
    words[i] = AGREEMENT_SWAPS[words[i]]
    return True


def _break_article(words: list[str], rng: random.Random) -> bool:
    spots = [i for i, w in enumerate(words) if w.lower() in ("a", "an", "the") and i + 1 < len(words)]
    if not spots:
        return False
    i = rng.choice(spots)
    if words[i].lower() == "the":
        del words[i]
    else:
        words[i] = {"a": "an", "an": "a", "A": "An", "An": "A"}[words[i]]
    return True


def _break_spelling(words: list[str], rng: random.Random) -> bool:
    spots = [i for i, w in enumerate(words) if w.isalpha() and len(w) >= 4]
    if not spots:
        return False
    i = rng.choice(spots)
    w = words[i]
    j = rng.randrange(1, len(w) - 2)
    words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    return words[i] != w


def inject_error(sentence: str, rng: random.Random) -> str:
    """The sentence with one error of a random kind (falls back to another kind when one doesn't apply)."""
    breakers = [_break_agreement, _break_article, _break_spelling]
    rng.shuffle(breakers)
    for breaker in breakers:
        words = sentence.split()
        if breaker(words, rng):
            return " ".join(words)
    return sentence


def synthetic_gec_rows(num_rows: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    sentences = story_sentences(max(20, num_rows // 3), seed)
    rng.shuffle(sentences)
    rows = []
    for sentence in sentences[:num_rows]:
        broken = inject_error(sentence, rng)
        rows.append({"task": "gec", "src": f"{rng.choice(INSTRUCTIONS)}: {broken}", "tgt": sentence})
    return rows


def write_synthetic_gec(folder: str | Path, num_train: int = 400, num_validation: int = 60, seed: int = 0) -> Path:
    """`train.jsonl` and `validation.jsonl` (disjoint sentences), plus a few non-gec rows the loader must drop."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = synthetic_gec_rows(num_train + num_validation, seed)
    splits = {"train": rows[:num_train], "validation": rows[num_train:]}
    for split, split_rows in splits.items():
        other_task = {"task": "paraphrase", "src": "Paraphrase this: The cat sat.", "tgt": "The cat was sitting."}
        lines = [json.dumps(r) for r in split_rows + [other_task]]
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def write_tiny_model(folder: str | Path, data_folder: str | Path, hidden_size: int = 64, num_layers: int = 2,
                     vocab_size: int = 1024, seed: int = 0) -> Path:
    """A randomly initialised LlamaForCausalLM and a BPE tokenizer trained on the GEC prompts, saved as a folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    rows = [json.loads(line) for line in (Path(data_folder) / "train.jsonl").read_text().splitlines()]
    texts = [make_prompt(r["src"]) + make_completion(r["tgt"]) for r in rows]
    tokenizer = train_bpe(texts, vocab_size=vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def force_offline_hub(monkeypatch) -> None:
    """Make the Hub unreachable for this test, even if huggingface_hub was imported before HF_HUB_OFFLINE was set."""
    import datasets
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


@contextlib.contextmanager
def torch_threads(n: int):
    """Run with `n` torch threads: for the tiny model, thread start-up and contention cost more than they give."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
