"""The body DPO and CPO share: preference pairs in, a trained model and its metrics out."""

from __future__ import annotations

from smol_experiments.alignment.cli import settings_of
from smol_experiments.alignment.data import check_max_samples, load_model_and_tokenizer, load_preference_pairs
from smol_experiments.alignment.run_dir import mark_done, prepare_output_dir, train_and_save


def run_preference_stage(args, stage: str, build_trainer) -> dict:
    """`build_trainer(model, tokenizer, pairs, args)` makes the stage's TRL trainer."""
    check_max_samples(args.max_samples)
    pairs = load_preference_pairs(args.dataset, args.max_samples)
    model, tokenizer = load_model_and_tokenizer(args.model)
    resume = prepare_output_dir(args.output_dir, stage, settings_of(args))
    trainer = build_trainer(model, tokenizer, pairs, args)
    metrics = {**train_and_save(trainer, tokenizer, args.output_dir, resume), "pairs": len(pairs)}
    mark_done(args.output_dir, metrics)
    print(f"{stage.upper()} done: {metrics} -> {args.output_dir}")
    return metrics
