"""The whole pipeline in one command: SFT -> preference pairs -> DPO and CPO -> evaluation.

Each stage writes its own folder under --output-dir and records the settings and inputs it ran with. Rerunning
the same command after any interruption continues where it stopped: a finished stage with the same settings is
reused, an unfinished one resumes from its last checkpoint. A stage whose settings changed (e.g. --dpo-args
"--beta 0.5") is refused, naming what differs, unless --overwrite: then only the stages whose settings or
inputs changed are redone. `--quick` is a small offline smoke run: a tiny random Llama and a synthetic GEC set
made from the built-in story corpus (unless --model / --dataset are given), with hyperparameters scaled for it;
the full run uses the reference project's settings.

    python -m smol_experiments.alignment.run_pipeline --output-dir runs/coedit            # SmolLM-135M, CoEdIT
    python -m smol_experiments.alignment.run_pipeline --quick --output-dir runs/quick     # a few minutes on a CPU
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from smol_experiments.alignment import build_preference_pairs, cpo, dpo, evaluate, real_gec, sft
from smol_experiments.alignment.cli import BASE_MODEL, DATASET
from smol_experiments.flags import Parser, path, positive_int, split_stage_args
from smol_experiments.stages import check_output_folder, fingerprint, stage_main, write_folder_once
from smolhub_hub.errors import UserError

# The small model learns nothing at the 135M model's learning rates in a few hundred steps. With DPO's
# documented 5e-7 (or 2e-5) its loss stays at ln 2; at 1e-4 and beta 0.5 over two epochs it falls to ~0.5 with
# reward accuracy ~0.9, while 5e-4 at beta 0.05 collapsed the tiny model (BLEU 0.98 -> 0.11).
QUICK = {
    "sft": ["--learning-rate", "2e-3", "--epochs", "8", "--warmup", "0.05", "--batch-size", "16",
            "--eval-samples", "40"],
    "pairs": ["--batch-size", "64", "--max-new-tokens", "48"],
    "dpo": ["--learning-rate", "1e-4", "--beta", "0.5", "--epochs", "2", "--batch-size", "8"],
    "cpo": ["--learning-rate", "1e-4", "--epochs", "2", "--batch-size", "8"],
    "eval": ["--max-new-tokens", "48"],
}
QUICK_TRAIN_ROWS, QUICK_EVAL_ROWS = 1200, 40
QUICK_MODEL = {"hidden_size": 128, "num_layers": 4}  # big enough to beat copying the input
QUICK_NOTE = ("Quick run: a smoke test of the pipeline on a tiny random model and synthetic data; its numbers "
              "say nothing about SmolLM-135M on CoEdIT.")


def build_parser():
    p = Parser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--output-dir", default="runs/coedit", type=path, help="one subfolder per stage is made here")
    p.add_argument("--model", "--base", default=None, type=path, dest="model",
                   help=f"base model: a Hub id, a transformers folder, a .gguf file or smollm2 (the packaged "
                        f"SmolLM2-135M-Instruct GGUF; a GGUF is converted once to a folder under --output-dir) "
                        f"(default {BASE_MODEL}; --quick: a tiny Llama)")
    p.add_argument("--dataset", default=None, type=path, help=f"GEC data (default {DATASET}; --quick: synthetic)")
    p.add_argument("--packaged-gec", nargs="?", const=real_gec.DEFAULT_SOURCE, default=None, type=path,
                   metavar="SOURCE", help=f"instead of --dataset, GEC rows made from the real English of a packaged "
                   f"text ({real_gec.PACKAGE}; SOURCE defaults to {real_gec.DEFAULT_SOURCE}), written to "
                   "OUTPUT_DIR/gec-data")
    p.add_argument("--quick", action="store_true", help="small offline smoke run")
    p.add_argument("--max-samples", type=positive_int, default=None, help="training rows for SFT and pair building")
    p.add_argument("--eval-samples", type=positive_int, default=None, help="validation rows to evaluate on")
    p.add_argument("--precompute-ref-log-probs", action="store_true", help="DPO: score pairs with the reference once")
    p.add_argument("--report-to", default="none", help="'none' or 'wandb', ...")
    p.add_argument("--overwrite", action="store_true",
                   help="redo the stages whose settings or inputs changed (finished, unchanged stages are kept)")
    for stage in QUICK:
        p.add_argument(f"--{stage}-args", default="", help=f"extra flags for the {stage} stage, e.g. \"--epochs 2\"")
    return p


def quick_inputs(root: Path, model: str | None, dataset: str | None) -> tuple[str, str]:
    """The synthetic data and the tiny model, made once under root/quick-fixtures."""
    from smol_experiments.alignment.fixtures import write_synthetic_gec, write_tiny_model

    fixtures = root / "quick-fixtures"
    fixtures.mkdir(parents=True, exist_ok=True)
    write_folder_once(fixtures / "data", lambda tmp: write_synthetic_gec(tmp, num_train=QUICK_TRAIN_ROWS,
                                                                   num_validation=QUICK_EVAL_ROWS))
    if model is None:  # tokenizer trained on the same text
        write_folder_once(fixtures / "model", lambda tmp: write_tiny_model(tmp, fixtures / "data", **QUICK_MODEL))
    return model or str(fixtures / "model"), dataset or str(fixtures / "data")


def base_folder(model: str, root: Path) -> str:
    """A `.gguf` base as a transformers folder, converted once (its GGUF tokenizer takes minutes to convert, and
    SFT and evaluation both load the base); any other source is used as it is."""
    from smol_experiments.pretrained import load_model_and_tokenizer, resolve

    model = resolve(model)  # smollm2: the packaged .gguf
    if Path(model).suffix != ".gguf":
        return model

    def convert(tmp: Path) -> None:
        base, tokenizer = load_model_and_tokenizer(model)
        base.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return str(write_folder_once(root / f"base-{fingerprint(model, ())[:12]}", convert))


def stage_argv(args, stage: str, argv: list[str]) -> list[str]:
    quick = QUICK[stage] if args.quick else []
    overwrite = ["--overwrite"] if args.overwrite and stage != "eval" else []
    return argv + overwrite + quick + args.extra[stage]


def run(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    # split before any stage runs, so that a bad quote is reported at once
    args.extra = {stage: split_stage_args(f"--{stage}-args", getattr(args, f"{stage}_args")) for stage in QUICK}
    root = Path(args.output_dir)
    check_output_folder(root, "--output-dir")
    if args.packaged_gec and args.dataset:
        raise UserError("give --dataset or --packaged-gec, not both.")
    model, dataset = args.model, args.dataset
    if args.packaged_gec:  # rebuilt each time: deterministic, seconds, and always from the SOURCE given now
        dataset = str(root / "gec-data")
        real_gec.build_gec_dataset(args.packaged_gec, dataset)
    train_rows, eval_rows = args.max_samples, args.eval_samples
    if args.quick:
        if args.model is None:
            torch.set_num_threads(1)  # the small model's matrices are too small to share between threads
        model, dataset = quick_inputs(root, model, dataset)
        train_rows, eval_rows = train_rows or QUICK_TRAIN_ROWS, eval_rows or QUICK_EVAL_ROWS
    model, dataset = base_folder(model or BASE_MODEL, root), dataset or DATASET
    dirs = {stage: str(root / stage) for stage in ("sft", "pairs", "dpo", "cpo", "eval")}
    limit = ["--max-samples", str(train_rows)] if train_rows else []
    report = ["--report-to", args.report_to]

    sft.run(stage_argv(args, "sft", ["--model", model, "--dataset", dataset, "--output-dir", dirs["sft"],
                                     *limit, *report]))
    build_preference_pairs.run(stage_argv(args, "pairs", ["--model", dirs["sft"], "--dataset", dataset,
                                                          "--output-dir", dirs["pairs"], *limit]))
    pair_args = ["--model", dirs["sft"], "--dataset", dirs["pairs"], *report]
    precompute = ["--precompute-ref-log-probs"] if args.precompute_ref_log_probs else []
    dpo.run(stage_argv(args, "dpo", [*pair_args, "--output-dir", dirs["dpo"], *precompute]))
    cpo.run(stage_argv(args, "cpo", [*pair_args, "--output-dir", dirs["cpo"]]))
    eval_limit = ["--max-samples", str(eval_rows)] if eval_rows else []
    note = ["--note", QUICK_NOTE] if args.quick else []
    models = [f"base={model}", f"sft={dirs['sft']}", f"sft+dpo={dirs['dpo']}", f"sft+cpo={dirs['cpo']}"]
    return evaluate.run(stage_argv(args, "eval", ["--models", *models, "--dataset", dataset, "--chat-template", "base",
                                                  "--output-dir", dirs["eval"], *eval_limit, *note]))


@stage_main
def main(argv=None) -> dict:
    return run(argv)


if __name__ == "__main__":
    main()
