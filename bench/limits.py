"""This machine's limits, measured in the benchmark's own process with its thread count, and the % of them
that a row reaches.

  - matmul peak per dtype (fp32, bf16): best FLOP/s of a large square matmul. A training row's model FLOPs
    per second (bench/flops.py: 6N + attention) over the peak of the dtype it multiplies in is its MFU.
  - memory read bandwidth: best bytes/s of summing a tensor far larger than the caches. Batch-1 decoding
    must read every weight a token multiplies through once per token, so
    tokens/s x weight bytes per token / bandwidth is the share of the bandwidth roofline a decoder reaches.

    python bench/limits.py            # prints the limits at torch's thread count
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from flops import matmul_params, measured_matmul_flops, mfu, train_flops_per_token  # noqa: E402

READ_BYTES = 256 * 2**20  # far beyond any last-level cache


@dataclass
class Limits:
    fp32_flops: float
    bf16_flops: float
    read_bytes_per_s: float
    threads: int

    def matmul_peak(self, dtype: str) -> float:
        return self.bf16_flops if dtype == "bfloat16" else self.fp32_flops

    def describe(self) -> str:
        return (f"limits at {self.threads} thread(s): fp32 matmul {self.fp32_flops / 1e9:.0f} GFLOP/s, "
                f"bf16 matmul {self.bf16_flops / 1e9:.0f} GFLOP/s, memory read {self.read_bytes_per_s / 1e9:.1f} GB/s")


def read_bandwidth(nbytes: int = READ_BYTES, repeats: int = 5) -> float:
    """Best bytes/s of `sum` over an fp32 tensor of `nbytes` (one streaming read)."""
    x = torch.ones(nbytes // 4)
    x.sum()  # warm-up: pages touched
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t)
    return nbytes / best


def measure(n: int = 2048, repeats: int = 5) -> Limits:
    """The CPU's limits at torch's current thread count (best of `repeats`: other tenants only slow it down)."""
    return Limits(fp32_flops=measured_matmul_flops("cpu", torch.float32, n=n, repeats=repeats),
                  bf16_flops=measured_matmul_flops("cpu", torch.bfloat16, n=n, repeats=repeats),
                  read_bytes_per_s=read_bandwidth(repeats=repeats), threads=torch.get_num_threads())


def decode_bytes_per_token(model: nn.Module) -> int:
    """Bytes of weights one decoded token reads at batch 1: every stored tensor of the model (int8 weights and
    their scales included) except lookup-only embeddings (one row is read) and, for MoE, the unchosen experts.
    A head tied to the embedding is a matmul over the whole matrix and counts once."""
    linear_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    lookup = {m.weight.data_ptr() for m in model.modules()
              if isinstance(m, nn.Embedding) and id(m.weight) not in linear_weights}
    seen, total = set(), 0
    for t in model.state_dict().values():
        if t.data_ptr() in seen or t.data_ptr() in lookup:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    counts = model.param_counts() if hasattr(model, "param_counts") else None  # SmolHub models; HF's are dense here
    inactive = counts["total"] - counts["active"] if counts else 0
    return total - inactive * next(model.parameters()).element_size()


def roofline_percent(tokens_per_s: float, bytes_per_token: float, read_bytes_per_s: float) -> float:
    """% of the batch-1 decoding roofline: the weight bytes a decoder read per second over the bandwidth."""
    return 100.0 * tokens_per_s * bytes_per_token / read_bytes_per_s


def annotate(row: dict, model, batch_tokens: int, seq_len: int, dtype: str) -> dict:
    """`row` plus what its % of a limit needs: a training row's step times and model FLOPs per token (and the
    dtype it multiplies in), a batch-1 decoding row's weight bytes per token. `apply_limits` turns them into %."""
    name = row["benchmark"]
    if name.startswith("train tok/s"):
        row.update({"step ms": 1e3 * batch_tokens / row["smolhub"],
                    "HF step ms": 1e3 * batch_tokens / row["transformers"],
                    "flops/token": train_flops_per_token(model, seq_len), "matmul params": matmul_params(model),
                    "matmul dtype": dtype})
    elif "generate tok/s" in name and "(B=1," in name:
        row["weight bytes/token"] = decode_bytes_per_token(model)
    return row


def apply_limits(rows: list[dict], peak_of, read_bytes_per_s: float | None):
    """Fill "MFU %" (model FLOPs/s over `peak_of(dtype)`) and "roofline %" (weight bytes read per second over the
    bandwidth; skipped when it is None) for the rows `annotate` prepared."""
    for row in rows:
        if "flops/token" in row:
            peak = peak_of(row["matmul dtype"])
            row["MFU %"] = 100 * mfu(row["smolhub"], row["flops/token"], peak)
            row["HF MFU %"] = 100 * mfu(row["transformers"], row["flops/token"], peak)
        if "weight bytes/token" in row and read_bytes_per_s:
            row["roofline %"] = roofline_percent(row["smolhub"], row["weight bytes/token"], read_bytes_per_s)
            row["HF roofline %"] = roofline_percent(row["transformers"], row["weight bytes/token"], read_bytes_per_s)


def best_of(a: Limits, b: Limits) -> Limits:
    """Each limit at its best of two measurements: other tenants of a shared machine only ever lower them."""
    return Limits(max(a.fp32_flops, b.fp32_flops), max(a.bf16_flops, b.bf16_flops),
                  max(a.read_bytes_per_s, b.read_bytes_per_s), a.threads)


def main():
    print(measure().describe())


if __name__ == "__main__":
    main()
