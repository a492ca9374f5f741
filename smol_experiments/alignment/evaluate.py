"""Stage 5: evaluate models on the CoEdIT validation split with greedy decoding.

Corpus BLEU (sacrebleu, 13a tokenization, 4-gram, one reference; reported 0-1 like the reference project),
chrF (0-1) and exact match, for each model and for the "copy the input" baseline, which a GEC system must
beat. Every score comes with a paired bootstrap interval over sentences, and every system is compared with
one (`--compare-to`, default sft): a difference whose interval contains 0 is reported as no significant
difference. The table also gives each system's share of unchanged outputs (the input sentence copied): every
row has an error, so it shows how often a system corrected nothing. Writes results.json, results.md,
results.png and each model's predictions.

    python -m smol_experiments.alignment.evaluate --models base=HuggingFaceTB/SmolLM-135M sft=runs/coedit/sft \\
        dpo=runs/coedit/dpo cpo=runs/coedit/cpo --output-dir runs/coedit/eval
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import numpy as np

from smol_experiments.alignment.cli import DATASET
from smol_experiments.alignment.data import load_gec_examples
from smol_experiments.alignment.generation import generate_corrections
from smol_experiments.alignment.prompt_format import make_prompt, strip_instruction
from smol_experiments.alignment.run_dir import data_fingerprint
from smol_experiments.bootstrap import LEVEL, RESAMPLES, paired_bootstrap, ratio, verdict
from smol_experiments.flags import Parser, non_negative_int, path, positive_int
from smol_experiments.pretrained import load_model_and_tokenizer
from smol_experiments.stages import (
    check_output_folder,
    model_fingerprint,
    read_marker,
    stage_main,
    write_atomic,
    write_marker,
)
from smolhub_hub.errors import UserError
from smolhub_hub.extras import require

STAGE = "eval"
COPY_BASELINE = "copy-input"
METRICS = ("bleu", "chrf", "exact_match")
METRIC_NAMES = {"bleu": "BLEU", "chrf": "chrF", "exact_match": "exact match"}


@functools.cache
def _sacrebleu_metric(metric: str):
    sacrebleu = require("sacrebleu", "the evaluation (BLEU)")
    return sacrebleu.BLEU(tokenize="13a") if metric == "bleu" else sacrebleu.CHRF()


def sentence_statistics(hypotheses: list[str], references: list[str]) -> dict[str, np.ndarray]:
    """Per-sentence sufficient statistics of each metric, (sentences, k): sacrebleu's n-gram counts for
    BLEU and chrF, (match, 1) for exact match. Summed over sentences they give the corpus score."""
    hyps = [h.strip() for h in hypotheses]
    refs = [r.strip() for r in references]
    stats = {m: np.array(_sacrebleu_metric(m)._extract_corpus_statistics(hyps, [refs])) for m in ("bleu", "chrf")}
    return {**stats, "exact_match": np.array([[h == r, 1] for h, r in zip(hyps, refs, strict=True)])}


def score_from_sums(metric: str, sums: np.ndarray) -> float:
    """The corpus score (0-1) of summed sentence statistics, exactly as sacrebleu computes it."""
    if metric == "exact_match":
        return ratio(sums)
    return float(_sacrebleu_metric(metric)._compute_score_from_stats(list(sums)).score) / 100


def corpus_metrics(hypotheses: list[str], references: list[str]) -> dict:
    stats = sentence_statistics(hypotheses, references)
    return {m: score_from_sums(m, stats[m].sum(0)) for m in METRICS}


def unchanged_share(hypotheses: list[str], sources: list[str]) -> float:
    """The share of outputs identical to their input sentence: how often a system corrected nothing (the copy
    baseline scores 1). Every row has an error, so a rising share means a system learned to leave errors in."""
    same = [h.strip() == s.strip() for h, s in zip(hypotheses, sources, strict=True)]
    return sum(same) / len(same)


def parse_models(specs: list[str]) -> dict[str, str]:
    models = {}
    for spec in specs:
        name, sep, where = spec.partition("=")
        if not sep or not name or not where:
            raise UserError(f"--models {spec!r}: write NAME=PATH_OR_HUB_ID, e.g. sft=runs/coedit/sft.")
        if name in models or name == COPY_BASELINE:
            raise UserError(f"--models: the name {name!r} is used twice or reserved; pick distinct names.")
        models[name] = path(where)
    return models


def build_parser():
    p = Parser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", nargs="+", required=True, metavar="NAME=PATH", help="models to compare, in order")
    p.add_argument("--dataset", default=DATASET, type=path,
                   help="Hub id, local JSON/JSONL/parquet file, or folder of split files")
    p.add_argument("--task", default="gec", help="CoEdIT task to evaluate on (rows of other tasks are dropped)")
    p.add_argument("--split", default="validation", help="dataset split to evaluate on")
    p.add_argument("--output-dir", required=True, type=path,
                   help="folder for results.md, results.json and cached predictions")
    p.add_argument("--max-samples", type=positive_int, default=None, help="evaluate on the first N rows only")
    p.add_argument("--batch-size", type=positive_int, default=32, help="prompts per generation batch")
    p.add_argument("--max-new-tokens", type=positive_int, default=256, help="longest greedy correction")
    p.add_argument("--compare-to", default=None,
                   help="the system every other one is compared with (default: sft if given, else the first model)")
    p.add_argument("--bootstrap-resamples", type=positive_int, default=RESAMPLES,
                   help="paired bootstrap resamples over sentences for the 95%% intervals")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the bootstrap resampling")
    p.add_argument("--note", default="", help="a line printed under the table's heading")
    p.add_argument("--chat-template", nargs="+", default=[], metavar="NAME",
                   help="systems prompted zero-shot through their tokenizer's chat template (the user turn is the "
                        "row's instruction and sentence), as an instruct model is used; without one: the plain prompt")
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


def prompts_for(tokenizer, sources: list[str], chat: bool) -> tuple[list[str], str]:
    """(the prompts, "chat template" or "plain"): the one prompt format, or a user turn of the chat template."""
    if chat and tokenizer.chat_template:
        return [tokenizer.apply_chat_template([{"role": "user", "content": s}], tokenize=False,
                                              add_generation_prompt=True) for s in sources], "chat template"
    return [make_prompt(s) for s in sources], "plain"


def predict(name: str, model_path: str, rows, args, out: Path) -> tuple[list[str], str]:
    """Greedy corrections and the prompt kind; reused from predictions/NAME.json when the same model, rows and
    prompting made them (resume)."""
    chat = name in args.chat_template
    key = {"model": model_path, "model_sha256": model_fingerprint(model_path), "dataset": args.dataset,
           "dataset_sha256": data_fingerprint(args.dataset), "split": args.split, "task": args.task,
           "rows": len(rows), "max_new_tokens": args.max_new_tokens, "chat_template": chat}
    cache = out / "predictions" / f"{name}.json"
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if saved["key"] == key:
            return saved["predictions"], saved["prompt"]
    model, tokenizer = load_model_and_tokenizer(model_path)
    prompts, kind = prompts_for(tokenizer, rows["src"], chat)
    predictions = generate_corrections(model, tokenizer, prompts, batch_size=args.batch_size,
                                       max_new_tokens=args.max_new_tokens, desc=name)
    cache.parent.mkdir(exist_ok=True)
    write_atomic(cache, json.dumps({"key": key, "prompt": kind, "predictions": predictions}, indent=1))
    return predictions, kind


def score_systems(predictions: dict[str, list[str]], references: list[str], compare_to: str, *,
                  resamples: int, seed: int) -> tuple[dict, dict]:
    """Each system's scores with intervals, and each system's paired differences to `compare_to` with a verdict."""
    stats = {name: sentence_statistics(hyps, references) for name, hyps in predictions.items()}
    systems = {name: {} for name in predictions}
    comparisons = {name: {} for name in predictions if name != compare_to}
    for metric in METRICS:
        boot = paired_bootstrap({name: s[metric] for name, s in stats.items()},
                                functools.partial(score_from_sums, metric),
                                compare_to=compare_to, resamples=resamples, seed=seed)
        for name, entry in boot["systems"].items():
            systems[name].update({metric: entry["score"], f"{metric}_ci": entry["ci"]})
        for name in comparisons:
            comparisons[name][metric] = boot["vs"][name]
    for diffs in comparisons.values():
        diffs["verdict"] = verdict({METRIC_NAMES[m]: diffs[m] for m in METRICS})
    return systems, comparisons


def write_table(results: dict, out: Path) -> None:
    boot, ref = results["bootstrap"], results["compare_to"]
    interval = f"{boot['level']:.0%} paired bootstrap interval over sentences, {boot['resamples']} resamples"
    lines = [f"Greedy decoding, {results['rows']} rows of {results['dataset']} ({results['split']}, task "
             f"{results['task']}); each score with its {interval}.", *([results["note"]] if results["note"] else []),
             "", "| system | BLEU | chrF | exact match | unchanged |", "|---|---|---|---|---|"]
    for name, m in results["systems"].items():
        cells = [f"{m[k]:.4f} [{m[k + '_ci'][0]:.4f}, {m[k + '_ci'][1]:.4f}]" for k in METRICS]
        cells.append(f"{m['unchanged']:.1%}")
        shown = f"{name} (zero-shot, chat template)" if m.get("prompt") == "chat template" else name
        lines.append(f"| {shown} | {' | '.join(cells)} |")
    lines += ["", f"Difference to {ref} on the same sentences [{interval}]: an interval that contains 0 means "
              "no significant difference, neither a gain nor a loss.", "",
              "| system | Δ BLEU | Δ chrF | Δ exact match | reading |", "|---|---|---|---|---|"]
    for name, diffs in results["comparisons"].items():
        cells = [f"{diffs[k]['diff']:+.4f} [{diffs[k]['ci'][0]:+.4f}, {diffs[k]['ci'][1]:+.4f}]" for k in METRICS]
        lines.append(f"| {name} | {' | '.join(cells)} | {diffs['verdict']} |")
    write_atomic(out / "results.md", "\n".join(lines) + "\n")
    write_atomic(out / "results.json", json.dumps(results, indent=2) + "\n")


def plot_results(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = list(results["systems"])
    width = 0.8 / len(systems)
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, name in enumerate(systems):
        scores = results["systems"][name]
        values = [scores[m] for m in METRICS]
        errors = np.array([[scores[m] - scores[f"{m}_ci"][0], scores[f"{m}_ci"][1] - scores[m]] for m in METRICS]).T
        bars = ax.bar([j + i * width for j in range(len(METRICS))], values, width, yerr=errors, capsize=2,
                      label=name)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks([j + width * (len(systems) - 1) / 2 for j in range(len(METRICS))], ["BLEU", "chrF", "exact match"])
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{Path(results['dataset']).name} {results['split']} ({results['rows']} rows), greedy decoding; "
                 "bars: 95% bootstrap CI")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    models = parse_models(args.models)
    compare_to = args.compare_to or ("sft" if "sft" in models else next(iter(models)))
    if compare_to not in [COPY_BASELINE, *models]:
        raise UserError(f"--compare-to {compare_to}: not one of the systems ({', '.join([COPY_BASELINE, *models])}).")
    unknown = sorted(set(args.chat_template) - set(models))
    if unknown:
        raise UserError(f"--chat-template {' '.join(unknown)}: not in --models ({', '.join(models)}).")
    out = Path(args.output_dir)
    check_output_folder(out, "--output-dir")
    rows = load_gec_examples(args.dataset, args.split, args.max_samples, args.task)
    claim_eval_dir(out)
    predictions = {COPY_BASELINE: [strip_instruction(s) for s in rows["src"]]}
    prompting = {}
    for name, where in models.items():
        predictions[name], prompting[name] = predict(name, where, rows, args, out)
    systems, comparisons = score_systems(predictions, rows["tgt"], compare_to, resamples=args.bootstrap_resamples,
                                         seed=args.seed)
    for name, hyps in predictions.items():
        systems[name]["unchanged"] = unchanged_share(hyps, predictions[COPY_BASELINE])
    for name, where in models.items():
        systems[name].update(model=where, prompt=prompting[name])
    results = {"dataset": args.dataset, "split": args.split, "task": args.task, "rows": len(rows),
               "decoding": "greedy", "note": args.note, "compare_to": compare_to,
               "bootstrap": {"resamples": args.bootstrap_resamples, "seed": args.seed, "level": LEVEL,
                             "unit": "sentence"},
               "systems": systems, "comparisons": comparisons}
    write_table(results, out)
    plot_results(results, out / "results.png")
    write_marker(out, {"stage": STAGE, "done": True})
    print((out / "results.md").read_text())
    return results


@stage_main
def main(argv=None) -> dict:
    return run(argv)


if __name__ == "__main__":
    main()
