"""Stage 2: preference pairs sampled from the SFT model.

For every training prompt the SFT model writes one correction per temperature (default 1.0 and 0.5);
the one closer to the reference (rapidfuzz character edit distance) is `chosen`, the other `rejected`,
and ties (identical distances, identical samples) are dropped. The pairs are written as `train.jsonl`
in the one prompt format, beside `metadata.json` recording the model and settings that made them:
a rerun with the same settings reuses them (or resumes an unfinished run chunk by chunk); a folder
made with other settings is refused unless --overwrite.

    python -m smol_experiments.alignment.build_preference_pairs --model runs/coedit/sft --output-dir runs/coedit/pairs
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from smol_experiments.alignment.cli import DATASET, add_output_flags
from smol_experiments.alignment.data import load_gec_examples
from smol_experiments.alignment.generation import generate_corrections
from smol_experiments.alignment.prompt_format import PROMPT_TEMPLATE, make_completion, make_prompt
from smol_experiments.alignment.run_dir import data_fingerprint
from smol_experiments.flags import Parser, non_negative_int, path, positive_float, positive_int
from smol_experiments.pretrained import load_model_and_tokenizer
from smol_experiments.stages import (
    FRESH,
    REUSE,
    begin,
    claim,
    mark_done,
    model_fingerprint,
    reused,
    stage_main,
    write_atomic,
)
from smolhub_hub.errors import UserError

STAGE = "pairs"
CHUNK_DIR = "samples"


def choose_pair(reference: str, candidates: list[str]) -> tuple[str, str] | None:
    """(closest, farthest) candidate by character edit distance to `reference`; None on a tie."""
    from smolhub_hub.extras import require

    Levenshtein = require("rapidfuzz.distance", "building preference pairs (edit distance)").Levenshtein

    scored = sorted(candidates, key=lambda c: Levenshtein.distance(c.strip(), reference.strip()))
    best, worst = scored[0], scored[-1]
    if Levenshtein.distance(best.strip(), reference.strip()) == Levenshtein.distance(worst.strip(), reference.strip()):
        return None
    return best, worst


def build_parser():
    p = Parser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, type=path, help="the SFT model (local folder or Hub id)")
    p.add_argument("--dataset", default=DATASET, type=path,
                   help="Hub id, local JSON/JSONL/parquet file, or folder of split files")
    p.add_argument("--task", default="gec", help="CoEdIT task to keep (rows whose `task` differs are dropped)")
    add_output_flags(p)
    p.add_argument("--temperatures", type=positive_float, nargs="+", default=[1.0, 0.5],
                   help="one sample per temperature (at least two)")
    p.add_argument("--max-samples", type=positive_int, default=None, help="use only the first N training prompts")
    p.add_argument("--batch-size", type=positive_int, default=64, help="prompts per generation batch")
    p.add_argument("--max-new-tokens", type=positive_int, default=256, help="longest sampled correction")
    p.add_argument("--chunk-size", type=positive_int, default=1024, help="prompts per saved chunk (the unit of resume)")
    p.add_argument("--seed", type=non_negative_int, default=42, help="sampling seed")
    return p


def metadata_of(args) -> dict:
    return {
        "model": str(Path(args.model).resolve()) if Path(args.model).exists() else args.model,
        "model_sha256": model_fingerprint(args.model), "dataset_sha256": data_fingerprint(args.dataset),
        "dataset": args.dataset, "task": args.task, "split": "train", "max_samples": args.max_samples,
        "temperatures": args.temperatures, "seed": args.seed, "max_new_tokens": args.max_new_tokens,
        "chunk_size": args.chunk_size, "prompt_template": PROMPT_TEMPLATE, "completion": "' ' + text + EOS",
    }


def sample_chunk(model, tokenizer, rows, args, chunk_index: int) -> list[dict]:
    prompts = [make_prompt(src) for src in rows["src"]]
    samples = [generate_corrections(model, tokenizer, prompts, batch_size=args.batch_size, temperature=t,
                                    max_new_tokens=args.max_new_tokens, seed=args.seed + 1000 * chunk_index + k,
                                    desc=f"chunk {chunk_index} T={t}")
               for k, t in enumerate(args.temperatures)]
    return [{"src": src, "tgt": tgt, "samples": [s[i] for s in samples]}
            for i, (src, tgt) in enumerate(zip(rows["src"], rows["tgt"], strict=True))]


def pairs_from_samples(sampled: list[dict]) -> list[dict]:
    pairs = []
    for row in sampled:
        picked = choose_pair(row["tgt"], row["samples"])
        if picked is not None:
            chosen, rejected = picked
            pairs.append({"prompt": make_prompt(row["src"]), "chosen": make_completion(chosen),
                          "rejected": make_completion(rejected), "reference": make_completion(row["tgt"])})
    return pairs


def run(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if len(args.temperatures) < 2:
        raise UserError("--temperatures needs at least two values (one sample each).")
    out = Path(args.output_dir)
    metadata = metadata_of(args)
    status = claim(out, STAGE, metadata, overwrite=args.overwrite, flag="--output-dir")
    if status == REUSE:
        return reused(out, STAGE)
    rows = load_gec_examples(args.dataset, "train", args.max_samples, args.task)
    model, tokenizer = load_model_and_tokenizer(args.model)
    if status == FRESH:
        begin(out, STAGE, metadata)
    (out / CHUNK_DIR).mkdir(exist_ok=True)
    sampled = []
    for index, start in enumerate(range(0, len(rows), args.chunk_size)):
        chunk_file = out / CHUNK_DIR / f"chunk-{index:05d}.jsonl"
        if not chunk_file.is_file():  # chunks already on disk come from an interrupted run with the same settings
            chunk = sample_chunk(model, tokenizer, rows[start:start + args.chunk_size], args, index)
            write_atomic(chunk_file, "".join(json.dumps(r) + "\n" for r in chunk))
        sampled += [json.loads(line) for line in chunk_file.read_text().splitlines()]
    pairs = pairs_from_samples(sampled)
    if not pairs:
        raise UserError("Every sampled pair was a tie; no preference pairs. Use more prompts or other temperatures.")
    write_atomic(out / "train.jsonl", "".join(json.dumps(p) + "\n" for p in pairs))
    write_atomic(out / "metadata.json", json.dumps(metadata, indent=2) + "\n")
    metrics = {"prompts": len(rows), "pairs": len(pairs), "ties_dropped": len(rows) - len(pairs)}
    mark_done(out, metrics)
    print(f"Preference pairs: {metrics} -> {out / 'train.jsonl'}")
    return metrics


@stage_main
def main(argv=None) -> dict:
    return run(argv)


if __name__ == "__main__":
    main()
