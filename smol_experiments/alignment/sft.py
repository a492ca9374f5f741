"""Stage 1: supervised fine-tuning on CoEdIT (task gec) with TRL's SFTTrainer, loss on the completion only.

    python -m smol_experiments.alignment.sft --output-dir runs/coedit/sft
"""

from __future__ import annotations

from smolhub_hub.errors import exit_on_user_error

from smol_experiments.alignment.cli import BASE_MODEL, settings_of, stage_parser, training_kwargs
from smol_experiments.alignment.data import check_max_samples, load_gec_examples, load_model_and_tokenizer, \
    to_prompt_completion
from smol_experiments.alignment.run_dir import mark_done, prepare_output_dir, train_and_save

STAGE = "sft"


def build_parser():
    p = stage_parser(__doc__.splitlines()[0], model=BASE_MODEL, learning_rate=7e-5, batch_size=12)
    p.add_argument("--eval-samples", type=int, default=200,
                   help="validation rows for the completion loss reported at the end (0: skip)")
    return p


def build_sft_trainer(model, tokenizer, train_rows, args, eval_rows=None):
    """An SFTTrainer on prompt/completion rows: TRL masks the prompt, so the loss covers ' {tgt}' + EOS only."""
    from smolhub_hub.extras import require

    require("trl", "the SFT stage")
    from trl import SFTConfig, SFTTrainer

    config = SFTConfig(**training_kwargs(args), max_length=args.max_length, completion_only_loss=True,
                       packing=False, per_device_eval_batch_size=args.batch_size)
    return SFTTrainer(model=model, args=config, processing_class=tokenizer,
                      train_dataset=to_prompt_completion(train_rows),
                      eval_dataset=to_prompt_completion(eval_rows) if eval_rows is not None else None)


def run(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    check_max_samples(args.max_samples)
    train_rows = load_gec_examples(args.dataset, "train", args.max_samples, args.task)
    eval_rows = load_gec_examples(args.dataset, "validation", args.eval_samples, args.task) \
        if args.eval_samples > 0 else None
    model, tokenizer = load_model_and_tokenizer(args.model)
    resume = prepare_output_dir(args.output_dir, STAGE, settings_of(args))
    trainer = build_sft_trainer(model, tokenizer, train_rows, args, eval_rows)
    metrics = {**train_and_save(trainer, tokenizer, args.output_dir, resume), "train_rows": len(train_rows)}
    if eval_rows is not None:
        metrics["eval_completion_loss"] = trainer.evaluate()["eval_loss"]
    mark_done(args.output_dir, metrics)
    print(f"SFT done: {metrics} -> {args.output_dir}")
    return metrics


@exit_on_user_error
def main(argv=None):
    run(argv)


if __name__ == "__main__":
    main()
