"""Model FLOPs per token, the device's peak FLOP/s, and MFU.

FLOPs per trained token (PaLM appendix B / nanoGPT's `estimate_mfu`):

    6 * N  +  6 * L * T * H * (d_qk + d_v)

N counts the parameters a token multiplies through: every active weight (for MoE, the chosen experts
only, plus shared experts and routers), minus pure lookup tables (the token embedding when it is not
tied to the head, learned positions); the output head is a matmul and counts. The attention term is
QK^T and attention-times-V for every query head, forward (2 FLOPs per multiply-add) and backward (2x):
for multi-head / GQA attention d_qk = d_v = head_dim, so it is the familiar 12 * L * T * d; for MLA
(StoryKimi) d_qk = nope + rope width and d_v = v_head_dim. Causal masking is not discounted (the usual
convention, so MFU numbers compare with published ones).
"""

from __future__ import annotations

import time

import torch
import torch.nn as nn

# Dense bf16 tensor-core peaks from the vendors' data sheets (no sparsity), FLOP/s.
DECLARED_BF16_PEAK = [
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),   # SXM
    ("H200", 989e12),
    ("GH200", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("A10G", 70e12),
    ("RTX 4090", 165e12),
]


def matmul_params(model: nn.Module) -> int:
    """Active parameters a token is multiplied through (lookup-only embeddings excluded)."""
    counts = model.param_counts()
    linear_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    lookup = sum(m.weight.numel() for m in model.modules()
                 if isinstance(m, nn.Embedding) and id(m.weight) not in linear_weights)
    return counts["active"] - lookup


def attention_dims(config) -> tuple[int, int, int, int]:
    """(layers, query heads, d_qk, d_v) from a SmolHub model config."""
    if hasattr(config, "qk_nope_head_dim"):  # MLA
        d_qk, d_v = config.qk_nope_head_dim + config.qk_rope_head_dim, config.v_head_dim
    else:
        d_qk = d_v = getattr(config, "head_dim", None) or config.dim // config.n_heads
    return config.n_layers, config.n_heads, d_qk, d_v


def train_flops_per_token(model: nn.Module, seq_len: int) -> float:
    L, H, d_qk, d_v = attention_dims(model.config)
    return 6.0 * matmul_params(model) + 6.0 * L * seq_len * H * (d_qk + d_v)


def mfu(tokens_per_s: float, flops_per_token: float, peak_flops: float) -> float:
    return tokens_per_s * flops_per_token / peak_flops


def measured_matmul_flops(device: str = "cpu", dtype=torch.float32, n: int = 1536, repeats: int = 5) -> float:
    """Best FLOP/s of an n x n x n matmul (the attainable peak, measured in this process)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(4 if device.startswith("cuda") else 1):
            a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t) / (4 if device.startswith("cuda") else 1))
    return 2.0 * n ** 3 / best


def peak_flops(device: str, dtype: str = "float32") -> tuple[float, str]:
    """(peak FLOP/s, where it came from). CUDA bf16: the declared data-sheet peak when the GPU is known,
    else measured; CPU (or fp32 anywhere): measured with a large fp32 matmul."""
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(device)
        if dtype == "bfloat16":
            for key, flops in DECLARED_BF16_PEAK:
                if key in name:
                    return flops, f"declared bf16 dense peak of {name}"
            return measured_matmul_flops(device, torch.bfloat16, n=8192), f"measured bf16 8192^3 matmul on {name}"
        return measured_matmul_flops(device, torch.float32, n=8192), f"measured fp32 8192^3 matmul on {name}"
    return measured_matmul_flops("cpu"), f"measured fp32 1536^3 matmul, {torch.get_num_threads()} threads"
