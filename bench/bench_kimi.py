"""StoryKimi vs transformers' DeepseekV3ForCausalLM of the same configuration, in one run.

Every candidate is timed in interleaved rounds (A, B, C, A, B, C, ...) so that load from other processes
on a shared machine hits all of them alike:
  1. a full training step (forward, backward, AdamW for both, so only the models differ) vs transformers
     with experts_implementation "eager" (a loop over experts) and "grouped_mm" (its default);
  2. greedy generation with a cache, batch 1, outputs asserted identical: ours attends straight against
     the cached latents (absorbed up-projections); transformers caches the latents too but re-expands
     every cached token through kv_b_proj at every step;
  3. cache bytes per token: our latent cache, transformers' cache after the same generation, and a
     multi-head KV cache of the same width.
The transformers model is exported from ours, so both hold the same weights.

    python bench/bench_kimi.py                                 # CPU sizes, a couple of minutes on 2 cores
    python bench/bench_kimi.py --device cuda --dtype bfloat16 --dim 512 --n-layers 10 --seq-len 512
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
from StoryKimi.config import FAMILY  # noqa: E402
from StoryKimi.convert import to_hf  # noqa: E402
from StoryKimi.model import StoryKimi  # noqa: E402

HF_IMPLS = ("eager", "grouped_mm")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--n-layers", type=int, default=4)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--kv-lora-rank", type=int, default=64)
    p.add_argument("--n-experts", type=int, default=8)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--expert-hidden", type=int, default=512)
    add_run_args(p, vocab_size=8192, seq_len=256, batch_size=4, prompt_len=32, new_tokens=224, repeats=5)
    return p.parse_args(argv)


def build_models(args):
    head = args.dim // args.n_heads
    cfg = FAMILY.build("default", dim=args.dim, n_layers=args.n_layers, n_heads=args.n_heads,
                       kv_lora_rank=args.kv_lora_rank, qk_nope_head_dim=head, qk_rope_head_dim=head // 2,
                       v_head_dim=head, n_experts=args.n_experts, top_k=args.top_k, expert_hidden=args.expert_hidden,
                       ffn_hidden=2 * args.expert_hidden, vocab_size=args.vocab_size, seq_aux_loss_coef=0.0,
                       max_seq_len=max(args.seq_len, args.prompt_len + args.new_tokens))
    torch.manual_seed(0)
    ours = StoryKimi(cfg).to(args.device)
    hfs = {}
    for impl in HF_IMPLS:
        hfs[impl] = to_hf(ours).to(args.device)
        hfs[impl].set_experts_implementation(impl)
    return ours, hfs


def ours_loss(model, x, y):
    return model(x, targets=y).loss


def hf_loss(model, x, y):
    logits = model(input_ids=x).logits
    return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))


def hf_generate(model, prompt, n, return_cache=False):
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, min_new_tokens=n,
                         do_sample=False, eos_token_id=None, pad_token_id=0, return_dict_in_generate=return_cache)
    return out


def bench_generate(ours, hfs, prompt, args) -> tuple[dict, dict]:
    n = args.new_tokens
    sampling = SamplingConfig(max_new_tokens=n, greedy=True)
    for m in (ours, *hfs.values()):
        m.eval()
    with torch.no_grad(), autocast(args):
        mine = generate(ours, prompt, sampling)
        if args.dtype == "float32":  # bf16 rounding may legitimately flip a near-tie
            for impl, m in hfs.items():
                assert torch.equal(mine, hf_generate(m, prompt, n)), f"greedy generations differ ({impl})"
        t = interleaved_seconds({"ours": lambda: generate(ours, prompt, sampling),
                                 **{impl: (lambda m=m: hf_generate(m, prompt, n)) for impl, m in hfs.items()}},
                                args.device, args.repeats)
        hf_cache = hf_generate(hfs["grouped_mm"], prompt, n, return_cache=True).cache
    return {k: n / v for k, v in t.items()}, cache_bytes(ours, hf_cache, prompt.shape[1] + n - 1)


def cache_bytes(ours, hf_cache, tokens: int) -> dict:
    c = ours.config
    elt = ours.tok_emb.weight.element_size()
    hf_total = sum(t.numel() * t.element_size() for layer in hf_cache.layers for t in (layer.keys, layer.values))
    return {"ours": ours.new_cache(1, 1).nbytes_per_token(), "transformers": hf_total / tokens,
            "mha": 2 * c.n_layers * c.dim * elt}


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ours, hfs = build_models(args)
    counts = ours.param_counts()
    print(f"StoryKimi {counts['total'] / 1e6:.1f}M total / {counts['active'] / 1e6:.1f}M active "
          f"({args.n_layers}x{args.dim}, latent {args.kv_lora_rank}, {args.n_experts} experts top-{args.top_k} + 1 "
          f"shared, hidden {args.expert_hidden}, vocab {args.vocab_size}) vs DeepseekV3ForCausalLM, device "
          f"{args.device}, {args.dtype}, {torch.get_num_threads()} threads")
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(0, args.vocab_size, (args.batch_size, args.seq_len + 1), generator=g).to(args.device)
    gen, cache = bench_generate(ours, hfs, batch[:1, :args.prompt_len], args)
    train, floor = moe_train_tok_s(ours, hfs, batch, args, ours_loss, hf_loss)
    rows = []
    for name, r, shape in [("train tok/s", train, f"B={args.batch_size}, T={args.seq_len}"),
                           ("greedy generate tok/s", gen, f"B=1, prompt {args.prompt_len}, {args.new_tokens} new")]:
        for impl in HF_IMPLS:
            rows.append({"benchmark": f"{name} vs HF {impl} ({shape})", "smolhub": r["ours"],
                         "transformers": r[impl], "ratio": r["ours"] / r[impl]})
    rows.append({"benchmark": "cache bytes/token vs HF DynamicCache", "smolhub": cache["ours"],
                 "transformers": cache["transformers"], "ratio": cache["ours"] / cache["transformers"]})
    rows.append({"benchmark": "cache bytes/token vs same-width MHA KV cache", "smolhub": cache["ours"],
                 "transformers": cache["mha"], "ratio": cache["ours"] / cache["mha"]})
    rows += floor
    print_table(rows, ["benchmark", "smolhub", "transformers", "ratio"])
    if args.json:
        save_json(rows, args.json)
    return rows


if __name__ == "__main__":
    main()
