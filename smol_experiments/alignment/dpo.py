"""Stage 3: DPO from the SFT model on the sampled preference pairs (TRL's DPOTrainer, sigmoid loss).

    python -m smol_experiments.alignment.dpo --model runs/coedit/sft --dataset runs/coedit/pairs \\
        --output-dir runs/coedit/dpo [--precompute-ref-log-probs]
"""

from __future__ import annotations

from smol_experiments.alignment.cli import make_config, stage_parser, training_kwargs
from smol_experiments.alignment.preference_stage import run_preference_stage
from smol_experiments.flags import positive_float
from smol_experiments.stages import stage_main

STAGE = "dpo"
# TRL checks the loss type only at the first training step; here it is checked with the flags.
LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
               "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")


def build_parser():
    p = stage_parser(__doc__.splitlines()[0], model=None, learning_rate=5e-7, batch_size=12, scheduler="cosine",
                     preference=True)
    p.add_argument("--beta", type=positive_float, default=0.05, help="strength of the pull towards the reference model")
    p.add_argument("--loss-type", default="sigmoid", choices=LOSS_TYPES,
                   help="TRL DPO loss (sigmoid = the original DPO loss)")
    p.add_argument("--precompute-ref-log-probs", action="store_true",
                   help="score the pairs with the reference model once, before training, so it is not kept in memory")
    return p


def build_dpo_trainer(model, tokenizer, pairs, args, eval_pairs=None):
    """A DPOTrainer whose reference is a frozen copy of the starting (SFT) model, or its precomputed log-probs."""
    from smolhub_hub.extras import require

    require("trl", "the DPO stage")
    from trl import DPOConfig, DPOTrainer

    config = make_config(DPOConfig, **training_kwargs(args), beta=args.beta, loss_type=[args.loss_type],
                         max_length=args.max_length, precompute_ref_log_probs=args.precompute_ref_log_probs,
                         per_device_eval_batch_size=args.batch_size)
    return DPOTrainer(model=model, args=config, processing_class=tokenizer, train_dataset=pairs,
                      eval_dataset=eval_pairs)


def run(argv=None) -> dict:
    return run_preference_stage(build_parser().parse_args(argv), STAGE, build_dpo_trainer)


@stage_main
def main(argv=None) -> dict:
    return run(argv)



if __name__ == "__main__":
    main()
