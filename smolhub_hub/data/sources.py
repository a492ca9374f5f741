"""Where documents come from: the built-in corpus, local files, or a Hugging Face dataset id.

Every source yields plain strings, one per document. Mistakes (a missing path, an empty file, a
non-UTF-8 file, a Hub id with no network) end in one UserError naming the fix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from smolhub_hub.config import DataConfig
from smolhub_hub.errors import UserError

LOCAL_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")
OFFLINE_HINT = "use `--dataset builtin` (offline stories) or a local .txt/.jsonl/.parquet file or folder"


def iter_documents(cfg: DataConfig) -> Iterator[str]:
    docs = _iter_source(cfg)
    n = 0
    for doc in docs:
        if doc and doc.strip():
            yield doc
            n += 1
            if cfg.max_documents and n >= cfg.max_documents:
                return
    if n == 0:
        raise UserError(f"dataset '{cfg.dataset}' has no text (checked field '{cfg.text_field}'); "
                        f"point --dataset at files with text, or set --text-field")


def _iter_source(cfg: DataConfig) -> Iterator[str]:
    if cfg.dataset == "builtin":
        from smolhub_hub.data.builtin import generate_stories

        yield from generate_stories(cfg.builtin_stories, seed=0)
        return
    path = Path(cfg.dataset).expanduser()
    if path.exists():
        yield from _iter_local(path, cfg.text_field)
        return
    if cfg.dataset.startswith((".", "/", "~")) or Path(cfg.dataset).suffix in LOCAL_SUFFIXES:
        raise UserError(f"dataset path '{cfg.dataset}' does not exist; check the path, or {OFFLINE_HINT}")
    yield from _iter_hub(cfg)


def local_files(path: Path) -> list[Path]:
    if path.is_file():
        files = [path]
    else:
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in LOCAL_SUFFIXES)
    if not files:
        raise UserError(f"no .txt, .jsonl or .parquet files in '{path}'")
    return files


def _iter_local(path: Path, text_field: str) -> Iterator[str]:
    for f in local_files(path):
        if f.suffix == ".parquet":
            yield from _iter_parquet(f, text_field)
        elif f.suffix in (".jsonl", ".json"):
            yield from _iter_jsonl(f, text_field)
        elif f.suffix == ".txt":
            yield from _split_txt(_read_utf8(f))
        else:
            raise UserError(f"cannot read '{f}': SmolHub reads {', '.join(LOCAL_SUFFIXES)} files")


def _read_utf8(f: Path) -> str:
    raw = f.read_bytes()
    if b"\x00" in raw[:8192]:
        raise UserError(f"'{f}' looks like a binary file, not text; point --dataset at text files")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"'{f}' is not UTF-8 (bad byte at offset {e.start}); convert it, "
                        f"e.g. `iconv -f latin1 -t utf-8 {f} > fixed.txt`") from None


def _split_txt(text: str) -> Iterator[str]:
    """Documents in a .txt file are separated by `<|endoftext|>` (TinyStories' format) or blank lines."""
    parts = text.split("<|endoftext|>") if "<|endoftext|>" in text else text.split("\n\n")
    for p in parts:
        if p.strip():
            yield p.strip()


def _iter_jsonl(f: Path, text_field: str) -> Iterator[str]:
    for lineno, line in enumerate(_read_utf8(f).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{f}:{lineno} is not valid JSON ({e.msg}); each line of a .jsonl file is one object") from None
        if not isinstance(row, dict) or text_field not in row:
            raise UserError(f"{f}:{lineno} has no field '{text_field}'; set --text-field to the field holding the text")
        yield str(row[text_field])


def _iter_parquet(f: Path, text_field: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(f)
    except Exception as e:  # pyarrow raises several types for a bad file
        raise UserError(f"cannot read parquet file '{f}': {e}") from None
    if text_field not in pf.schema_arrow.names:
        raise UserError(f"'{f}' has no column '{text_field}' (columns: {', '.join(pf.schema_arrow.names)}); "
                        "set --text-field")
    for batch in pf.iter_batches(columns=[text_field], batch_size=4096):
        yield from (str(t) for t in batch.column(0).to_pylist() if t is not None)


def _iter_hub(cfg: DataConfig) -> Iterator[str]:
    import datasets

    from smolhub_hub.network import require_hub

    require_hub(f"dataset '{cfg.dataset}'", OFFLINE_HINT)
    try:
        ds = datasets.load_dataset(cfg.dataset, cfg.dataset_config or None, split="train", streaming=True)
        first = True
        for row in ds:
            if first and cfg.text_field not in row:
                raise UserError(f"Hub dataset '{cfg.dataset}' has no field '{cfg.text_field}' "
                                f"(fields: {', '.join(row)}); set --text-field")
            first = False
            yield row[cfg.text_field]
    except UserError:
        raise
    except Exception as e:  # connection errors come wrapped in many types
        raise UserError(f"could not load Hub dataset '{cfg.dataset}' ({type(e).__name__}: {str(e)[:200]}); "
                        f"check the id and your network, or {OFFLINE_HINT}") from None
