"""LM head + cross-entropy at a large vocabulary: the plain loss vs the chunked one (and Liger's fused
linear cross-entropy when it is installed, CUDA only): time of forward + backward, and peak memory.

Peak memory: on CUDA `max_memory_allocated` above what was allocated before the call; on CPU each
candidate runs once in a fresh subprocess and reports its resident-set high-water mark (VmHWM) above
its resident set just before the call (inputs already allocated).

    python bench/bench_loss.py                          # 512 tokens, dim 128, vocab 50,304
    python bench/bench_loss.py --device cuda --tokens 8192 --dim 768
    python bench/bench_loss.py --tokens 2048 --dim 576 --vocab-size 49152 --dtype bfloat16   # CPU autocast
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from harness import autocast, interleaved_seconds, print_table, save_json  # noqa: E402

from smolhub_hub.losses import chunked_cross_entropy  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--vocab-size", type=int, default=50304)
    p.add_argument("--chunk-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="bfloat16 = autocast")
    p.add_argument("--json", default="")
    p.add_argument("--memory-of", default="", help=argparse.SUPPRESS)  # internal: one candidate, print MB
    return p.parse_args(argv)


def candidates(args) -> dict:
    out = {
        "plain": lambda h, w, t: F.cross_entropy((h @ w.t()).float(), t),
        "chunked": lambda h, w, t: chunked_cross_entropy(h, w, t, chunk_size=args.chunk_size),
    }
    if args.device == "cuda":
        try:
            from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
            liger = LigerFusedLinearCrossEntropyLoss()
            out["liger"] = lambda h, w, t: liger(w, h, t)
        except ImportError:
            pass
    return out


def inputs(args):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(args.tokens, args.dim, generator=g).to(args.device).requires_grad_()
    w = (0.02 * torch.randn(args.vocab_size, args.dim, generator=g)).to(args.device).requires_grad_()
    t = torch.randint(0, args.vocab_size, (args.tokens,), generator=g).to(args.device)
    return h, w, t


def fwd_bwd(loss_fn, h, w, t, args):
    def run():
        h.grad = w.grad = None
        with autocast(args):
            loss = loss_fn(h, w, t)
        loss.backward()
        return loss
    return run


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith(field))


def memory_mb(name: str, args) -> float:
    if args.device == "cuda":
        h, w, t = inputs(args)
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fwd_bwd(candidates(args)[name], h, w, t, args)()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    argv = [sys.executable, os.path.abspath(__file__), "--memory-of", name, "--tokens", str(args.tokens),
            "--dim", str(args.dim), "--vocab-size", str(args.vocab_size), "--chunk-size", str(args.chunk_size),
            "--dtype", args.dtype]
    out = subprocess.run(argv, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    args = parse_args(argv)
    if args.memory_of:  # child process: one call, report the resident high-water mark above the start
        h, w, t = inputs(args)
        before = _rss_kb("VmRSS:")
        fwd_bwd(candidates(args)[args.memory_of], h, w, t, args)()
        print(( _rss_kb("VmHWM:") - before) / 1024)
        return []
    h, w, t = inputs(args)
    fns = {name: fwd_bwd(fn, h, w, t, args) for name, fn in candidates(args).items()}
    ref = fns["plain"]().item()
    ref_grad = h.grad.clone()
    for name, fn in fns.items():
        got = fn().item()
        tol = 1e-4 if args.dtype == "float32" else 1e-2  # bf16 logits round differently in chunks
        assert abs(got - ref) < tol * abs(ref), f"{name} loss {got} != plain {ref}"
        torch.testing.assert_close(h.grad, ref_grad, rtol=100 * tol, atol=tol / 100)
    print(f"LM head + cross-entropy: {args.tokens} tokens, dim {args.dim}, vocab {args.vocab_size}, chunk "
          f"{args.chunk_size}, device {args.device}, {args.dtype}, {torch.get_num_threads()} threads; "
          f"candidates {', '.join(fns)}")
    t_s = interleaved_seconds(fns, args.device, args.repeats)
    mem = {name: memory_mb(name, args) for name in fns}
    shape = f"{args.tokens} tok x vocab {args.vocab_size}, dim {args.dim}"
    rows = []
    for name in fns:
        if name == "plain":
            continue
        rows.append({"benchmark": f"{name} CE fwd+bwd ms vs plain ({shape}, chunk {args.chunk_size})",
                     "smolhub": t_s[name] * 1e3, "plain": t_s["plain"] * 1e3, "ratio": t_s["plain"] / t_s[name]})
        rows.append({"benchmark": f"{name} CE peak extra MB vs plain ({shape})", "smolhub": mem[name],
                     "plain": mem["plain"], "ratio": mem["plain"] / max(mem[name], 1e-9)})
    print_table(rows, ["benchmark", "smolhub", "plain", "ratio"])
    if args.json:
        save_json(rows, args.json)
    return rows


if __name__ == "__main__":
    main()
