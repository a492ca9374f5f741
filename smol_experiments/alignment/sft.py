"""Stage 1: supervised fine-tuning on CoEdIT (task gec) with TRL's SFTTrainer, loss on the completion only.

    python -m smol_experiments.alignment.sft --output-dir runs/coedit/sft
"""

from __future__ import annotations

from pathlib import Path

from smol_experiments.alignment.cli import BASE_MODEL, make_config, recorded_settings, stage_parser, training_kwargs
from smol_experiments.alignment.data import load_gec_examples, to_prompt_completion
from smol_experiments.alignment.run_dir import data_fingerprint, prepare_output_dir, train_and_save
from smol_experiments.flags import non_negative_int
from smol_experiments.pretrained import load_model_and_tokenizer
from smol_experiments.stages import FRESH, REUSE, begin, mark_done, model_fingerprint, reused, stage_main

STAGE = "sft"


def build_parser():
    p = stage_parser(__doc__.splitlines()[0], model=BASE_MODEL, learning_rate=7e-5, batch_size=12)
    p.add_argument("--eval-samples", type=non_negative_int, default=200,
                   help="validation rows for the completion loss reported at the end (0: skip)")
    return p


def build_sft_trainer(model, tokenizer, train_rows, args, eval_rows=None):
    """An SFTTrainer on prompt/completion rows: TRL masks the prompt, so the loss covers ' {tgt}' + EOS only."""
    from smolhub_hub.extras import require

    require("trl", "the SFT stage")
    from trl import SFTConfig, SFTTrainer

    config = make_config(SFTConfig, **training_kwargs(args), max_length=args.max_length, completion_only_loss=True,
                         packing=False, per_device_eval_batch_size=args.batch_size)
    return SFTTrainer(model=model, args=config, processing_class=tokenizer,
                      train_dataset=to_prompt_completion(train_rows),
                      eval_dataset=to_prompt_completion(eval_rows) if eval_rows is not None else None)


def run(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    settings = recorded_settings(args, model_sha256=model_fingerprint(args.model),
                                 dataset_sha256=data_fingerprint(args.dataset))
    status, resume = prepare_output_dir(args.output_dir, STAGE, settings, args.overwrite)
    if status == REUSE:
        return reused(args.output_dir, STAGE)
    train_rows = load_gec_examples(args.dataset, "train", args.max_samples, args.task)
    eval_rows = load_gec_examples(args.dataset, "validation", args.eval_samples, args.task) \
        if args.eval_samples > 0 else None
    model, tokenizer = load_model_and_tokenizer(args.model)
    if status == FRESH:
        begin(Path(args.output_dir), STAGE, settings)
    trainer = build_sft_trainer(model, tokenizer, train_rows, args, eval_rows)
    metrics = {**train_and_save(trainer, tokenizer, args.output_dir, resume), "train_rows": len(train_rows)}
    if eval_rows is not None:
        metrics["eval_completion_loss"] = trainer.evaluate()["eval_loss"]
    mark_done(args.output_dir, metrics)
    print(f"SFT done: {metrics} -> {args.output_dir}")
    return metrics


@stage_main
def main(argv=None) -> dict:
    return run(argv)


if __name__ == "__main__":
    main()
