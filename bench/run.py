"""One entry point for SmolHub's benchmarks: one table, one JSON.

For each model family it runs that family's own bench module (bench_<family>.py, SmolHub against the
transformers implementation of the same configuration, timed interleaved in this one process) and adds
what the issue asks of every row: step time, MFU (bench/flops.py: 6N + attention, active parameters for
MoE, over the measured or declared peak), generation at batch 1 and 8 (prompt 16, 256 new tokens), and on
CUDA the peak training memory and the bf16 + torch.compile + fused AdamW training and compiled
static-cache decoding rows.

    OMP_NUM_THREADS=1 python bench/run.py                               # CPU sizes, a few minutes on 2 cores
    OMP_NUM_THREADS=1 python bench/run.py --size default --dtype bfloat16   # each default config (89-180M), CPU
    python bench/run.py --only storyllama,mixtral --json /tmp/bench.json
    python bench/run.py --device cuda --json bench/results-cuda.json    # default configs, bf16
    OMP_NUM_THREADS=1 python bench/run.py --real   # SmolLM2-135M (real weights) in StoryLlama vs transformers, CPU
    python bench/run.py --real --new-tokens 32 --gen-batches 1 --skip bf16   # any flag of bench/bench_real.py
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import functools
import gc
import importlib
import json
import os
import platform
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
sys.path.insert(0, os.path.dirname(BENCH))
from flops import mfu, peak_flops, train_flops_per_token  # noqa: E402
from harness import interleaved_seconds, markdown_table, print_table  # noqa: E402
from limits import annotate, apply_limits, best_of, measure  # noqa: E402

from smolhub_hub.generation import SamplingConfig, generate  # noqa: E402

PROMPT, NEW = 16, 256
# --size default on a CPU: each family's default configuration (its CUDA sizes) at a batch and length a CPU
# thread steps through in seconds, with fewer generated tokens
CPU_DEFAULT_SIZE = ["--batch-size", "2", "--seq-len", "256", "--repeats", "2", "--new-tokens", "32"]


@dataclass
class Family:
    name: str
    module: str
    build: Callable          # (module, parsed args) -> (ours, transformers model)
    cpu: list[str]           # argv of the module at CPU sizes
    gpu: list[str]           # argv at the real default config
    gen_batches: tuple = (1,)  # the batches the module's own generation rows cover
    extra: list[str] = field(default_factory=list)


def _first_hf(pair):
    ours, theirs = pair
    return ours, (theirs["grouped_mm"] if isinstance(theirs, dict) else theirs)


FAMILIES = {
    "storyllama": Family(
        "StoryLlama", "bench_storyllama", lambda m, a: _first_hf(m.build(a)),
        cpu=["--preset", "quick", "--vocab-size", "2048", "--seq-len", "128", "--batch-size", "8", "--repeats", "3"],
        gpu=["--preset", "default", "--vocab-size", "50304", "--seq-len", "512", "--batch-size", "16",
             "--dtype", "bfloat16", "--repeats", "5"],
        gen_batches=(1, 8)),
    "smoltransformer": Family(
        "SmolTransformer", "bench_smoltransformer", lambda m, a: _first_hf(m.build_pair(a)),
        cpu=["--dim", "128", "--n-layers", "4", "--n-heads", "4", "--vocab-size", "2048", "--seq-len", "128",
             "--batch-size", "8", "--repeats", "3"],
        gpu=["--dim", "768", "--n-layers", "16", "--n-heads", "12", "--vocab-size", "50304", "--seq-len", "1024",
             "--batch-size", "8", "--dtype", "bfloat16", "--repeats", "5"]),
    "mixtral": Family(
        "SmolMixtral", "bench_mixtral", lambda m, a: _first_hf(m.build_models(a)),
        cpu=["--dim", "128", "--n-layers", "4", "--n-heads", "4", "--n-kv-heads", "2", "--expert-hidden", "256",
             "--vocab-size", "2048", "--seq-len", "128", "--batch-size", "8", "--layer-tokens", "1024",
             "--repeats", "3"],
        gpu=["--dim", "512", "--n-layers", "8", "--n-heads", "8", "--n-kv-heads", "4", "--expert-hidden", "1024",
             "--vocab-size", "32000", "--seq-len", "1024", "--batch-size", "8", "--dtype", "bfloat16",
             "--repeats", "5"]),
    "kimi": Family(
        "StoryKimi", "bench_kimi", lambda m, a: _first_hf(m.build_models(a)),
        cpu=["--dim", "128", "--n-layers", "4", "--n-heads", "4", "--kv-lora-rank", "32", "--expert-hidden", "256",
             "--vocab-size", "2048", "--seq-len", "128", "--batch-size", "8", "--repeats", "3"],
        gpu=["--dim", "512", "--n-layers", "10", "--n-heads", "8", "--kv-lora-rank", "128", "--expert-hidden", "1088",
             "--vocab-size", "32000", "--seq-len", "512", "--batch-size", "8", "--dtype", "bfloat16",
             "--repeats", "5"]),
}
OTHER = ("data", "loss")  # bench_data.py, bench_loss.py: no transformers twin, rows of their own

COLUMNS = ["family", "config", "benchmark", "smolhub", "transformers", "loop", "plain", "ratio", "step ms",
           "HF step ms", "MFU %", "HF MFU %", "roofline %", "HF roofline %", "peak MB", "HF peak MB", "note"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", default=",".join([*FAMILIES, *OTHER]),
                   help=f"comma-separated subset of {', '.join([*FAMILIES, *OTHER])}")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 by default: on a shared, loaded 2-core machine 2 threads "
                        "contend with other processes and time 10-20x worse)")
    p.add_argument("--size", default="small", choices=["small", "default"],
                   help="on CPU: small = 1-3M-parameter configurations, where Python overhead dominates; default = "
                        "each family's default configuration (89-180M parameters, the CUDA sizes) at "
                        f"{' '.join(CPU_DEFAULT_SIZE)} (CUDA always runs the default configurations)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                   help="the families' dtype, bfloat16 = autocast (default: float32 on CPU, bfloat16 on CUDA)")
    p.add_argument("--real", action="store_true",
                   help="instead of the families' small sizes: SmolLM2-135M imported into StoryLlama vs transformers "
                        "(bench/bench_real.py; generation B=1/8 fp32/bf16/int8, training fp32/bf16; ~8 min, CPU)")
    p.add_argument("--repeats", type=int, default=0, help="override every module's repeats (0 = its size's default)")
    p.add_argument("--json", default="", help="write {meta, rows} here")
    p.add_argument("--markdown", default="", help="also write the table as markdown here")
    args, real_argv = p.parse_known_args(argv)
    if real_argv and not args.real:
        p.error(f"unrecognized arguments: {' '.join(real_argv)}")
    if args.real and (args.size != "small" or args.dtype):
        p.error("--real runs its own rows (bench/bench_real.py: fp32, bf16 and int8 at SmolLM2-135M); "
                "--size and --dtype are for the families' rows")
    if args.size == "default" and args.device == "cuda":
        p.error("--size default is for CPU runs: CUDA always runs the default configurations")
    args.real_argv = real_argv  # with --real, bench_real.py's own flags (--new-tokens, --gen-batches, --skip, ...)
    return args


# --- rows from a family module ------------------------------------------------------------------

def module_argv(fam: Family, args) -> list[str]:
    """The family module's flags; a later flag overrides an earlier one (argparse), so sizes can be adjusted."""
    if args.device == "cuda":
        argv = [*fam.gpu, "--new-tokens", str(NEW)]
    elif args.size == "default":
        argv = [*fam.gpu, "--new-tokens", str(NEW), *CPU_DEFAULT_SIZE, "--dtype", "float32"]
    else:
        argv = [*fam.cpu, "--new-tokens", str(NEW)]
    argv += ["--prompt-len", str(PROMPT), "--device", args.device]
    if args.dtype:
        argv += ["--dtype", args.dtype]
    if args.repeats:
        argv += ["--repeats", str(args.repeats)]
    return argv


def describe(model) -> str:
    c, counts = model.config, model.param_counts()
    size = f"{counts['total'] / 1e6:.1f}M"
    if counts["active"] != counts["total"]:
        size += f" ({counts['active'] / 1e6:.1f}M active)"
    return f"{c.n_layers}x{c.dim} {size} V={c.vocab_size}"


def autocast(device: str, dtype: str):
    if dtype == "bfloat16":
        return torch.autocast(device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def run_family(key: str, args) -> list[dict]:
    fam = FAMILIES[key]
    mod = importlib.import_module(fam.module)
    argv = module_argv(fam, args)
    print(f"\n=== {fam.name}: python bench/{fam.module}.py {' '.join(argv)}", flush=True)
    rows = mod.main(argv)
    margs = mod.parse_args(argv)
    dtype = getattr(margs, "dtype", "float32")
    peak = peak_flops(args.device, dtype)[0] if args.device == "cuda" else None  # for the CUDA-only rows
    ours, theirs = fam.build(mod, margs)
    fpt = train_flops_per_token(ours, margs.seq_len)
    config = describe(ours)
    out = [annotate({"family": fam.name, "config": config, **r}, ours, margs.batch_size * margs.seq_len,
                    margs.seq_len, dtype) for r in rows]
    prompt = torch.randint(0, ours.config.vocab_size, (1, PROMPT), generator=torch.Generator().manual_seed(0))
    prompt = prompt.to(args.device)
    for b in (1, 8):
        if b not in fam.gen_batches:
            g = generation_tok_s(ours, theirs, prompt.repeat(b, 1), margs, dtype)
            row = {"family": fam.name, "config": config,
                   "benchmark": f"greedy generate tok/s (B={b}, prompt {PROMPT}, {margs.new_tokens} new) [run.py]",
                   "smolhub": g["ours"], "transformers": g["hf"], "ratio": g["ours"] / g["hf"]}
            out.append(annotate(row, ours, 0, margs.seq_len, dtype))
    if args.device == "cuda":
        out += cuda_rows(fam, mod, ours, theirs, margs, dtype, fpt, peak, config)
    del ours, theirs
    gc.collect()
    return out


def generation_tok_s(ours, hf, prompt, margs, dtype) -> dict:
    """Greedy generation at prompt's batch, ours (static KV cache) vs `hf.generate`, interleaved."""
    n, dev = margs.new_tokens, margs.device
    sampling = SamplingConfig(max_new_tokens=n, greedy=True)
    ours.eval(), hf.eval()

    def hf_gen():
        return hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, min_new_tokens=n,
                           do_sample=False, eos_token_id=None, pad_token_id=0)

    with torch.no_grad(), autocast(dev, dtype):
        t = interleaved_seconds({"ours": lambda: generate(ours, prompt, sampling), "hf": hf_gen}, dev,
                                margs.repeats)
    return {k: prompt.shape[0] * n / v for k, v in t.items()}


# --- CUDA-only rows -------------------------------------------------------------------------------

def _loss_fns(mod):
    def ours_loss(m, x, y):
        return m(x, targets=y).loss

    def hf_loss(m, x, y):
        logits = m(input_ids=x).logits
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))

    return ours_loss, getattr(mod, "hf_loss", hf_loss)


def _step(model, loss_of, batch, dtype, fused: bool):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
    x, y = batch[:, :-1], batch[:, 1:]

    def run():
        opt.zero_grad(set_to_none=True)
        with autocast(batch.device.type, dtype):
            loss = loss_of(model, x, y)
        loss.backward()
        opt.step()
    return run, opt


def peak_train_mb(model, loss_of, batch, dtype, checkpointing=False) -> float:
    """Peak memory of training this model alone: its weights, grads, AdamW state and activations."""
    model.train()
    if checkpointing:
        model.gradient_checkpointing = True
    model.zero_grad(set_to_none=True)  # gradients left by an earlier step would hide in `before`
    gc.collect()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    torch.cuda.reset_peak_memory_stats()
    run, opt = _step(model, loss_of, batch, dtype, fused=True)
    run(), run()  # the second step has the optimizer state allocated
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before + weights
    model.zero_grad(set_to_none=True)
    del opt
    if checkpointing:
        model.gradient_checkpointing = False
    return peak / 2**20


def _guard(label, fn, row):
    try:
        row.update(fn())
    except Exception as e:  # a GPU feature that fails is reported, never silently dropped
        traceback.print_exc()
        row["note"] = f"failed: {type(e).__name__}: {str(e)[:120]}"
        print(f"{label}: {row['note']}", flush=True)
    return row


def cuda_rows(fam, mod, ours, hf, margs, dtype, fpt, peak, config) -> list[dict]:
    """bf16 + torch.compile + fused AdamW training (SDPA picks the flash kernel), peak memory at
    micro-batch 8 with and without activation checkpointing, and compiled static-cache decoding."""
    ours_loss, hf_loss = _loss_fns(mod)
    g = torch.Generator().manual_seed(0)
    B, T = margs.batch_size, margs.seq_len
    dev = margs.device
    batch = torch.randint(0, ours.config.vocab_size, (B, T + 1), generator=g).to(dev)
    base = {"family": fam.name, "config": config}
    rows = []

    def compiled_train():
        fns = {}
        for name, model, loss_of in [("ours", ours, ours_loss), ("hf", hf, hf_loss)]:
            model.train()
            fns[name], _ = _step(torch.compile(model), loss_of, batch, dtype, fused=True)
        for fn in fns.values():  # compile outside the timed rounds
            fn(), fn()
        t = interleaved_seconds(fns, dev, margs.repeats)
        tok = {k: B * T / v for k, v in t.items()}
        return {"smolhub": tok["ours"], "transformers": tok["hf"], "ratio": tok["ours"] / tok["hf"],
                "step ms": 1e3 * t["ours"], "HF step ms": 1e3 * t["hf"],
                "MFU %": 100 * mfu(tok["ours"], fpt, peak), "HF MFU %": 100 * mfu(tok["hf"], fpt, peak)}

    rows.append(_guard("compiled train", compiled_train,
                       {**base, "benchmark": f"train tok/s {dtype} + compile + fused AdamW (B={B}, T={T})"}))

    mb8 = batch[:8]

    def memory():
        return {"peak MB": peak_train_mb(ours, ours_loss, mb8, dtype),
                "HF peak MB": peak_train_mb(hf, hf_loss, mb8, dtype)}

    rows.append(_guard("peak memory", memory, {**base, "benchmark": f"peak train memory MB, eager {dtype} + fused "
                                                                    f"AdamW (micro-batch 8, T={T})"}))
    rows.append(_guard("peak memory ckpt", lambda: {"peak MB": peak_train_mb(ours, ours_loss, mb8, dtype, True)},
                       {**base, "benchmark": "peak train memory MB, same + activation checkpointing "
                                             f"(micro-batch 8, T={T})"}))

    def compiled_decode(b):
        def fn():
            prompt = batch[:1, :PROMPT].repeat(b, 1)
            sampling = SamplingConfig(max_new_tokens=NEW, greedy=True)
            ours.eval(), hf.eval()
            ours_c = torch.compile(ours, mode="reduce-overhead", dynamic=True)

            def hf_gen():
                return hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=NEW,
                                   min_new_tokens=NEW, do_sample=False, eos_token_id=None, pad_token_id=0,
                                   cache_implementation="static")  # transformers compiles static-cache decoding

            with torch.no_grad(), autocast(dev, dtype):
                fns = {"ours": lambda: generate(ours_c, prompt, sampling), "hf": hf_gen}
                for f in fns.values():
                    f()
                t = interleaved_seconds(fns, dev, margs.repeats)
            tok = {k: b * NEW / v for k, v in t.items()}
            return {"smolhub": tok["ours"], "transformers": tok["hf"], "ratio": tok["ours"] / tok["hf"]}
        return fn

    for b in (1, 8):
        rows.append(_guard(f"compiled decode B={b}", compiled_decode(b),
                           {**base, "benchmark": f"greedy generate tok/s, compiled + static cache (B={b}, "
                                                 f"prompt {PROMPT}, {NEW} new)"}))
    return rows


# --- data and loss --------------------------------------------------------------------------------

def run_other(key: str, args) -> list[dict]:
    mod = importlib.import_module({"data": "bench_data", "loss": "bench_loss"}[key])
    argv = ["--device", args.device]
    print(f"\n=== python bench/{mod.__name__}.py {' '.join(argv)}", flush=True)
    return [{"family": key, **r} for r in mod.main(argv)]


def machine(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    model = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
                 platform.processor())
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{os.cpu_count()}-core CPU ({model}), load average {load:.1f} at start"


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    chosen = [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = [k for k in chosen if k not in FAMILIES and k not in OTHER]
    if unknown:
        raise SystemExit(f"--only: unknown benchmark(s) {', '.join(unknown)}; choose from "
                         f"{', '.join([*FAMILIES, *OTHER])}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here; run with --device cpu")
    dtype = "bfloat16" if args.device == "cuda" else "float32"
    limits = measure() if args.device == "cpu" else None
    peak, peak_src = (limits.fp32_flops, limits.describe()) if limits else peak_flops(args.device, dtype)
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine(args.device),
            "command": "python bench/run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "torch": torch.__version__, "transformers": importlib.import_module("transformers").__version__,
            "threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "peak_flops": peak, "peak_source": peak_src, "limits": limits and dataclasses.asdict(limits)}
    print(json.dumps(meta, indent=1), flush=True)
    if args.real:
        repeats = ["--repeats", str(args.repeats)] if args.repeats else []
        rows = importlib.import_module("bench_real").main([*repeats, *args.real_argv])
    else:
        rows = []
        for key in chosen:
            rows += run_family(key, args) if key in FAMILIES else run_other(key, args)
    if limits:
        limits = best_of(limits, measure())  # measured before and after the rows: load only ever lowers them
        meta["limits"], meta["peak_flops"] = dataclasses.asdict(limits), limits.fp32_flops
        apply_limits(rows, limits.matmul_peak, limits.read_bytes_per_s)
    else:
        apply_limits(rows, functools.cache(lambda d: peak_flops(args.device, d)[0]), None)
    print(f"\nSmolHub vs transformers, same config, same run; device {meta['machine']}; "
          + (limits.describe() if limits else f"peak {peak / 1e9:.1f} GFLOP/s ({peak_src})"))
    print("MFU %: model FLOPs/s over the matmul peak of the row's dtype; roofline %: weight bytes read per "
          "second in batch-1 decoding over the memory read bandwidth (limits: best of before and after the rows)")
    print_table(rows, [c for c in COLUMNS if any(r.get(c) is not None for r in rows)])
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown_table(rows, COLUMNS) + "\n")
    return rows


if __name__ == "__main__":
    main()
