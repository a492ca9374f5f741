"""Stage 2: preference pairs sampled from the SFT model.

For every training prompt the SFT model writes one correction per temperature (default 1.0 and 0.5);
the one closer to the reference (rapidfuzz character edit distance) is `chosen`, the other `rejected`,
and ties (identical distances, identical samples) are dropped. The pairs are written as `train.jsonl`
in the one prompt format, beside `metadata.json` recording the model and settings that made them:
a rerun with the same settings reuses them (or resumes an unfinished run chunk by chunk); a folder
made with other settings is refused.

    python -m smol_experiments.alignment.build_preference_pairs --model runs/coedit/sft --output-dir runs/coedit/pairs
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from smolhub_hub.errors import UserError, exit_on_user_error

from smol_experiments.alignment.cli import DATASET
from smol_experiments.alignment.data import check_max_samples, load_gec_examples, load_model_and_tokenizer
from smol_experiments.alignment.generation import generate_corrections
from smol_experiments.alignment.prompt_format import PROMPT_TEMPLATE, make_completion, make_prompt
from smol_experiments.alignment.run_dir import mark_done, model_fingerprint, prepare_output_dir, read_marker

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
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="the SFT model (local folder or Hub id)")
    p.add_argument("--dataset", default=DATASET, help="Hub id, local JSON/JSONL/parquet file, or folder of split files")
    p.add_argument("--task", default="gec", help="CoEdIT task to keep (rows whose `task` differs are dropped)")
    p.add_argument("--output-dir", required=True, help="folder for the pair chunks (a rerun resumes)")
    p.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.5], help="one sample per temperature")
    p.add_argument("--max-samples", type=int, default=None, help="use only the first N training prompts")
    p.add_argument("--batch-size", type=int, default=64, help="prompts per generation batch")
    p.add_argument("--max-new-tokens", type=int, default=256, help="longest sampled correction")
    p.add_argument("--chunk-size", type=int, default=1024, help="prompts per saved chunk (the unit of resume)")
    p.add_argument("--seed", type=int, default=42, help="sampling seed")
    return p


def metadata_of(args) -> dict:
    return {
        "model": str(Path(args.model).resolve()) if Path(args.model).exists() else args.model,
        "model_sha256": model_fingerprint(args.model),
        "dataset": args.dataset, "task": args.task, "split": "train", "max_samples": args.max_samples,
        "temperatures": args.temperatures, "seed": args.seed, "max_new_tokens": args.max_new_tokens,
        "chunk_size": args.chunk_size, "prompt_template": PROMPT_TEMPLATE, "completion": "' ' + text + EOS",
    }


def claim_output_dir(output_dir: Path, metadata: dict) -> bool:
    """True if `output_dir` already holds pairs made with exactly `metadata` (reuse them)."""
    marker = read_marker(output_dir)
    if marker and marker.get("stage") == STAGE:
        if marker["settings"] != metadata:
            changed = sorted(k for k in metadata if marker["settings"].get(k) != metadata[k])
            raise UserError(f"{output_dir} holds pairs made with other settings ({', '.join(changed)} differ); "
                            "use a new --output-dir.")
        return bool(marker.get("done"))
    prepare_output_dir(output_dir, STAGE, metadata)
    return False


def sample_chunk(model, tokenizer, rows, args, chunk_index: int) -> list[dict]:
    prompts = [make_prompt(src) for src in rows["src"]]
    samples = [generate_corrections(model, tokenizer, prompts, batch_size=args.batch_size, temperature=t,
                                    max_new_tokens=args.max_new_tokens, seed=args.seed + 1000 * chunk_index + k,
                                    desc=f"chunk {chunk_index} T={t}")
               for k, t in enumerate(args.temperatures)]
    return [{"src": src, "tgt": tgt, "samples": [s[i] for s in samples]}
            for i, (src, tgt) in enumerate(zip(rows["src"], rows["tgt"]))]


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
    check_max_samples(args.max_samples)
    if args.batch_size < 1 or args.chunk_size < 1 or args.max_new_tokens < 1:
        raise UserError("--batch-size, --chunk-size and --max-new-tokens must be positive.")
    if len(args.temperatures) < 2 or min(args.temperatures) <= 0:
        raise UserError("--temperatures needs at least two positive values (one sample each).")
    out = Path(args.output_dir)
    rows = load_gec_examples(args.dataset, "train", args.max_samples, args.task)
    metadata = metadata_of(args)
    if claim_output_dir(out, metadata):
        print(f"Reusing the pairs in {out} (made with the same model and settings).")
        return read_marker(out)["metrics"]
    model, tokenizer = load_model_and_tokenizer(args.model)
    (out / CHUNK_DIR).mkdir(exist_ok=True)
    sampled = []
    for index, start in enumerate(range(0, len(rows), args.chunk_size)):
        chunk_file = out / CHUNK_DIR / f"chunk-{index:05d}.jsonl"
        if not chunk_file.is_file():  # chunks already on disk come from an interrupted run with the same settings
            chunk = sample_chunk(model, tokenizer, rows[start:start + args.chunk_size], args, index)
            tmp = chunk_file.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in chunk))
            tmp.rename(chunk_file)
        sampled += [json.loads(line) for line in chunk_file.read_text().splitlines()]
    pairs = pairs_from_samples(sampled)
    if not pairs:
        raise UserError("Every sampled pair was a tie; no preference pairs. Use more prompts or other temperatures.")
    (out / "train.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    (out / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    metrics = {"prompts": len(rows), "pairs": len(pairs), "ties_dropped": len(rows) - len(pairs)}
    mark_done(out, metrics)
    print(f"Preference pairs: {metrics} -> {out / 'train.jsonl'}")
    return metrics


@exit_on_user_error
def main(argv=None):
    run(argv)


if __name__ == "__main__":
    main()
