"""`smolhub quantize`: int8 weights for CPU inference, measured before and after.

Every `nn.Linear` (attention, MLP, shared experts, the output head) gets int8 weights with one fp32
scale per output row (symmetric absmax). Embeddings, norms, routers and grouped MoE experts stay fp32.
At run time the int8 matrices go to PyTorch's x86 dynamic-quantization kernel (which also rounds
activations to int8 on the fly, per batch); where that kernel is missing, the weights are dequantized
inside forward (weight-only). The folder written is safetensors + JSON, loaded without pickle:

    OUT/config.json                 the source checkpoint's config plus a "quantization" block
    OUT/model.int8.safetensors      int8 weights, their scales, and the fp32 rest
    OUT/tokenizer files, OUT/quantization_report.json

Load it with `smolhub_hub.quantize.load_quantized(OUT)` or `smolhub generate OUT`.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from smolhub_hub import checkpoint as ckpt_io
from smolhub_hub.errors import UserError

FORMAT = "smolhub-int8-1"
WEIGHTS = "model.int8.safetensors"
REPORT = "quantization_report.json"


# --- the int8 linear layer -------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet():
    """torch.ao's quantized kernels warn that their Python front end is deprecated; the kernels are what we use."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-row int8: w ~= q * scale[:, None], q in [-127, 127]."""
    w = w.detach().float()
    scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def _dynamic_kernel(q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
    """PyTorch's x86 int8 dynamic linear holding these exact weights, or None where it is unavailable."""
    try:
        with _quiet():
            from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

            if "x86" not in torch.backends.quantized.supported_engines \
                    and "fbgemm" not in torch.backends.quantized.supported_engines:
                return None
            layer = DynamicLinear(q.shape[1], q.shape[0], bias_=bias is not None, dtype=torch.qint8)
            qw = torch._make_per_channel_quantized_tensor(q, scale.double(), torch.zeros_like(scale, dtype=torch.long), 0)
            layer.set_weight_bias(qw, None if bias is None else bias.float())
            return layer
    except (ImportError, RuntimeError, AttributeError):
        return None


class Int8Linear(nn.Module):
    """y = x (q * scale)^T + b with q int8. `.weight` dequantizes on demand for code that reads it directly."""

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, kernel: str = "auto"):
        super().__init__()
        self.in_features, self.out_features = q.shape[1], q.shape[0]
        self.kernel = _dynamic_kernel(q, scale, bias) if kernel in ("auto", "dynamic") else None
        if kernel == "dynamic" and self.kernel is None:
            raise UserError("this PyTorch build has no x86 int8 dynamic kernel; use --kernel weight-only")
        self.register_buffer("q", q)
        self.register_buffer("scale", scale)
        self.register_buffer("bias", bias)
        if self.kernel is not None:  # the kernel keeps its own packed copy
            self.q = torch.empty(0, dtype=torch.int8)

    @property
    def weight(self) -> torch.Tensor:
        if self.kernel is not None:
            with _quiet():
                return self.kernel.weight().dequantize()
        return self.q.float() * self.scale[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel is not None:
            return self.kernel(x) if x.dtype == torch.float32 else self.kernel(x.float()).to(x.dtype)
        y = F.linear(x, self.q.to(x.dtype)) * self.scale.to(x.dtype)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, int8, {'x86 dynamic' if self.kernel else 'weight-only'}"


def _set_module(model: nn.Module, name: str, module: nn.Module):
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


# --- quantize / save / load ------------------------------------------------------------------------
def quantize_model(model: nn.Module, kernel: str = "auto") -> tuple[dict[str, torch.Tensor], list[str]]:
    """Swap every nn.Linear for an Int8Linear in place; returns (tensors to save, quantized module names)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    tensors: dict[str, torch.Tensor] = {}
    for name in names:
        lin = model.get_submodule(name)
        q, scale = quantize_rows(lin.weight)
        bias = None if lin.bias is None else lin.bias.detach().float().clone()
        tensors[f"{name}.q"], tensors[f"{name}.scale"] = q, scale
        if bias is not None:
            tensors[f"{name}.bias"] = bias
        _set_module(model, name, Int8Linear(q, scale, bias, kernel))
    replaced = tuple(f"{n}." for n in names)
    for k, v in model.state_dict().items():
        if not k.startswith(replaced):
            tensors.setdefault(k, v.detach().cpu().contiguous())
    return ckpt_io._untie(tensors), names


def is_quantized(path: str | Path) -> bool:
    return (Path(path) / WEIGHTS).exists()


def load_quantized(path: str | Path, kernel: str = "auto"):
    """A quantized folder as a CPU model in eval mode with `.tokenizer`, ready for `generate_text`."""
    from smolhub_hub.data.tokenizer import load_tokenizer
    from smolhub_hub.registry import get_family

    path = Path(path)
    if not is_quantized(path):
        raise UserError(f"'{path}' is not a quantized SmolHub folder (no {WEIGHTS}); make one with `smolhub quantize`")
    cfg = json.loads((path / "config.json").read_text())
    quant = cfg.get("quantization", {})
    if quant.get("format") != FORMAT:
        raise UserError(f"{path} was quantized in an unknown format {quant.get('format')!r}; quantize it again")
    fam = get_family(cfg["family"])
    model = fam.model_class()(fam.model_config.from_dict(cfg["model"]))
    try:
        state = load_file(path / WEIGHTS)
    except Exception as e:  # truncated or corrupt file
        raise UserError(f"{path / WEIGHTS} cannot be read ({e}); quantize the checkpoint again") from None
    prefixes = tuple(f"{n}." for n in quant["modules"])
    int8 = {k: state.pop(k) for k in list(state) if k.startswith(prefixes)}
    # The fp32 rest loads first; the nn.Linear weights it lacks are the ones swapped for int8 below.
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(prefixes) and not ckpt_io._is_tied_alias(model, k)]
    if missing or unexpected:
        raise UserError(f"{path / WEIGHTS} does not fit its config (missing {missing[:3]}, unexpected {unexpected[:3]}); "
                        "it may come from an older SmolHub: quantize the checkpoint again with `smolhub quantize`")
    for name in quant["modules"]:
        _set_module(model, name, Int8Linear(int8[f"{name}.q"], int8[f"{name}.scale"], int8.get(f"{name}.bias"), kernel))
    model.eval()
    model.tokenizer = load_tokenizer(str(path))
    model.checkpoint_path, model.checkpoint_config = path, cfg
    return model


def _file_bytes(path: Path) -> int:
    return path.stat().st_size


# --- measurements ----------------------------------------------------------------------------------
@torch.no_grad()
def heldout_loss(model, cfg: dict, batches: int, batch_size: int) -> float:
    """Mean next-token loss on the checkpoint's own held-out split, on the windows the trainer evaluates."""
    from smolhub_hub.config import DataConfig
    from smolhub_hub.data.packed import prepare_data, window_starts, windows_to_batch
    from smolhub_hub.training.engine import EVAL_SEED

    val = prepare_data(DataConfig.from_dict(cfg["data"])).val
    seq = min(cfg.get("train", {}).get("seq_len") or model.max_seq_len, model.max_seq_len)
    starts = window_starts(len(val), seq, batches * batch_size, EVAL_SEED, 0)
    total = 0.0
    for i in range(0, len(starts), batch_size):
        x, y = windows_to_batch(val, starts[i:i + batch_size], seq, "cpu")
        total += model(x, y).lm_loss.item()
    return total / math.ceil(len(starts) / batch_size)


@torch.no_grad()
def tokens_per_second(model, prompt: str, new_tokens: int, repeats: int = 3) -> float:
    """Batch-1 decoding speed with the KV cache (no early EOS), best of `repeats` after a warm-up."""
    from smolhub_hub.generation import SamplingConfig, generate

    ids = torch.tensor([model.tokenizer(prompt, add_special_tokens=False)["input_ids"] or [0]])
    n = max(1, min(new_tokens, model.max_seq_len - ids.shape[1]))
    cfg = SamplingConfig(max_new_tokens=n, greedy=True)
    generate(model, ids, SamplingConfig(max_new_tokens=min(n, 8), greedy=True))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        generate(model, ids, cfg)
        best = min(best, time.perf_counter() - t0)
    return n / best


def quantize_checkpoint(checkpoint: str, out: str | Path, evaluate: bool = True, eval_batches: int = 10,
                        batch_size: int = 8, bench_tokens: int = 64, kernel: str = "auto") -> dict:
    """Write OUT (must be new or empty) and return the before/after report."""
    from smolhub_hub.hf_folder import ensure_empty
    from smolhub_hub.inference import load_model

    out = Path(out)
    ensure_empty(out)
    model = load_model(checkpoint, device="cpu")
    ckpt, cfg = model.checkpoint_path, model.checkpoint_config
    prompt = cfg.get("train", {}).get("sample_prompt") or "Once upon a time"
    before = {"bytes": _file_bytes(ckpt / "model.safetensors"),
              "tokens_per_s": tokens_per_second(model, prompt, bench_tokens)}
    if evaluate:
        before["heldout_loss"] = heldout_loss(model, cfg, eval_batches, batch_size)
    shared = {p.data_ptr() for n, p in model.named_parameters() if not isinstance(
        model.get_submodule(n.rpartition(".")[0]), nn.Linear)}  # a head tied to the embedding is not extra
    linear_params = sum(m.weight.numel() for m in model.modules()
                        if isinstance(m, nn.Linear) and m.weight.data_ptr() not in shared)
    total_params = model.param_counts()["total"]  # a tied head counts once, as in training logs
    tensors, names = quantize_model(model, kernel)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, tmp / WEIGHTS, metadata={"format": FORMAT})
    quant = {"format": FORMAT, "scheme": "int8 weights, symmetric, one fp32 scale per output row",
             "modules": names, "source": str(ckpt)}
    (tmp / "config.json").write_text(json.dumps({**cfg, "quantization": quant}, indent=2))
    model.tokenizer.save_pretrained(tmp)
    after = {"bytes": _file_bytes(tmp / WEIGHTS), "tokens_per_s": tokens_per_second(model, prompt, bench_tokens)}
    if evaluate:
        after["heldout_loss"] = heldout_loss(model, cfg, eval_batches, batch_size)
    report = {"checkpoint": str(ckpt), "family": cfg["family"], "quantized_modules": len(names),
              "quantized_share_of_params": linear_params / max(total_params, 1),
              "kernel": "x86 dynamic int8" if any(getattr(m, "kernel", None) is not None for m in model.modules())
              else "weight-only (dequantize in forward)",
              "torch_threads": torch.get_num_threads(), "before": before, "after": after}
    (tmp / REPORT).write_text(json.dumps(report, indent=2))
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return report


def format_report(r: dict, out: Path) -> str:
    b, a = r["before"], r["after"]
    lines = [f"{r['family']}: {r['quantized_modules']} linear layers to int8 "
             f"({r['quantized_share_of_params']:.0%} of parameters), kernel: {r['kernel']}",
             f"  size        {b['bytes'] / 2**20:8.2f} MiB -> {a['bytes'] / 2**20:8.2f} MiB  "
             f"({a['bytes'] / b['bytes']:.2f}x)",
             f"  tokens/s    {b['tokens_per_s']:8.1f}     -> {a['tokens_per_s']:8.1f}      "
             f"({a['tokens_per_s'] / b['tokens_per_s']:.2f}x, batch 1, {r['torch_threads']} thread(s))"]
    if "heldout_loss" in b:
        lines.append(f"  held-out    {b['heldout_loss']:8.4f}     -> {a['heldout_loss']:8.4f}      "
                     f"({a['heldout_loss'] - b['heldout_loss']:+.4f} nats/token)")
    lines.append(f"wrote {out}: `smolhub generate {out} --prompt ...` or smolhub_hub.quantize.load_quantized('{out}')")
    return "\n".join(lines)
