"""StoryLlama vs transformers' LlamaForCausalLM of the same configuration, in one run.

Both models hold the same weights (the transformers one is exported from ours) and train on the same
loss; candidates are timed in interleaved rounds so load from other processes hits both alike.
  1. a training step (forward, backward, AdamW): tokens/s;
  2. greedy generation with a KV cache (prompt 16, 256 new tokens) at batch 1 and 8, against
     `LlamaForCausalLM.generate` (outputs asserted identical in fp32).

    python bench/bench_storyllama.py                              # CPU sizes, about a minute on 2 cores
    python bench/bench_storyllama.py --device cuda --dtype bfloat16 --preset default --seq-len 512
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import adamw, add_run_args, autocast, interleaved_seconds, print_table, save_json, train_step_fn  # noqa: E402

from smolhub_hub.generation import SamplingConfig, generate  # noqa: E402
from StoryLlama.config import FAMILY  # noqa: E402
from StoryLlama.convert import to_hf  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="bench-cpu", help="a StoryLlama preset, or bench-cpu (dim 256, 4 layers)")
    p.add_argument("--gen-batches", default="1,8")
    add_run_args(p, vocab_size=8192, seq_len=256, batch_size=8, prompt_len=16, new_tokens=256, repeats=3)
    return p.parse_args(argv)


def build(args):
    if args.preset == "bench-cpu":
        cfg = FAMILY.build("default", dim=256, n_layers=4, n_heads=8, n_kv_heads=4, max_seq_len=512)
    else:
        cfg = FAMILY.build(args.preset)
    cfg = cfg.replace(vocab_size=args.vocab_size, max_seq_len=max(cfg.max_seq_len, args.prompt_len + args.new_tokens))
    torch.manual_seed(0)
    ours = FAMILY.model_class()(cfg).to(args.device)
    theirs = to_hf(ours).to(args.device)
    return ours, theirs


def bench_train(ours, theirs, batch, args) -> dict:
    def ours_loss(m, x, y):
        return m(x, y).loss

    def hf_loss(m, x, y):  # the same loss, so only the model differs
        logits = m(x).logits
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))

    def step(model, loss_of):
        model.train()
        fn = train_step_fn(model, adamw(model, args.device), batch, loss_of)

        def run():
            with autocast(args):
                fn()
        return run

    t = interleaved_seconds({"ours": step(ours, ours_loss), "hf": step(theirs, hf_loss)}, args.device, args.repeats)
    return {k: batch[:, :-1].numel() / v for k, v in t.items()}


def bench_generate(ours, theirs, prompt, args) -> dict:
    n = args.new_tokens
    sampling = SamplingConfig(max_new_tokens=n, greedy=True)
    ours.eval(), theirs.eval()

    def hf_gen():
        return theirs.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, min_new_tokens=n,
                               do_sample=False, eos_token_id=None, pad_token_id=0)

    with torch.no_grad(), autocast(args):
        if args.dtype == "float32":
            assert torch.equal(generate(ours, prompt, sampling), hf_gen()), "greedy generations differ"
        t = interleaved_seconds({"ours": lambda: generate(ours, prompt, sampling), "hf": hf_gen},
                                args.device, args.repeats)
    return {k: prompt.shape[0] * n / v for k, v in t.items()}


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ours, theirs = build(args)
    c = ours.config
    print(f"StoryLlama {ours.param_counts()['total'] / 1e6:.1f}M ({c.n_layers}x{c.dim}, {c.n_heads} heads / "
          f"{c.n_kv_heads} kv, vocab {c.vocab_size}) vs LlamaForCausalLM, device {args.device}, {args.dtype}, "
          f"{torch.get_num_threads()} threads")
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(0, c.vocab_size, (args.batch_size, args.seq_len + 1), generator=g).to(args.device)
    rows = []
    train = bench_train(ours, theirs, batch, args)
    rows.append({"benchmark": f"train tok/s (B={args.batch_size}, T={args.seq_len})", "smolhub": train["ours"],
                 "transformers": train["hf"], "ratio": train["ours"] / train["hf"]})
    for b in map(int, args.gen_batches.split(",")):
        gen = bench_generate(ours, theirs, batch[:1, :args.prompt_len].repeat(b, 1), args)
        rows.append({"benchmark": f"greedy generate tok/s (B={b}, prompt {args.prompt_len}, {args.new_tokens} new)",
                     "smolhub": gen["ours"], "transformers": gen["hf"], "ratio": gen["ours"] / gen["hf"]})
    print_table(rows, ["benchmark", "smolhub", "transformers", "ratio"])
    if args.json:
        save_json(rows, args.json)
    return rows


if __name__ == "__main__":
    main()
