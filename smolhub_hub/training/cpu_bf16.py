"""Whether this CPU multiplies bf16 natively, which makes bf16 autocast the CPU's default training precision.

With AMX tiles or AVX512-BF16, oneDNN's bf16 matmuls run about 3x faster than fp32 ones (on the development
machine, one thread: 312 vs 107 GFLOP/s); without them bf16 is emulated and slower than fp32, so fp32 stays
the default there. Detected from what torch's own CPU probe reports, never assumed from the platform.
"""

from __future__ import annotations

import functools

import torch

# torch's CPU feature probes (cpuinfo), by the name users know from `lscpu`.
PROBES = {"amx_bf16": "_is_amx_tile_supported", "avx512_bf16": "_is_avx512_bf16_supported"}


@functools.cache
def native_bf16_features() -> tuple[str, ...]:
    """The bf16 multiply instructions this CPU has and oneDNN can use (empty: none, bf16 is emulated)."""
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return ()
    return tuple(name for name, probe in PROBES.items() if getattr(torch.cpu, probe, lambda: False)())


def cpu_default_dtype() -> str:
    """The `--dtype auto` of CPU training: bfloat16 (autocast) where the CPU multiplies bf16 natively, else float32."""
    return "bfloat16" if native_bf16_features() else "float32"
