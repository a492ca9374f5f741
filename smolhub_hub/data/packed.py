"""Packed token files: documents tokenized once, in batches, joined by EOS, memory-mapped.

The cache key is (dataset spec, tokenizer spec), so a second run with the same data starts at once.
Its `meta.json` records a fingerprint of the packed tokens, so a resumed run can tell that its data changed.
Every `k`-th document goes to the held-out split, so no document is in both. Training windows are
drawn from a seed and the step number alone: resuming needs no data-loader state, and each process
takes its own slice of the global batch, so ranks read disjoint windows.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from smolhub_hub.config import DataConfig
from smolhub_hub.data.sources import iter_documents, local_files
from smolhub_hub.data.tokenizer import load_tokenizer, train_bpe, vocab_size_of
from smolhub_hub.errors import UserError

FORMAT_VERSION = 1
TOKENIZE_BATCH = 1024
BPE_TRAIN_DOCS = 20000


@dataclass
class PackedData:
    train: np.ndarray
    val: np.ndarray
    tokenizer: object
    meta: dict
    path: Path


def default_cache_dir() -> Path:
    return Path(os.environ.get("SMOLHUB_CACHE", Path.home() / ".cache" / "smolhub")) / "data"


def cache_key(cfg: DataConfig, tokenizer_dir: Path | None = None) -> str:
    spec = {k: v for k, v in cfg.to_dict().items() if k != "cache_dir"}
    if tokenizer_dir is not None:  # a given tokenizer (a resumed run's own), known by its files' contents
        spec["tokenizer"] = _tokenizer_files_hash(tokenizer_dir)
    if cfg.tokenizer != "bpe" or tokenizer_dir is not None:
        spec.pop("vocab_size")
    if cfg.dataset != "builtin":
        spec.pop("builtin_stories")
    path = Path(cfg.dataset).expanduser()
    if path.exists():  # local data: the key changes when a file changes
        spec["dataset"] = str(path.resolve())
        spec["files"] = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in local_files(path)]
    spec["format"] = FORMAT_VERSION
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _tokenizer_files_hash(folder: Path) -> str:
    h = hashlib.sha1()
    files = (p for pattern in ("tokenizer*", "vocab*", "merges*", "*.model") for p in Path(folder).glob(pattern))
    for f in sorted(files):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


def cache_path(cfg: DataConfig, tokenizer_dir: Path | None = None) -> Path:
    root = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()
    return root / f"{_slug(cfg.dataset)}-{cache_key(cfg, tokenizer_dir)}"


def prepare_data(cfg: DataConfig, rank: int = 0, barrier=None, tokenizer_dir: Path | None = None) -> PackedData:
    """Build (on rank 0) or reuse the packed files for `cfg`; every rank then maps them. `tokenizer_dir`: a
    folder with the tokenizer to use instead of `cfg.tokenizer` (a resumed run keeps its own)."""
    if not 0.0 < cfg.val_fraction < 0.5:
        raise UserError(f"--val-fraction must be in (0, 0.5) (got {cfg.val_fraction})")
    out = cache_path(cfg, tokenizer_dir)
    if rank == 0 and not (out / "meta.json").exists():
        _build(cfg, out, tokenizer_dir)
    if barrier is not None:
        barrier()
    return load_packed(out)


def cached_data(cfg: DataConfig) -> PackedData | None:
    """The packed files for `cfg` if they are already built, else None (nothing is built)."""
    out = cache_path(cfg)
    return load_packed(out) if (out / "meta.json").exists() else None


def load_packed(out: Path) -> PackedData:
    meta = json.loads((out / "meta.json").read_text())
    dtype = np.dtype(meta["dtype"])
    train = np.memmap(out / "train.bin", dtype=dtype, mode="r")
    val = np.memmap(out / "val.bin", dtype=dtype, mode="r")
    return PackedData(train, val, load_tokenizer(str(out / "tokenizer")), meta, out)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in Path(name).name or name)[:40]


def _build(cfg: DataConfig, out: Path, tokenizer_dir: Path | None = None):
    docs = iter_documents(cfg)
    docs = itertools.chain([next(docs)], docs)  # check the source before loading a tokenizer
    if tokenizer_dir is not None:
        tok = load_tokenizer(str(tokenizer_dir))
    elif cfg.tokenizer == "bpe":
        head = list(itertools.islice(docs, BPE_TRAIN_DOCS))
        tok = train_bpe(head, vocab_size=cfg.vocab_size)
        docs = itertools.chain(head, docs)
    else:
        tok = load_tokenizer(cfg.tokenizer)
    vocab = vocab_size_of(tok)
    dtype = np.uint16 if vocab <= 2**16 else np.uint32
    every = max(2, round(1 / cfg.val_fraction))
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    counts = {"train": [0, 0], "val": [0, 0]}  # documents, tokens
    hashes = {"train": hashlib.sha1(), "val": hashlib.sha1()}
    with open(tmp / "train.bin", "wb") as ftrain, open(tmp / "val.bin", "wb") as fval:
        index = 0
        while batch := list(itertools.islice(docs, TOKENIZE_BATCH)):
            ids = tok(batch, add_special_tokens=False)["input_ids"]
            for doc_ids in ids:
                split = "val" if index % every == every - 1 else "train"
                raw = np.asarray(doc_ids + [tok.eos_token_id], dtype=dtype).tobytes()
                (fval if split == "val" else ftrain).write(raw)
                hashes[split].update(raw)
                counts[split][0] += 1
                counts[split][1] += len(doc_ids) + 1
                index += 1
    if counts["val"][0] == 0:
        raise UserError(f"only {counts['train'][0]} document(s): too few to hold any out for evaluation; "
                        "give more documents or raise --val-fraction")
    tok.save_pretrained(tmp / "tokenizer")
    meta = {"dtype": np.dtype(dtype).name, "vocab_size": vocab, "eos_id": tok.eos_token_id,
            "train_documents": counts["train"][0], "train_tokens": counts["train"][1],
            "val_documents": counts["val"][0], "val_tokens": counts["val"][1], "data": cfg.to_dict(),
            "fingerprint": hashlib.sha1(hashes["train"].digest() + hashes["val"].digest()).hexdigest()[:16]}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    if (out / "meta.json").exists():  # another process finished the same cache first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        return
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # atomic: a half-built cache is never mistaken for a finished one


def window_starts(n_tokens: int, seq_len: int, count: int, seed: int, step: int) -> np.ndarray:
    """`count` window starts for one optimizer step, a pure function of (seed, step)."""
    high = n_tokens - seq_len - 1
    if high <= 0:
        raise UserError(f"the split has {n_tokens} tokens, fewer than one window of {seq_len + 1}; "
                        "use more data or a shorter --seq-len")
    return np.random.default_rng([seed, step]).integers(0, high, size=count)


def windows_to_batch(tokens: np.ndarray, starts: np.ndarray, seq_len: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    rows = np.stack([tokens[s:s + seq_len + 1] for s in starts]).astype(np.int64)
    t = torch.from_numpy(rows)
    if torch.device(device).type == "cuda":
        t = t.pin_memory().to(device, non_blocking=True)
    return t[:, :-1], t[:, 1:]
