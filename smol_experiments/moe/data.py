"""Text sources, the train/val split by document, packing, and padded domain batches.

Continued pretraining reads *packed* windows: documents tokenized in batches, joined with EOS, cut into
fixed-length windows (no padding). The split into train and val happens on documents, before packing,
so no document contributes to both. Specialization reads *padded* documents instead, one domain label
per document, with a mask so that padding counts in no loss and no statistic.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from smolhub_hub.data.builtin import generate_stories
from smolhub_hub.data.sources import LOCAL_SUFFIXES, SourceStats, read_local
from smolhub_hub.errors import UserError


def _local_texts(path: Path, text_column: str) -> list[str]:
    """Documents of a file or a folder, read by smolhub_hub's rules (the trainers' --dataset PATH): hidden files
    and folders skipped, UTF-8 with or without a BOM or CRLF, `.txt` split at blank lines or <|endoftext|>,
    values of `text_column` that are not text (null, numbers, lists) skipped and counted."""
    stats = SourceStats()
    values = list(read_local(path, text_column, stats, field_flag="--text-column"))
    texts = [v for v in values if isinstance(v, str)]
    if len(texts) < len(values):
        print(f"skipped {len(values) - len(texts)} values of '{text_column}' that are not text (null, numbers, "
              "lists)", flush=True)
    return texts


def _hub_texts(dataset_id: str, text_column: str, max_documents: int, seed: int) -> list[str]:
    from datasets import load_dataset

    try:
        stream = load_dataset(dataset_id, split="train", streaming=True).shuffle(seed=seed, buffer_size=10_000)
        return [row[text_column] for row in stream.take(max_documents)]
    except KeyError:
        raise UserError(f"{dataset_id} has no column '{text_column}'; pass --text-column.") from None
    except (OSError, ConnectionError, ValueError) as e:
        raise UserError(f"could not stream {dataset_id} ({str(e).splitlines()[0]}). Check the network, or use "
                        "--data builtin / --data synthetic / --data PATH for offline text.") from None


def load_texts(source: str, text_column: str = "text", max_documents: int = 10_000, seed: int = 0) -> list[str]:
    """Documents from 'builtin' (stories), 'synthetic' (three domains mixed), a local path or a Hub id."""
    if source == "builtin":
        texts = generate_stories(max_documents, seed=seed)
    elif source == "synthetic":
        from smol_experiments.moe.domains import SYNTHETIC_DOMAINS, synthetic_documents

        per = max(1, max_documents // len(SYNTHETIC_DOMAINS))
        # Seed offset: pretraining text never repeats the specialization documents (same generators).
        texts = [t for d in SYNTHETIC_DOMAINS for t in synthetic_documents(d, per, seed + 1000)]
    elif Path(source).exists():
        texts = _local_texts(Path(source), text_column)
    elif source.startswith((".", "/")) or source.endswith(LOCAL_SUFFIXES):
        raise UserError(f"--data {source}: no such file or folder.")
    else:
        texts = _hub_texts(source, text_column, max_documents, seed)
    texts = [t for t in texts if t and t.strip()][:max_documents]
    if not texts:
        raise UserError(f"--data {source} gave no documents.")
    return texts


def split_by_document(texts: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Shuffle documents (seeded) and hold out a share of whole documents for validation."""
    if not 0 < val_fraction < 1:
        raise UserError(f"--val-fraction must be between 0 and 1, got {val_fraction}.")
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(texts) * val_fraction))
    if n_val >= len(texts):
        raise UserError(f"only {len(texts)} documents: too few to hold out a validation split.")
    return [texts[i] for i in order[n_val:]], [texts[i] for i in order[:n_val]]


def pack(texts: list[str], tokenizer, seq_len: int, batch: int = 1000) -> torch.Tensor:
    """Tokenize in batches, join documents with EOS, cut into (windows, seq_len); the ragged tail is dropped."""
    eos = [tokenizer.eos_token_id]
    chunks = []  # compact int32 arrays per batch: a Python list of 20M ints would take ~1 GB
    for i in range(0, len(texts), batch):
        docs = tokenizer(texts[i:i + batch], add_special_tokens=False).input_ids
        chunks.append(np.fromiter((t for doc in docs for t in doc + eos), dtype=np.int32))
    ids = np.concatenate(chunks)
    n = len(ids) // seq_len
    if n == 0:
        raise UserError(f"{len(ids)} tokens is less than one window of --seq-len {seq_len}; "
                        "use more documents or a shorter --seq-len.")
    return torch.from_numpy(ids[: n * seq_len].astype(np.int64)).view(n, seq_len)


def random_batches(windows: torch.Tensor, batch_size: int, seed: int):
    """Endless batches of packed windows: a fresh seeded permutation each epoch."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(windows), generator=gen)
        for i in range(0, len(order) - batch_size + 1, batch_size):
            yield windows[order[i:i + batch_size]]
        if len(order) < batch_size:
            yield windows[order]


# --- padded domain documents (specialization) ---------------------------------------------------------

def tokenize_documents(texts: list[str], tokenizer, max_len: int) -> list[list[int]]:
    """Each document as ids ending with EOS, truncated to `max_len`."""
    ids = tokenizer(texts, add_special_tokens=False).input_ids
    return [(doc + [tokenizer.eos_token_id])[:max_len] for doc in ids if doc]


def pad_batch(docs: list[list[int]], domains: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ids, the real-token mask, and each token's domain index (-1 on padding)."""
    width = max(len(d) for d in docs)
    ids = torch.full((len(docs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(docs), width), dtype=torch.long)
    dom = torch.full((len(docs), width), -1, dtype=torch.long)
    for row, (doc, d) in enumerate(zip(docs, domains, strict=True)):
        ids[row, :len(doc)], mask[row, :len(doc)], dom[row, :len(doc)] = torch.tensor(doc), 1, d
    return {"input_ids": ids, "attention_mask": mask, "domains": dom}


def balanced_domain_batches(docs_by_domain: list[list[list[int]]], per_domain: int, pad_id: int, seed: int):
    """Endless batches with `per_domain` documents from every domain (so no domain dominates the routers)."""
    rng = random.Random(seed)
    while True:
        docs, labels = [], []
        for d, pool in enumerate(docs_by_domain):
            docs += rng.sample(pool, min(per_domain, len(pool)))
            labels += [d] * min(per_domain, len(pool))
        yield pad_batch(docs, labels, pad_id)


def ordered_domain_batches(docs_by_domain: list[list[list[int]]], batch_size: int, pad_id: int):
    """Every held-out document once, in order, for evaluation."""
    flat = [(doc, d) for d, pool in enumerate(docs_by_domain) for doc in pool]
    for i in range(0, len(flat), batch_size):
        chunk = flat[i:i + batch_size]
        yield pad_batch([c[0] for c in chunk], [c[1] for c in chunk], pad_id)
