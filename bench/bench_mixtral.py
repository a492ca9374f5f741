"""SmolMixtral vs transformers' MixtralForCausalLM of the same configuration, in one run.

Three measurements, every candidate timed in interleaved rounds (A, B, C, A, B, C, ...) so that load
from other processes on a shared machine hits all of them alike:
  1. the MoE layer alone, forward + backward: grouped_mm over expert-sorted tokens vs a loop over experts;
  2. a full training step (forward, backward, AdamW) vs transformers with experts_implementation
     "eager" (its loop over experts) and "grouped_mm" (what transformers 5.x picks when none is given);
  3. greedy generation with a KV cache, batch 1, against the same two (outputs asserted identical).
Both models hold the same weights (the transformers one is exported from ours); the training loss is
the same function (LM loss + the balance loss at the same effective weight).

    python bench/bench_mixtral.py                               # CPU sizes, a couple of minutes on 2 cores
    python bench/bench_mixtral.py --device cuda --dtype bfloat16 --dim 512 --n-layers 8 --seq-len 1024
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import add_run_args, autocast, interleaved_seconds, moe_train_tok_s, print_table, save_json  # noqa: E402

from smolhub_hub.generation import SamplingConfig, generate  # noqa: E402
from SmolMixtral.config import FAMILY  # noqa: E402
from SmolMixtral.convert import to_hf  # noqa: E402
from SmolMixtral.model import MoEFeedForward, SmolMixtral  # noqa: E402

HF_IMPLS = ("eager", "grouped_mm")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--n-layers", type=int, default=4)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--n-kv-heads", type=int, default=2)
    p.add_argument("--n-experts", type=int, default=8)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--expert-hidden", type=int, default=512)
    p.add_argument("--layer-tokens", type=int, default=4096, help="tokens through the lone MoE layer")
    add_run_args(p, vocab_size=8192, seq_len=256, batch_size=4, prompt_len=16, new_tokens=64, repeats=5)
    return p.parse_args(argv)


def bench_layer(args) -> list[dict]:
    torch.manual_seed(0)
    moe = MoEFeedForward(args.dim, args.expert_hidden, args.n_experts, args.top_k).to(args.device)
    x = torch.randn(args.layer_tokens, args.dim, device=args.device, requires_grad=True)

    def step(impl):
        def run():
            moe.experts.impl = impl
            with autocast(args):
                y, aux = moe(x)
            (y.float().square().mean() + aux).backward()
        return run

    t = interleaved_seconds({"grouped": step("grouped"), "loop": step("loop")}, args.device, args.repeats)
    return [{"benchmark": f"MoE layer fwd+bwd ms ({args.layer_tokens} tok, {args.n_experts}x{args.expert_hidden})",
             "smolhub": t["grouped"] * 1e3, "loop": t["loop"] * 1e3, "ratio": t["loop"] / t["grouped"]}]


def build_models(args):
    cfg = FAMILY.build("default", dim=args.dim, n_layers=args.n_layers, n_heads=args.n_heads,
                       n_kv_heads=args.n_kv_heads, n_experts=args.n_experts, top_k=args.top_k,
                       expert_hidden=args.expert_hidden, vocab_size=args.vocab_size, noisy_topk=False,
                       max_seq_len=max(args.seq_len, args.prompt_len + args.new_tokens))
    torch.manual_seed(0)
    ours = SmolMixtral(cfg).to(args.device)
    hfs = {}
    for impl in HF_IMPLS:
        hfs[impl] = to_hf(ours).to(args.device)
        hfs[impl].set_experts_implementation(impl)
    return ours, hfs


def ours_loss(model, x, y):
    return model(x, targets=y).loss


def hf_loss(model, x, y):  # the same loss as ours: LM cross-entropy + transformers' balance loss
    out = model(input_ids=x, output_router_logits=True)
    lm = F.cross_entropy(out.logits.float().view(-1, out.logits.size(-1)), y.reshape(-1))
    return lm + model.router_aux_loss_coef * out.aux_loss


def bench_generate(ours, hfs, prompt, args) -> dict:
    n = args.new_tokens
    sampling = SamplingConfig(max_new_tokens=n, greedy=True)

    def hf_gen(m):
        return lambda: m.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n,
                                  min_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)

    for m in (ours, *hfs.values()):
        m.eval()
    with torch.no_grad(), autocast(args):
        mine = generate(ours, prompt, sampling)
        if args.dtype == "float32":  # bf16 rounding may legitimately flip a near-tie
            for impl, m in hfs.items():
                assert torch.equal(mine, hf_gen(m)()), f"greedy generations differ from Mixtral ({impl})"
        t = interleaved_seconds({"ours": lambda: generate(ours, prompt, sampling),
                                 **{impl: hf_gen(m) for impl, m in hfs.items()}}, args.device, args.repeats)
    return {k: n / v for k, v in t.items()}


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ours, hfs = build_models(args)
    counts = ours.param_counts()
    print(f"SmolMixtral {counts['total'] / 1e6:.1f}M total / {counts['active'] / 1e6:.1f}M active "
          f"({args.n_layers}x{args.dim}, {args.n_experts} experts top-{args.top_k}, hidden {args.expert_hidden}, "
          f"vocab {args.vocab_size}) vs MixtralForCausalLM, device {args.device}, {args.dtype}, "
          f"{torch.get_num_threads()} threads")
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(0, args.vocab_size, (args.batch_size, args.seq_len + 1), generator=g).to(args.device)
    rows = bench_layer(args)
    gen = bench_generate(ours, hfs, batch[:1, :args.prompt_len], args)
    train, floor = moe_train_tok_s(ours, hfs, batch, args, ours_loss, hf_loss)
    for name, r, shape in [("train tok/s", train, f"B={args.batch_size}, T={args.seq_len}"),
                           ("greedy generate tok/s", gen, f"B=1, prompt {args.prompt_len}, {args.new_tokens} new")]:
        for impl in HF_IMPLS:
            rows.append({"benchmark": f"{name} vs HF {impl} ({shape})", "smolhub": r["ours"],
                         "transformers": r[impl], "ratio": r["ours"] / r[impl]})
    rows += floor
    print_table(rows, ["benchmark", "smolhub", "transformers", "loop", "ratio"])
    if args.json:
        save_json(rows, args.json)
    return rows


if __name__ == "__main__":
    main()
