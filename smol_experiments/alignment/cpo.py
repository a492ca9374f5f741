"""Stage 4: CPO from the SFT model on the same preference pairs (TRL's CPOTrainer: no reference model).

    python -m smol_experiments.alignment.cpo --model runs/coedit/sft --dataset runs/coedit/pairs \\
        --output-dir runs/coedit/cpo
"""

from __future__ import annotations

from smol_experiments.alignment.cli import make_config, stage_parser, training_kwargs
from smol_experiments.alignment.preference_stage import run_preference_stage
from smol_experiments.alignment.prompt_format import encode_completion, encode_prompt
from smol_experiments.flags import non_negative_float, positive_float
from smol_experiments.stages import stage_main

STAGE = "cpo"
# TRL checks the loss type only at the first training step; here it is checked with the flags.
LOSS_TYPES = ("sigmoid", "hinge", "ipo", "simpo", "alphapo")


def build_parser():
    p = stage_parser(__doc__.splitlines()[0], model=None, learning_rate=5e-7, batch_size=12, scheduler="cosine",
                     preference=True)
    p.add_argument("--beta", type=positive_float, default=0.05, help="inverse temperature of the preference loss")
    p.add_argument("--cpo-alpha", type=non_negative_float, default=1.0,
                   help="weight of the NLL (behaviour cloning) term on chosen")
    p.add_argument("--loss-type", default="sigmoid", choices=LOSS_TYPES, help="TRL CPO loss")
    return p


def tokenize_pair_row(row: dict, tokenizer, max_length: int) -> dict:
    """A pair tokenized in the one prompt format, in the layout CPOTrainer's collator expects.

    TRL's own CPO tokenization prepends the tokenizer's BOS to every prompt (SmolLM's is <|endoftext|>), which
    SFT, DPO and generation never do: CPO would train on a context the model never sees at inference.
    """
    prompt_ids = encode_prompt(tokenizer, row["prompt"])
    out = {"prompt_input_ids": prompt_ids, "prompt_attention_mask": [1] * len(prompt_ids)}
    for side in ("chosen", "rejected"):
        answer_ids = encode_completion(tokenizer, row["prompt"], row[side])
        answer_ids = answer_ids[: max(0, max_length - len(prompt_ids))]
        ids = prompt_ids + answer_ids
        out[f"{side}_input_ids"] = ids
        out[f"{side}_attention_mask"] = [1] * len(ids)
        out[f"{side}_labels"] = [-100] * len(prompt_ids) + answer_ids
    return out


def cpo_trainer_class():
    from trl.experimental.cpo import CPOTrainer

    class OneFormatCPOTrainer(CPOTrainer):
        def tokenize_row(self, feature, model=None) -> dict:
            return tokenize_pair_row(feature, self.processing_class, self.max_length)

    return OneFormatCPOTrainer


def build_cpo_trainer(model, tokenizer, pairs, args):
    from smolhub_hub.extras import require

    require("trl", "the CPO stage")
    from trl.experimental.cpo import CPOConfig

    config = make_config(CPOConfig, **training_kwargs(args), beta=args.beta, cpo_alpha=args.cpo_alpha,
                         loss_type=args.loss_type, max_length=args.max_length,
                         per_device_eval_batch_size=args.batch_size,
                         remove_unused_columns=False)  # the pair collator needs the tokenized columns
    return cpo_trainer_class()(model=model, args=config, processing_class=tokenizer, train_dataset=pairs)


def run(argv=None) -> dict:
    return run_preference_stage(build_parser().parse_args(argv), STAGE, build_cpo_trainer)


@stage_main
def main(argv=None) -> dict:
    return run(argv)



if __name__ == "__main__":
    main()
