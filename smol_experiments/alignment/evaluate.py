"""Stage 5: evaluate models on the CoEdIT validation split with greedy decoding.

Corpus BLEU (sacrebleu, 13a tokenization, 4-gram, one reference; reported 0-1 like the reference project),
chrF (0-1) and exact match, for each model and for the "copy the input" baseline, which a GEC system must
beat. Writes results.json, results.md, results.png and each model's predictions.

    python -m smol_experiments.alignment.evaluate --models base=HuggingFaceTB/SmolLM-135M sft=runs/coedit/sft \\
        dpo=runs/coedit/dpo cpo=runs/coedit/cpo --output-dir runs/coedit/eval
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from smolhub_hub.errors import UserError, exit_on_user_error

from smol_experiments.alignment.cli import DATASET
from smol_experiments.alignment.data import check_max_samples, load_gec_examples, load_model_and_tokenizer
from smol_experiments.alignment.generation import generate_corrections
from smol_experiments.alignment.prompt_format import make_prompt, strip_instruction
from smol_experiments.alignment.run_dir import model_fingerprint, read_marker, write_marker

STAGE = "eval"
COPY_BASELINE = "copy-input"
METRICS = ("bleu", "chrf", "exact_match")


def corpus_metrics(hypotheses: list[str], references: list[str]) -> dict:
    from smolhub_hub.extras import require

    sacrebleu = require("sacrebleu", "the evaluation (BLEU)")

    hyps = [h.strip() for h in hypotheses]
    refs = [r.strip() for r in references]
    return {
        "bleu": sacrebleu.corpus_bleu(hyps, [refs], tokenize="13a").score / 100,
        "chrf": sacrebleu.corpus_chrf(hyps, [refs]).score / 100,
        "exact_match": sum(h == r for h, r in zip(hyps, refs)) / len(refs),
    }


def parse_models(specs: list[str]) -> dict[str, str]:
    models = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--models {spec!r}: write NAME=PATH_OR_HUB_ID, e.g. sft=runs/coedit/sft.")
        if name in models or name == COPY_BASELINE:
            raise UserError(f"--models: the name {name!r} is used twice or reserved; pick distinct names.")
        models[name] = path
    return models


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", nargs="+", required=True, metavar="NAME=PATH", help="models to compare, in order")
    p.add_argument("--dataset", default=DATASET, help="Hub id, local JSON/JSONL/parquet file, or folder of split files")
    p.add_argument("--task", default="gec", help="CoEdIT task to evaluate on (rows of other tasks are dropped)")
    p.add_argument("--split", default="validation", help="dataset split to evaluate on")
    p.add_argument("--output-dir", required=True, help="folder for results.md, results.json and cached predictions")
    p.add_argument("--max-samples", type=int, default=None, help="evaluate on the first N rows only")
    p.add_argument("--batch-size", type=int, default=32, help="prompts per generation batch")
    p.add_argument("--max-new-tokens", type=int, default=256, help="longest greedy correction")
    return p


def claim_eval_dir(out: Path) -> None:
    """An evaluation folder may be rewritten by evaluation only; anything else in it is left alone."""
    marker = read_marker(out)
    if marker is None and out.exists() and any(out.iterdir()):
        raise UserError(f"--output-dir {out} is not empty and holds no evaluation; use a new folder.")
    if marker is not None and marker.get("stage") != STAGE:
        raise UserError(f"--output-dir {out} holds a '{marker.get('stage')}' run; evaluation will not write there.")
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, {"stage": STAGE, "done": False})


def predict(name: str, model_path: str, rows, args, out: Path) -> list[str]:
    """Greedy corrections; reused from predictions/NAME.json when the same model and rows made them (resume)."""
    key = {"model": model_path, "model_sha256": model_fingerprint(model_path), "dataset": args.dataset,
           "split": args.split, "task": args.task, "rows": len(rows), "max_new_tokens": args.max_new_tokens}
    cache = out / "predictions" / f"{name}.json"
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if saved["key"] == key:
            return saved["predictions"]
    model, tokenizer = load_model_and_tokenizer(model_path)
    predictions = generate_corrections(model, tokenizer, [make_prompt(s) for s in rows["src"]],
                                       batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, desc=name)
    cache.parent.mkdir(exist_ok=True)
    cache.write_text(json.dumps({"key": key, "predictions": predictions}, indent=1))
    return predictions


def write_table(results: dict, out: Path) -> None:
    lines = [f"Greedy decoding, {results['rows']} rows of {results['dataset']} ({results['split']}, task "
             f"{results['task']}).", "", "| system | BLEU | chrF | exact match |", "|---|---|---|---|"]
    for name, m in results["systems"].items():
        lines.append(f"| {name} | {m['bleu']:.4f} | {m['chrf']:.4f} | {m['exact_match']:.4f} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")


def plot_results(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = list(results["systems"])
    width = 0.8 / len(systems)
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, name in enumerate(systems):
        values = [results["systems"][name][m] for m in METRICS]
        bars = ax.bar([j + i * width for j in range(len(METRICS))], values, width, label=name)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks([j + width * (len(systems) - 1) / 2 for j in range(len(METRICS))], ["BLEU", "chrF", "exact match"])
    ax.set_ylim(0, 1.05)
    ax.set_title(f"CoEdIT {results['split']} ({results['rows']} rows), greedy decoding")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    check_max_samples(args.max_samples)
    models = parse_models(args.models)
    rows = load_gec_examples(args.dataset, args.split, args.max_samples, args.task)
    out = Path(args.output_dir)
    claim_eval_dir(out)
    references = rows["tgt"]
    systems = {COPY_BASELINE: corpus_metrics([strip_instruction(s) for s in rows["src"]], references)}
    for name, path in models.items():
        systems[name] = {**corpus_metrics(predict(name, path, rows, args, out), references), "model": path}
    results = {"dataset": args.dataset, "split": args.split, "task": args.task, "rows": len(rows),
               "decoding": "greedy", "systems": systems}
    write_table(results, out)
    plot_results(results, out / "results.png")
    write_marker(out, {"stage": STAGE, "done": True})
    print((out / "results.md").read_text())
    return results


@exit_on_user_error
def main(argv=None):
    run(argv)


if __name__ == "__main__":
    main()
