"""Timing helpers shared by every benchmark: warm-up, repeats, median; one table and JSON out.

A benchmark measures SmolHub and the transformers implementation of the same configuration in the
same process, and reports the ratio; numbers from different runs are never compared.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from collections.abc import Callable

import torch

from smolhub_hub.training.optim import fused_adamw


def add_run_args(p: argparse.ArgumentParser, *, vocab_size: int, seq_len: int, batch_size: int,
                 prompt_len: int, new_tokens: int, repeats: int) -> argparse.ArgumentParser:
    """The flags every model benchmark shares; each passes the sizes that suit it."""
    p.add_argument("--vocab-size", type=int, default=vocab_size)
    p.add_argument("--seq-len", type=int, default=seq_len, help="training sequence length")
    p.add_argument("--batch-size", type=int, default=batch_size, help="training batch")
    p.add_argument("--prompt-len", type=int, default=prompt_len)
    p.add_argument("--new-tokens", type=int, default=new_tokens)
    p.add_argument("--repeats", type=int, default=repeats, help="timed rounds (after one warm-up round)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="bfloat16 = autocast for both models (GPU)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--json", default="", help="also write the rows here")
    return p


def autocast(args):
    """bf16 autocast for both models when asked (GPU); fp32 otherwise."""
    if args.dtype == "bfloat16":
        return torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_seconds(fn: Callable[[], object], device: str = "cpu", warmup: int = 2, repeats: int = 5) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def interleaved_seconds(fns: dict[str, Callable[[], object]], device: str = "cpu",
                        repeats: int = 5) -> dict[str, float]:
    """Median seconds of each callable, timed round-robin (A, B, A, B, ...) after one warm-up round,
    so that load from other processes on a shared machine hits every candidate alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for rnd in range(repeats + 1):
        for name, fn in fns.items():
            t = median_seconds(fn, device, warmup=0, repeats=1)
            if rnd:
                times[name].append(t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def adamw(model, device: str, lr: float = 1e-4) -> torch.optim.AdamW:
    """The optimizer of a timed training step, the same for both libraries: torch's fused AdamW, which
    SmolHub's trainer uses and transformers' Trainer defaults to (`optim="adamw_torch_fused"`)."""
    return torch.optim.AdamW(model.parameters(), lr=lr, fused=fused_adamw(device))


def train_step_fn(model, optimizer, batch: torch.Tensor, loss_of: Callable[[object, torch.Tensor], torch.Tensor]):
    """One optimizer step on `batch` (B, T+1): forward, backward, step."""
    x, y = batch[:, :-1], batch[:, 1:]

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(model, x, y)
        loss.backward()
        optimizer.step()

    return step


# The kernels whose arithmetic every implementation of the same model and loss has to run: the matmuls
# (dense and per-expert), attention, and the cross-entropy's log-softmax, forward and backward.
FLOOR_KERNELS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::_grouped_mm",
                 "aten::_scaled_dot_product_flash_attention_for_cpu",
                 "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
                 "aten::_log_softmax", "aten::_log_softmax_backward_data")


def kernel_floor_seconds(fn: Callable[[], object], repeats: int = 3) -> float:
    """CPU: seconds per call of `fn` spent inside FLOOR_KERNELS (torch.profiler self time).

    For a training step this is what remains if every other op (norms, activations, routing, indexing,
    the optimizer) and all Python overhead cost nothing; a competitor's step time over it is the most
    any implementation of the same arithmetic could gain on this machine.
    """
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            fn()
    micros = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in FLOOR_KERNELS)
    return micros / repeats / 1e6


def train_floor_rows(ours_step: Callable[[], object], hf_step_seconds: dict[str, float]) -> list[dict]:
    """Rows that bound the training ratios (CPU): each transformers variant's step time over our kernel floor."""
    floor = kernel_floor_seconds(ours_step)
    return [{"benchmark": f"train ratio ceiling vs HF {name}: HF step ms / our kernel floor ms "
                          "(matmuls + attention + loss softmax only)",
             "smolhub": floor * 1e3, "transformers": seconds * 1e3, "ratio": seconds / floor}
            for name, seconds in hf_step_seconds.items()]


def moe_train_tok_s(ours, hfs: dict, batch: torch.Tensor, args, ours_loss, hf_loss) -> tuple[dict, list[dict]]:
    """Training tokens/s of `ours` and of each transformers variant in `hfs` (timed interleaved, the same
    fused AdamW for all), and on a CPU the ratio-ceiling rows of `train_floor_rows`."""
    def step(model, loss_of):
        model.train()
        fn = train_step_fn(model, adamw(model, args.device), batch, loss_of)

        def run():
            with autocast(args):
                fn()
        return run

    fns = {"ours": step(ours, ours_loss), **{impl: step(m, hf_loss) for impl, m in hfs.items()}}
    t = interleaved_seconds(fns, args.device, args.repeats)
    floor = train_floor_rows(fns["ours"], {k: t[k] for k in hfs}) if args.device == "cpu" else []
    return {k: batch[:, :-1].numel() / v for k, v in t.items()}, floor


def peak_memory_mb(device: str) -> float | None:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return None


def print_table(rows: list[dict], columns: list[str]):
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in columns))


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def save_json(rows: list[dict], path: str):
    with open(path, "w") as f:
        json.dump(rows, f, indent=2)


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """The same table as `print_table`, as GitHub markdown (for bench/RESULTS.md)."""
    columns = [c for c in columns if any(r.get(c) is not None for r in rows)]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
