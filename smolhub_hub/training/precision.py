"""Mixed precision: which dtype autocast runs the forward pass in, and the autocast context itself.

The weights stay fp32 (the optimizer's master copy); only the matmuls of the forward pass run in the
lower precision. bf16 has fp32's exponent range, so it needs no loss scaling; fp16 does (a GradScaler),
and is only chosen on GPUs without bf16.
"""

from __future__ import annotations

import contextlib

import torch

from smolhub_hub.training.cpu_bf16 import cpu_default_dtype

AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": None}


def amp_dtype(requested: str, device: str) -> torch.dtype | None:
    """The autocast dtype for `requested` (auto, bfloat16, float16, float32) on `device`; None = plain fp32.

    auto: bf16 on a GPU that has it, else fp16; on a CPU, bf16 where it multiplies bf16 natively (AMX,
    AVX512-BF16: `cpu_bf16`), else fp32, since emulated bf16 matmuls are slower, not faster."""
    if requested != "auto":
        return AMP_DTYPES[requested]
    if not device.startswith("cuda"):
        return AMP_DTYPES[cpu_default_dtype()]
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: str, dtype: torch.dtype | None):
    """torch.autocast on `device`'s type in `dtype`; nothing for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
