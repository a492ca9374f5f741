"""The body DPO and CPO share: preference pairs in, a trained model and its metrics out."""

from __future__ import annotations

from pathlib import Path

from smol_experiments.alignment.cli import recorded_settings
from smol_experiments.alignment.data import load_preference_pairs
from smol_experiments.alignment.run_dir import data_fingerprint, prepare_output_dir, train_and_save
from smol_experiments.pretrained import load_model_and_tokenizer
from smol_experiments.stages import FRESH, REUSE, begin, mark_done, model_fingerprint, reused


def run_preference_stage(args, stage: str, build_trainer) -> dict:
    """`build_trainer(model, tokenizer, pairs, args)` makes the stage's TRL trainer."""
    settings = recorded_settings(args, model_sha256=model_fingerprint(args.model),
                                 dataset_sha256=data_fingerprint(args.dataset))
    status, resume = prepare_output_dir(args.output_dir, stage, settings, args.overwrite)
    if status == REUSE:
        return reused(args.output_dir, stage)
    pairs = load_preference_pairs(args.dataset, args.max_samples)
    model, tokenizer = load_model_and_tokenizer(args.model)
    if status == FRESH:
        begin(Path(args.output_dir), stage, settings)
    trainer = build_trainer(model, tokenizer, pairs, args)
    metrics = {**train_and_save(trainer, tokenizer, args.output_dir, resume), "pairs": len(pairs)}
    mark_done(args.output_dir, metrics)
    print(f"{stage.upper()} done: {metrics} -> {args.output_dir}")
    return metrics
