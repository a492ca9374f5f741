"""Loading CoEdIT-style GEC data and models: a Hub id, or local JSON / JSONL / parquet files.

A local source is either one file (used for whatever split is asked) or a folder holding
`train.*` and `validation.*`. Rows need `src` and `tgt`; when a `task` column exists, only
the requested task (default `gec`) is kept, as in the reference project.
"""

from __future__ import annotations

from pathlib import Path

from smol_experiments.alignment.prompt_format import make_completion, make_prompt
from smolhub_hub.errors import UserError

LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
REQUIRED_FIELDS = ("src", "tgt")


def check_max_samples(max_samples: int | None) -> None:
    if max_samples is not None and max_samples < 1:
        raise UserError(f"--max-samples {max_samples}: give a positive number of examples, or leave it out to use all.")


def _local_file_for_split(folder: Path, split: str) -> Path:
    for suffix in LOCAL_FORMATS:
        candidate = folder / f"{split}{suffix}"
        if candidate.is_file():
            return candidate
    raise UserError(f"{folder} has no {split}.jsonl / {split}.json / {split}.parquet; add one or pass a file.")


def _load_raw(source: str, split: str):
    import datasets

    path = Path(source)
    if path.is_dir():
        path = _local_file_for_split(path, split)
    if path.is_file():
        if path.suffix not in LOCAL_FORMATS:
            raise UserError(f"{path}: unsupported file type; use .json, .jsonl or .parquet.")
        try:
            return datasets.load_dataset(LOCAL_FORMATS[path.suffix], data_files=str(path), split="train")
        except Exception as e:  # datasets raises several types for malformed files
            raise UserError(f"Could not read {path}: {e}") from None
    if source.startswith((".", "/", "~")) or source.endswith(tuple(LOCAL_FORMATS)):
        raise UserError(f"Dataset file or folder {source} does not exist.")
    try:
        return datasets.load_dataset(source, split=split)
    except (OSError, ValueError) as e:  # offline, unknown id, or missing split
        raise UserError(
            f"Could not load dataset '{source}' split '{split}' from the Hub ({type(e).__name__}: {e}). "
            "Check the network / HF_HUB_OFFLINE, the id and the split, or pass a local JSON/JSONL/parquet file."
        ) from None


def load_gec_examples(source: str, split: str, max_samples: int | None = None, task: str = "gec"):
    """A `datasets.Dataset` with columns `src` and `tgt` (the first `max_samples` rows of `task`)."""
    check_max_samples(max_samples)
    ds = _load_raw(source, split)
    missing = [f for f in REQUIRED_FIELDS if f not in ds.column_names]
    if missing:
        raise UserError(
            f"Dataset {source} ({split}) has no field(s) {', '.join(missing)}; found {ds.column_names}. "
            "Each row needs `src` (instruction + text) and `tgt` (the corrected text)."
        )
    if "task" in ds.column_names and task:
        ds = ds.filter(lambda row: row["task"] == task)
    if len(ds) == 0:
        raise UserError(f"Dataset {source} ({split}) has no rows for task '{task}'.")
    if max_samples is not None:
        ds = ds.select(range(min(max_samples, len(ds))))
    return ds.select_columns(list(REQUIRED_FIELDS))


def to_prompt_completion(ds):
    """CoEdIT rows -> TRL's prompt/completion format (the trainers add EOS)."""
    return ds.map(
        lambda row: {"prompt": make_prompt(row["src"]), "completion": make_completion(row["tgt"])},
        remove_columns=ds.column_names,
    )


PAIR_FIELDS = ("prompt", "chosen", "rejected")


def load_preference_pairs(source: str, max_samples: int | None = None):
    """Pairs made by `build_preference_pairs` (a folder or its train.jsonl), or any prompt/chosen/rejected dataset."""
    check_max_samples(max_samples)
    ds = _load_raw(source, "train")
    missing = [f for f in PAIR_FIELDS if f not in ds.column_names]
    if missing:
        raise UserError(
            f"Preference dataset {source} has no field(s) {', '.join(missing)}; found {ds.column_names}. "
            "Make one with `python -m smol_experiments.alignment.build_preference_pairs`."
        )
    if max_samples is not None:
        ds = ds.select(range(min(max_samples, len(ds))))
    return ds.select_columns(list(PAIR_FIELDS))
