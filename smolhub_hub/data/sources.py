"""Where documents come from: the built-in corpus, local files, or a Hugging Face dataset id.

Every source yields plain strings, one per document; values that are not text (JSONL `null`, numbers,
lists) are skipped and counted, never turned into text. Hidden files and folders inside a dataset folder
(editor and notebook copies) are not data. Mistakes (a missing path, an empty file, a non-UTF-8 file, a
Hub id with no network) end in one UserError naming the fix.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from smolhub_hub.config import DataConfig
from smolhub_hub.errors import UserError

LOCAL_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")
OFFLINE_HINT = "use `--dataset builtin` (offline stories) or a local .txt/.jsonl/.parquet file or folder"
# Text in these encodings is refused with its name and an iconv command. UTF-32's little-endian mark
# starts with UTF-16's, so it is checked first.
OTHER_ENCODINGS = {codecs.BOM_UTF32_LE: "UTF-32", codecs.BOM_UTF32_BE: "UTF-32",
                   codecs.BOM_UTF16_LE: "UTF-16", codecs.BOM_UTF16_BE: "UTF-16"}


@dataclass
class SourceStats:
    """What a source skipped on the way, for the data summary line."""

    non_text: int = 0      # values of the text field that are not strings: null, numbers, lists, objects
    hidden_files: int = 0  # data files under a hidden path (a name starting with ".") inside a dataset folder


def iter_documents(cfg: DataConfig, stats: SourceStats | None = None) -> Iterator[str]:
    stats = stats if stats is not None else SourceStats()
    n = 0
    for doc in _iter_source(cfg, stats):
        if not isinstance(doc, str):
            stats.non_text += 1
            continue
        if doc.strip():
            yield doc
            n += 1
            if cfg.max_documents and n >= cfg.max_documents:
                return
    if n == 0:
        skipped = f"; {stats.non_text} of its values are not strings" if stats.non_text else ""
        raise UserError(f"dataset '{cfg.dataset}' has no text (checked field '{cfg.text_field}'{skipped}); "
                        f"point --dataset at files with text, or set --text-field")


def _iter_source(cfg: DataConfig, stats: SourceStats) -> Iterator:
    if cfg.dataset == "builtin":
        from smolhub_hub.data.builtin import generate_stories

        yield from generate_stories(cfg.builtin_stories, seed=0)
        return
    path = Path(cfg.dataset).expanduser()
    if path.exists():
        yield from _iter_local(path, cfg.text_field, stats)
        return
    if cfg.dataset.startswith((".", "/", "~")) or Path(cfg.dataset).suffix in LOCAL_SUFFIXES:
        raise UserError(f"dataset path '{cfg.dataset}' does not exist; check the path, or {OFFLINE_HINT}")
    yield from _iter_hub(cfg)


def local_files(path: Path) -> list[Path]:
    return _scan(path)[0]


def _scan(path: Path) -> tuple[list[Path], int]:
    """The data files of a file or folder, and how many were skipped for lying under a hidden path."""
    if path.is_file():
        return [path], 0
    found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in LOCAL_SUFFIXES)
    files = [p for p in found if not any(part.startswith(".") for part in p.relative_to(path).parts)]
    if not files:
        hidden = f" (skipped {len(found)} under hidden paths, names starting with '.')" if found else ""
        raise UserError(f"no .txt, .jsonl or .parquet files in '{path}'{hidden}")
    return files, len(found) - len(files)


def _iter_local(path: Path, text_field: str, stats: SourceStats) -> Iterator:
    files, stats.hidden_files = _scan(path)
    for f in files:
        if f.suffix == ".parquet":
            yield from _iter_parquet(f, text_field)
        elif f.suffix in (".jsonl", ".json"):
            yield from _iter_jsonl(f, text_field)
        elif f.suffix == ".txt":
            yield from _split_txt(_read_text(f))
        else:
            raise UserError(f"cannot read '{f}': SmolHub reads {', '.join(LOCAL_SUFFIXES)} files")


def _read_text(f: Path) -> str:
    """UTF-8 text without a byte-order mark, with Unix line endings (so CRLF files split like others)."""
    raw = f.read_bytes()
    for bom, encoding in OTHER_ENCODINGS.items():
        if raw.startswith(bom):
            raise UserError(f"'{f}' is {encoding} text (byte-order mark {bom.hex(' ').upper()}); SmolHub reads "
                            f"UTF-8: convert it, e.g. `iconv -f {encoding.lower()} -t utf-8 {f} > "
                            f"{f.stem}-utf8{f.suffix}`")
    if b"\x00" in raw[:8192]:
        raise UserError(f"'{f}' looks like a binary file, not text; point --dataset at text files")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"'{f}' is not UTF-8 (bad byte at offset {e.start}); convert it, "
                        f"e.g. `iconv -f latin1 -t utf-8 {f} > fixed.txt`") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _split_txt(text: str) -> Iterator[str]:
    """Documents in a .txt file are separated by `<|endoftext|>` (TinyStories' format) or blank lines."""
    parts = text.split("<|endoftext|>") if "<|endoftext|>" in text else text.split("\n\n")
    for p in parts:
        if p.strip():
            yield p.strip()


def _iter_jsonl(f: Path, text_field: str) -> Iterator:
    for lineno, line in enumerate(_read_text(f).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{f}:{lineno} is not valid JSON ({e.msg}); each line of a .jsonl file is one "
                            "object") from None
        if not isinstance(row, dict) or text_field not in row:
            raise UserError(f"{f}:{lineno} has no field '{text_field}'; set --text-field to the field holding the text")
        yield row[text_field]


def _iter_parquet(f: Path, text_field: str) -> Iterator:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(f)
    except Exception as e:  # pyarrow raises several types for a bad file
        raise UserError(f"cannot read parquet file '{f}': {e}") from None
    if text_field not in pf.schema_arrow.names:
        raise UserError(f"'{f}' has no column '{text_field}' (columns: {', '.join(pf.schema_arrow.names)}); "
                        "set --text-field")
    column_type = pf.schema_arrow.field(text_field).type
    if not _is_string_type(column_type):
        raise UserError(f"column '{text_field}' of '{f}' holds {column_type}, not text; set --text-field to a "
                        "string column")
    for batch in pf.iter_batches(columns=[text_field], batch_size=4096):
        yield from batch.column(0).to_pylist()  # nulls are None: skipped and counted as non-text


def _is_string_type(t) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _iter_hub(cfg: DataConfig) -> Iterator:
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
