"""SmolTransformer vs transformers' GPT2LMHeadModel of the same configuration, in one run.

Both models hold the same weights (the HF one is exported from ours), so the generation check also
asserts that greedy outputs are identical. Training: forward + backward + AdamW step on the same
batch, same loss. Generation: greedy decoding with a KV cache, batch 1 (the interactive case).

    python bench/bench_smoltransformer.py                # quick-preset shape, a couple of minutes on 2 cores
    python bench/bench_smoltransformer.py --dim 256 --vocab-size 8192 --batch-size 8   # a larger CPU size
    python bench/bench_smoltransformer.py --device cuda --dtype bfloat16 \
        --dim 768 --n-layers 12 --n-heads 12 --seq-len 1024
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
from SmolTransformer.config import FAMILY  # noqa: E402
from SmolTransformer.convert import to_hf  # noqa: E402
from SmolTransformer.model import SmolTransformer  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # Defaults: the `quick` preset's shape (the model a CPU user trains), with GPT-2's layout.
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--n-layers", type=int, default=4)
    p.add_argument("--n-heads", type=int, default=4)
    add_run_args(p, vocab_size=2048, seq_len=128, batch_size=16, prompt_len=16, new_tokens=64, repeats=7)
    return p.parse_args(argv)


def build_pair(args):
    """Our model with the gpt2 preset's layout at the requested size, and its GPT2LMHeadModel twin."""
    cfg = FAMILY.build("gpt2", dim=args.dim, n_layers=args.n_layers, n_heads=args.n_heads,
                       vocab_size=args.vocab_size, max_seq_len=max(args.seq_len, args.prompt_len + args.new_tokens))
    torch.manual_seed(0)
    ours = SmolTransformer(cfg)
    theirs = to_hf(ours)
    return ours.to(args.device), theirs.to(args.device)


def alternate_seconds(fns, device: str, repeats: int) -> list[float]:
    """Median seconds of each fn, timed in alternation so that a change in machine load hits all alike."""
    t = interleaved_seconds(dict(enumerate(fns)), device, repeats)
    return [t[i] for i in range(len(fns))]


def ours_loss(model, x, y):
    return model(x, targets=y).loss


def hf_loss(model, x, y):  # the same loss as ours, so only the model differs
    logits = model(input_ids=x).logits
    return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))


def train_tokens_per_s(ours, theirs, batch, args) -> tuple[float, float]:
    steps = []
    for model, loss_of in [(ours, ours_loss), (theirs, hf_loss)]:
        model.train()
        fn = train_step_fn(model, adamw(model, args.device), batch, loss_of)
        steps.append(lambda fn=fn: _autocast_call(fn, args))
    return tuple(batch[:, :-1].numel() / sec for sec in alternate_seconds(steps, args.device, args.repeats))


def _autocast_call(fn, args):
    with autocast(args):
        return fn()


def generation_tokens_per_s(ours, theirs, prompt, args) -> tuple[float, float]:
    with torch.no_grad(), autocast(args):
        return _generation_tokens_per_s(ours, theirs, prompt, args)


def _generation_tokens_per_s(ours, theirs, prompt, args) -> tuple[float, float]:
    ours.eval(), theirs.eval()
    n = args.new_tokens
    sampling = SamplingConfig(max_new_tokens=n, greedy=True)
    mine = generate(ours, prompt, sampling)[:, prompt.shape[1]:]
    ref = theirs.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
    if args.dtype == "float32":  # bf16 rounding may legitimately flip a near-tie
        assert torch.equal(mine, ref[:, prompt.shape[1]:]), "greedy generations differ from GPT2LMHeadModel"
    fns = [lambda: generate(ours, prompt, sampling),
           lambda: theirs.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)]
    return tuple(n / sec for sec in alternate_seconds(fns, args.device, args.repeats))


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ours, theirs = build_pair(args)
    print(f"SmolTransformer {ours.param_counts()['total'] / 1e6:.1f}M params ({args.n_layers}x{args.dim}, "
          f"{args.n_heads} heads, vocab {args.vocab_size}) vs GPT2LMHeadModel, device {args.device}, {args.dtype}, "
          f"{torch.get_num_threads()} threads")
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(0, args.vocab_size, (args.batch_size, args.seq_len + 1), generator=g).to(args.device)
    prompt = batch[:1, :args.prompt_len]
    gen_ours, gen_hf = generation_tokens_per_s(ours, theirs, prompt, args)
    train_ours, train_hf = train_tokens_per_s(ours, theirs, batch, args)
    rows = [
        {"benchmark": f"train tok/s (B={args.batch_size}, T={args.seq_len})", "smolhub": train_ours,
         "transformers": train_hf, "ratio": train_ours / train_hf},
        {"benchmark": f"greedy generate tok/s (B=1, prompt {args.prompt_len}, {args.new_tokens} new)",
         "smolhub": gen_ours, "transformers": gen_hf, "ratio": gen_ours / gen_hf},
    ]
    print_table(rows, ["benchmark", "smolhub", "transformers", "ratio"])
    if args.json:
        save_json(rows, args.json)
    return rows


if __name__ == "__main__":
    main()
