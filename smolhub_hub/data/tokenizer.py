"""Tokenizers: a byte-level BPE trained on the chosen corpus, or any Hugging Face tokenizer.

Whatever the source, the result is a `transformers.PreTrainedTokenizerFast` with an EOS token, so
that it can be saved next to a checkpoint and loaded back by `AutoTokenizer` with no SmolHub code.
EOS separates documents in the packed token files; there is no padding in training.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from smolhub_hub.errors import UserError

EOS = "<|endoftext|>"
PAD = "<|pad|>"


def train_bpe(texts: Iterable[str], vocab_size: int = 4096, min_frequency: int = 2):
    """Train a byte-level BPE (GPT-2 style pre-tokenizer) on `texts`; returns a fast HF tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 300:
        raise UserError(f"--vocab-size {vocab_size} is too small for a byte-level BPE; use at least 300.")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=PAD,
                                   unk_token=None, model_max_length=1_000_000)


def load_tokenizer(name_or_path: str, fix: str = "check its files, or pass another tokenizer"):
    """Load a tokenizer by Hub id, local folder or .gguf file; a clear message when it cannot be found or read.

    `fix` ends the message when a local folder holds files that cannot be read (damaged or foreign)."""
    from transformers import AutoTokenizer

    location, kwargs = name_or_path, {}
    if Path(name_or_path).suffix == ".gguf" and Path(name_or_path).is_file():  # transformers reads it from a folder
        location, kwargs = str(Path(name_or_path).parent), {"gguf_file": Path(name_or_path).name}
    local = Path(location).exists()
    try:
        tok = AutoTokenizer.from_pretrained(location, local_files_only=not local and not _hub_ok(), **kwargs)
    except Exception as e:  # a tokenizer.json of the wrong structure raises the tokenizers library's bare Exception
        if local:
            reason = " ".join(str(e).split())[:160]
            raise UserError(f"could not load a tokenizer from {name_or_path} ({type(e).__name__}: {reason}); "
                            f"{fix}") from None
        if not isinstance(e, (OSError, ValueError)):
            raise
        raise UserError(
            f"Could not load tokenizer '{name_or_path}' (no network, or no such Hub id). "
            "Train one on your corpus instead with `--tokenizer bpe`, or pass a local tokenizer folder."
        ) from None
    return ensure_special_tokens(tok)


def tokenizer_fingerprint(tok) -> str:
    """A sha256 of what maps text to ids (vocabulary, merges, added tokens, normalizer, pre-tokenizer).

    Saving and loading the tokenizer does not change it; a checkpoint records it next to its weights, so
    that weights are never used with a tokenizer whose ids mean something else."""
    from transformers import PreTrainedTokenizerFast

    if isinstance(tok, PreTrainedTokenizerFast):  # backed by a `tokenizers` Tokenizer
        spec = json.loads(tok.backend_tokenizer.to_str())
        spec = {k: spec.get(k) for k in ("added_tokens", "normalizer", "pre_tokenizer", "model")}
    else:  # a tokenizer without a `tokenizers` backend: its vocabulary is what it has
        spec = {"vocab": sorted(tok.get_vocab().items(), key=lambda item: item[1])}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def check_fingerprint(tok, expected: str | None, where: str, fix: str):
    """Refuse `tok` unless it is the tokenizer `expected` fingerprints (None: nothing was recorded, accepted)."""
    got = tokenizer_fingerprint(tok)
    if expected is not None and got != expected:
        raise UserError(f"{where}: the tokenizer is not the one the weights were trained with (fingerprint "
                        f"{got[:12]}, the weights record {str(expected)[:12]}); {fix}")


def _hub_ok() -> bool:
    from smolhub_hub.network import hub_reachable

    return hub_reachable()


def ensure_special_tokens(tok):
    """Every SmolHub tokenizer has an EOS; PAD (used only to batch prompts) falls back to EOS."""
    if tok.eos_token is None:
        tok.add_special_tokens({"eos_token": EOS})
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def vocab_size_of(tok) -> int:
    """The number of ids the model must embed (added tokens included)."""
    return len(tok)
