"""Packed token files: documents tokenized once, in batches, joined by EOS, memory-mapped.

The cache key is (dataset spec, tokenizer spec), so a second run with the same data starts at once.
Every `k`-th document goes to the held-out split, and nothing of that split reaches training: a training
document that repeats a held-out one (after stripping) is dropped, and a BPE learns its merges from
training documents only. Training windows are drawn from a seed and the step number alone: resuming needs
no data-loader state, and each process takes its own slice of the global batch, so ranks read disjoint
windows. `meta.json` records a fingerprint of the packed tokens: a resumed run can tell its data changed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from smolhub_hub.config import DataConfig, check_ranges
from smolhub_hub.data.sources import SourceStats, iter_documents, local_files
from smolhub_hub.data.tokenizer import load_tokenizer, tokenizer_fingerprint, train_bpe, vocab_size_of
from smolhub_hub.errors import UserError

FORMAT_VERSION = 2  # 2: the BPE learns from the training split only; copies of held-out documents are dropped
TOKENIZE_BATCH = 1024
BPE_TRAIN_DOCS = 20000
COPY_CHUNK = 1 << 24  # tokens copied at a time when held-out copies are cut out of train.bin
SPLITS = ("train", "val")


@dataclass
class PackedData:
    train: np.ndarray
    val: np.ndarray
    tokenizer: object
    meta: dict
    path: Path

    def check_windows(self, seq_len: int):
        """Each split must hold one window of `seq_len` + 1 tokens and one token more (see window_starts)."""
        hints = {"train": "lower --seq-len or --val-fraction, or use a larger dataset",
                 "val": "raise --val-fraction, lower --seq-len, or use a larger dataset"}
        for split, tokens in (("train", self.train), ("val", self.val)):
            if len(tokens) < seq_len + 2:
                name = "training" if split == "train" else "held-out"
                raise UserError(f"the {name} split of dataset '{self.meta['data']['dataset']}' has {len(tokens)} "
                                f"tokens ({self.meta[f'{split}_documents']} documents); one window of --seq-len "
                                f"{seq_len} needs {seq_len + 2}: {hints[split]}")


def default_cache_dir() -> Path:
    return Path(os.environ.get("SMOLHUB_CACHE", Path.home() / ".cache" / "smolhub")) / "data"


def cache_key(cfg: DataConfig, tokenizer=None) -> str:
    spec = {k: v for k, v in cfg.to_dict().items() if k != "cache_dir"}
    if tokenizer is not None:  # a given tokenizer (a resumed run's own), known by what it computes
        spec["tokenizer"] = tokenizer_fingerprint(tokenizer)
    if spec["tokenizer"] != "bpe":
        spec.pop("vocab_size")
    if cfg.dataset != "builtin":
        spec.pop("builtin_stories")
    path = Path(cfg.dataset).expanduser()
    if path.exists():  # local data: the key changes when a file changes
        spec["dataset"] = str(path.resolve())
        spec["files"] = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in local_files(path)]
    spec["format"] = FORMAT_VERSION
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def cache_path(cfg: DataConfig, tokenizer=None) -> Path:
    root = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()
    return root / f"{_slug(cfg.dataset)}-{cache_key(cfg, tokenizer)}"


def prepare_data(cfg: DataConfig, rank: int = 0, barrier=None, tokenizer=None) -> PackedData:
    """Build (on rank 0) or reuse the packed files for `cfg`; every rank then maps them. `tokenizer`: the
    one to use instead of `cfg.tokenizer` (a resumed run keeps its own)."""
    check_ranges(cfg)
    out = cache_path(cfg, tokenizer)
    if rank == 0 and not (out / "meta.json").exists():
        _build(cfg, out, tokenizer)
    if barrier is not None:
        barrier()
    return load_packed(out)


def cached_data(cfg: DataConfig) -> PackedData | None:
    """The packed files for `cfg` if they are already built, else None (nothing is built)."""
    out = cache_path(cfg)
    return load_packed(out) if (out / "meta.json").exists() else None


def load_packed(out: Path) -> PackedData:
    """Map a finished cache. A file cut short, missing or edited is refused with one line naming the fix."""
    fix = f"delete the cache folder {out} (the next run rebuilds it)"
    meta_path = out / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
        dtype = np.dtype(meta["dtype"])
        sizes = {split: int(meta[f"{split}_tokens"]) * dtype.itemsize for split in SPLITS}
        vocab = int(meta["vocab_size"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{meta_path} is damaged ({type(e).__name__}: {e}); {fix}") from None
    tokens = {split: _map_tokens(out / f"{split}.bin", dtype, sizes[split], fix) for split in SPLITS}
    if not (out / "tokenizer").is_dir():
        raise UserError(f"{out / 'tokenizer'} is missing; {fix}")
    tok = load_tokenizer(str(out / "tokenizer"), fix=fix)
    if vocab_size_of(tok) != vocab:
        raise UserError(f"{out / 'tokenizer'} has {vocab_size_of(tok)} ids where {meta_path} says {vocab}; {fix}")
    return PackedData(tokens["train"], tokens["val"], tok, meta, out)


def _map_tokens(path: Path, dtype: np.dtype, size: int, fix: str) -> np.ndarray:
    actual = path.stat().st_size if path.is_file() else None
    if actual is None or actual != size or size == 0:
        state = "missing" if actual is None else f"{actual:,} bytes long where meta.json says {size:,}"
        raise UserError(f"data cache file {path} is {state}; {fix}")
    return np.memmap(path, dtype=dtype, mode="r")


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in Path(name).name or name)[:40]


def _build(cfg: DataConfig, out: Path, tok=None):
    stats = SourceStats()
    docs = iter_documents(cfg, stats)
    docs = itertools.chain([next(docs)], docs)  # check the source before loading a tokenizer
    labelled = _label_splits(docs, every=max(2, round(1 / cfg.val_fraction)))
    if tok is None and cfg.tokenizer == "bpe":
        head = list(itertools.islice(labelled, BPE_TRAIN_DOCS))
        tok = train_bpe(_training_texts(head), vocab_size=cfg.vocab_size)
        labelled = itertools.chain(head, labelled)
    elif tok is None:
        tok = load_tokenizer(cfg.tokenizer)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        meta = _write_cache(tmp, cfg, tok, labelled, stats)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk gets its space back, and no half cache is left
        if isinstance(e, OSError):
            raise UserError(f"could not write the data cache in {out.parent} ({e.strerror or e}); free disk "
                            "space, or point --cache-dir at a disk with room") from None
        raise
    print(summary_line(meta))
    if (out / "meta.json").exists():  # another process finished the same cache first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        return
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # atomic: a half-built cache is never mistaken for a finished one


def summary_line(meta: dict) -> str:
    return (f"data: {meta['train_documents']:,} training documents ({meta['train_tokens']:,} tokens), "
            f"{meta['val_documents']:,} held out ({meta['val_tokens']:,} tokens); skipped "
            f"{meta['skipped_non_text']:,} non-text value(s) and {meta['hidden_files_skipped']:,} hidden file(s); "
            f"dropped {meta['duplicates_dropped']:,} training document(s) that repeat a held-out one")


def _label_splits(docs: Iterator[str], every: int) -> Iterator[tuple[str, str]]:
    for index, doc in enumerate(docs):
        yield ("val" if index % every == every - 1 else "train"), doc


def _doc_key(doc: str) -> int:
    return int.from_bytes(hashlib.blake2b(doc.strip().encode(), digest_size=8).digest(), "little")


def _training_texts(labelled: list[tuple[str, str]]) -> list[str]:
    """What a BPE may learn from: training documents that do not repeat a held-out one."""
    held_out = {_doc_key(doc) for split, doc in labelled if split == "val"}
    return [doc for split, doc in labelled if split == "train" and _doc_key(doc) not in held_out]


def _write_cache(tmp: Path, cfg: DataConfig, tok, labelled: Iterator[tuple[str, str]], stats: SourceStats) -> dict:
    vocab = vocab_size_of(tok)
    dtype = np.dtype(np.uint16 if vocab <= 2**16 else np.uint32)
    counts, dropped = _write_splits(tmp, tok, labelled, dtype)
    if counts["val"][0] == 0:
        raise UserError(f"only {counts['train'][0]} document(s): too few to hold any out for evaluation; "
                        "give more documents or raise --val-fraction")
    if counts["train"][0] == 0:
        raise UserError(f"every training document of '{cfg.dataset}' repeats a held-out one; "
                        "give more distinct documents")
    tok.save_pretrained(tmp / "tokenizer")
    meta = {"dtype": dtype.name, "vocab_size": vocab, "eos_id": tok.eos_token_id,
            "train_documents": counts["train"][0], "train_tokens": counts["train"][1],
            "val_documents": counts["val"][0], "val_tokens": counts["val"][1],
            "skipped_non_text": stats.non_text, "hidden_files_skipped": stats.hidden_files,
            "duplicates_dropped": dropped, "data": cfg.to_dict(), "fingerprint": _fingerprint(tmp)}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta


def _fingerprint(folder: Path) -> str:
    """A hash of the packed tokens of both splits (read back at about a GB a second)."""
    h = hashlib.sha1()
    for split in SPLITS:
        with open(folder / f"{split}.bin", "rb") as f:
            while chunk := f.read(1 << 24):
                h.update(chunk)
        h.update(split.encode())
    return h.hexdigest()[:16]


def _write_splits(tmp: Path, tok, labelled: Iterator[tuple[str, str]], dtype: np.dtype):
    """Tokenize into train.bin / val.bin; returns {split: [documents, tokens]} and the held-out copies dropped."""
    counts = {split: [0, 0] for split in SPLITS}
    held_out: set[int] = set()
    train_keys, train_starts = array("Q"), array("Q")  # per training document: its key, where it starts
    with open(tmp / "train.bin", "wb") as ftrain, open(tmp / "val.bin", "wb") as fval:
        while batch := list(itertools.islice(labelled, TOKENIZE_BATCH)):
            ids = tok([doc for _, doc in batch], add_special_tokens=False)["input_ids"]
            for (split, doc), doc_ids in zip(batch, ids, strict=False):
                if split == "val":
                    held_out.add(_doc_key(doc))
                else:
                    train_keys.append(_doc_key(doc))
                    train_starts.append(counts["train"][1])
                arr = np.asarray(doc_ids + [tok.eos_token_id], dtype=dtype)
                (fval if split == "val" else ftrain).write(arr.tobytes())
                counts[split][0] += 1
                counts[split][1] += len(arr)
    repeats = np.isin(np.asarray(train_keys, dtype=np.uint64), np.fromiter(held_out, np.uint64, len(held_out)))
    if repeats.any():
        starts = np.asarray(train_starts, dtype=np.int64)
        counts["train"][0] -= int(repeats.sum())
        counts["train"][1] -= _cut_documents(tmp / "train.bin", dtype, starts, repeats)
    return counts, int(repeats.sum())


def _cut_documents(path: Path, dtype: np.dtype, starts: np.ndarray, cut: np.ndarray) -> int:
    """Rewrite `path` without the documents marked in `cut`; returns the number of tokens removed."""
    tokens = np.memmap(path, dtype=dtype, mode="r")
    ends = np.append(starts[1:], len(tokens))
    gaps = np.flatnonzero(cut)
    kept = path.with_name(path.name + ".kept")
    with open(kept, "wb") as f:  # copy what lies between the cut documents
        for lo, hi in zip([0, *ends[gaps]], [*starts[gaps], len(tokens)], strict=False):
            for a in range(lo, hi, COPY_CHUNK):
                f.write(tokens[a:min(hi, a + COPY_CHUNK)].tobytes())
    removed = int((ends - starts)[cut].sum())
    del tokens
    os.replace(kept, path)
    return removed


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
