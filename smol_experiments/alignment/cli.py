"""Flags shared by the training stages, and their translation into TRL config keyword arguments."""

from __future__ import annotations

import argparse

from smolhub_hub.errors import UserError

from smol_experiments.flags import Parser, non_negative_float, non_negative_int, path, positive_float, positive_int

BASE_MODEL = "HuggingFaceTB/SmolLM-135M"
DATASET = "grammarly/coedit"
# Flags that change how a run is logged or stored, never the model it trains: not part of its recorded settings.
BOOKKEEPING = ("output_dir", "overwrite", "report_to", "logging_steps", "save_steps")


def stage_parser(description: str, *, model: str | None, learning_rate: float, batch_size: int,
                 scheduler: str = "linear", preference: bool = False) -> argparse.ArgumentParser:
    """A parser with every flag a stage has in common; the defaults are the reference project's.

    `model=None` makes --model required (DPO/CPO start from your SFT model); `preference=True` makes --dataset
    a required preference-pairs source instead of CoEdIT.
    """
    from transformers.trainer_utils import SchedulerType

    p = Parser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    if model is None:
        p.add_argument("--model", required=True, type=path, help="local folder (or Hub id) of the starting model")
    else:
        p.add_argument("--model", "--base", default=model, type=path, dest="model",
                       help="the base model: a Hub id, a transformers folder or a .gguf file")
    if preference:
        p.add_argument("--dataset", required=True, type=path, help="pairs folder from build_preference_pairs, a "
                       "local JSON/JSONL/parquet file or a Hub id with prompt/chosen/rejected")
    else:
        p.add_argument("--dataset", default=DATASET, type=path,
                       help="Hub id, local JSON/JSONL/parquet file, or folder of split files")
        p.add_argument("--task", default="gec", help="CoEdIT task to keep (rows whose `task` differs are dropped)")
    add_output_flags(p)
    p.add_argument("--learning-rate", type=positive_float, default=learning_rate, help="peak learning rate")
    p.add_argument("--lr-scheduler", default=scheduler, choices=[s.value for s in SchedulerType],
                   help="transformers scheduler name")
    p.add_argument("--warmup", type=non_negative_float, default=0.0,
                   help="warmup steps (int) or share of all steps (float < 1)")
    p.add_argument("--batch-size", type=positive_int, default=batch_size, help="per-device train batch size")
    p.add_argument("--grad-accum", type=positive_int, default=1, help="gradient accumulation steps")
    p.add_argument("--epochs", type=positive_float, default=1.0, help="passes over the training rows")
    p.add_argument("--max-length", type=positive_int, default=350, help="longest prompt+completion in tokens")
    p.add_argument("--max-samples", type=positive_int, default=None, help="use only the first N training examples")
    p.add_argument("--seed", type=non_negative_int, default=42, help="data order and initialisation")
    p.add_argument("--save-steps", type=positive_int, default=500,
                   help="checkpoint every N optimizer steps (for resume)")
    p.add_argument("--logging-steps", type=positive_int, default=10, help="log every N optimizer steps")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute activations to save memory (TRL turns it on by default; 135M does not need it)")
    p.add_argument("--report-to", default="none", help="'none', 'wandb', 'tensorboard', ...")
    return p


def add_output_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output-dir", required=True, type=path,
                   help="folder for this stage: a new one, or its own run (finished with the same settings: "
                        "reused; unfinished: resumed)")
    p.add_argument("--overwrite", action="store_true",
                   help="redo the stage if --output-dir holds a run made with other settings (otherwise refused)")


def training_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments every TRL config here takes (they all derive from TrainingArguments)."""
    import torch

    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
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
        bf16=bf16,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )


def make_config(config_cls, **kwargs):
    """A TRL config; a combination of settings it rejects is one line, not a traceback."""
    try:
        return config_cls(**kwargs)
    except ValueError as e:
        raise UserError(f"these settings do not work together: {str(e).splitlines()[0]}") from None


def recorded_settings(args: argparse.Namespace, **inputs: str) -> dict:
    """What decides the stage's result: its flags (bookkeeping aside) and its inputs' fingerprints."""
    flags = {k: v for k, v in vars(args).items() if k not in BOOKKEEPING}
    return {**flags, **inputs}
