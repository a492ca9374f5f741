"""Flags shared by the training stages, and their translation into TRL config keyword arguments."""

from __future__ import annotations

import argparse

from smolhub_hub.errors import UserError

BASE_MODEL = "HuggingFaceTB/SmolLM-135M"
DATASET = "grammarly/coedit"


def stage_parser(description: str, *, model: str | None, learning_rate: float, batch_size: int,
                 scheduler: str = "linear", preference: bool = False) -> argparse.ArgumentParser:
    """A parser with every flag a stage has in common; the defaults are the reference project's.

    `model=None` makes --model required (DPO/CPO start from your SFT model); `preference=True` makes --dataset
    a required preference-pairs source instead of CoEdIT.
    """
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=model, required=model is None,
                   help="Hub id or local folder of the starting model")
    if preference:
        p.add_argument("--dataset", required=True, help="pairs folder from build_preference_pairs, a local "
                       "JSON/JSONL/parquet file or a Hub id with prompt/chosen/rejected")
    else:
        p.add_argument("--dataset", default=DATASET,
                       help="Hub id, local JSON/JSONL/parquet file, or folder of split files")
        p.add_argument("--task", default="gec", help="CoEdIT task to keep (rows whose `task` differs are dropped)")
    p.add_argument("--output-dir", required=True,
                   help="new folder for this stage (or its own unfinished run, to resume)")
    p.add_argument("--learning-rate", type=float, default=learning_rate, help="peak learning rate")
    p.add_argument("--lr-scheduler", default=scheduler, help="transformers scheduler name (linear, cosine, ...)")
    p.add_argument("--warmup", type=float, default=0.0, help="warmup steps (int) or share of all steps (float < 1)")
    p.add_argument("--batch-size", type=int, default=batch_size, help="per-device train batch size")
    p.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    p.add_argument("--epochs", type=float, default=1.0, help="passes over the training rows")
    p.add_argument("--max-length", type=int, default=350, help="longest prompt+completion in tokens")
    p.add_argument("--max-samples", type=int, default=None, help="use only the first N training examples")
    p.add_argument("--seed", type=int, default=42, help="data order and initialisation")
    p.add_argument("--save-steps", type=int, default=500, help="checkpoint every N optimizer steps (for resume)")
    p.add_argument("--logging-steps", type=int, default=10, help="log every N optimizer steps")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute activations to save memory (TRL turns it on by default; 135M does not need it)")
    p.add_argument("--report-to", default="none", help="'none', 'wandb', 'tensorboard', ...")
    return p


def check_positive(args: argparse.Namespace) -> None:
    for flag in ("learning_rate", "batch_size", "grad_accum", "epochs", "max_length", "save_steps"):
        if getattr(args, flag) <= 0:
            raise UserError(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}.")


def training_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments every TRL config here takes (they all derive from TrainingArguments)."""
    import torch

    check_positive(args)
    return dict(
        output_dir=args.output_dir,
        learning_rate=args.learning_rate,
        lr_scheduler_type=args.lr_scheduler,
        warmup_steps=args.warmup,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        num_train_epochs=args.epochs,
        seed=args.seed,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=1,
        logging_steps=args.logging_steps,
        report_to=[] if args.report_to == "none" else [args.report_to],
        gradient_checkpointing=args.gradient_checkpointing,
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        dataloader_num_workers=0,
        disable_tqdm=False,
    )


def settings_of(args: argparse.Namespace) -> dict:
    """The flags as a JSON-able dict, recorded in the run folder."""
    return {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None)))}
