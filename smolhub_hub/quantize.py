"""`smolhub quantize`: int8 weights for CPU inference, measured before and after.

Every `nn.Linear` (attention, MLP, shared experts, the output head) gets int8 weights with one scale per output
row. Three schemes (`--scheme`):

  int8          (default) SmolHub's `Int8Linear`: torch's own CPU kernel `torch._weight_int8pack_mm` multiplies
                bf16 activations by the int8 rows and applies the scales, reading a quarter of fp32's bytes, so
                memory-bound batch-1 decoding runs faster (numbers in bench/REAL_SIZE.md). Needs no torchao.
  weight-only   torchao's `Int8WeightOnlyConfig`: activations stay fp32; the int8 weights are widened inside
                each matmul (no faster than fp32 on a CPU: kept for folders it wrote and for comparison).
  dynamic       torchao's `Int8DynamicActivationInt8WeightConfig`: activations are also rounded to int8, per
                token and call, and multiplied as int8.

Embeddings, norms, grouped MoE experts (3-D parameters, not `nn.Linear`) and StoryKimi's `wkv_b` stay fp32.
The folder written is safetensors + JSON, loaded without pickle:

    OUT/config.json                 the source checkpoint's config plus a "quantization" block
    OUT/model.int8.safetensors      int8 weights and their scales (torchao's flattened tensors for its schemes),
                                    plus the fp32 rest
    OUT/tokenizer files, OUT/quantization_report.json

Load it with `load_model(OUT)` / `load_quantized(OUT)` or `smolhub generate OUT`.

Why the folder is SmolHub's layout and not a transformers one: it holds SmolHub's module names (fused q/k/v,
every family, GPT-2-style SmolTransformers included). transformers 5 reads torchao models through
`TorchAoConfig`, so the transformers route starts from `smolhub export`:
`AutoModelForCausalLM.from_pretrained(export_dir, quantization_config=TorchAoConfig(Int8WeightOnlyConfig()))`,
then `save_pretrained` (GPT-2's Conv1D layers are not `nn.Linear` and stay fp32 there).

Speed: torchao 0.18 ships no int8 CPU kernel for its schemes (its compiled extensions are CUDA-only), so on
CPU its weight-only scheme widens the weights on every call and decodes slower than fp32 — it saves 4x memory
and disk, not time (numbers in docs/smolhub_cli.md); the `int8` scheme saves both. Folders written by older
SmolHub versions (format "smolhub-int8-1", PyTorch's deprecated `torch.ao` int8 layers) are refused with the fix:
quantize again.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import torch
import torch.nn as nn

from smolhub_hub.errors import UserError
from smolhub_hub.extras import require
from smolhub_hub.quantized_folder import FORMAT, INT8_FORMAT, WEIGHTS, _swap_int8, save_quantized

REPORT = "quantization_report.json"
INT8 = "int8"
SCHEMES = {"weight-only": "Int8WeightOnlyConfig", "dynamic": "Int8DynamicActivationInt8WeightConfig"}  # torchao's
# Linear layers whose weight the model also reads as a matrix, outside the layer's own call: they stay fp32.
# StoryKimi's latent attention folds wkv_b into the query when it decodes with the KV cache.
READ_AS_MATRIX = ("attn.wkv_b",)


def _torchao():
    return require("torchao.quantization", "smolhub quantize")


def torchao_config(scheme: str):
    if scheme not in SCHEMES:
        raise UserError(f"--scheme {scheme}: choose one of {', '.join([INT8, *SCHEMES])}")
    return getattr(_torchao(), SCHEMES[scheme])()



def _linear_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and not n.endswith(READ_AS_MATRIX)]


# --- quantize / save / load ------------------------------------------------------------------------
def quantize_model(model: nn.Module, scheme: str = INT8) -> list[str]:
    """Quantize every nn.Linear in place (SmolHub's Int8Linear, or torchao); returns the quantized module names."""
    names = _linear_names(model)
    if scheme == INT8:
        _swap_int8(model, names, convert=True)
    else:
        _torchao().quantize_(model, torchao_config(scheme), filter_fn=lambda module, name: name in names)
    return names


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
def decode(model, prompt: str, new_tokens: int, repeats: int = 3) -> tuple[float, list[int]]:
    """(tokens/s, greedy token ids): batch-1 decoding with the KV cache (no early EOS), best of `repeats`."""
    from smolhub_hub.generation import SamplingConfig, generate

    ids = torch.tensor([model.tokenizer(prompt, add_special_tokens=False)["input_ids"] or [0]])
    n = max(1, min(new_tokens, model.max_seq_len - ids.shape[1]))
    cfg = SamplingConfig(max_new_tokens=n, greedy=True)
    generate(model, ids, SamplingConfig(max_new_tokens=min(n, 8), greedy=True))  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = generate(model, ids, cfg)
        best = min(best, time.perf_counter() - t0)
    return n / best, out[0, ids.shape[1]:].tolist()


def _measure(model, cfg: dict, weights: Path, prompt: str, evaluate: bool, eval_batches: int, batch_size: int,
             bench_tokens: int) -> dict:
    speed, greedy = decode(model, prompt, bench_tokens)
    out = {"bytes": weights.stat().st_size, "tokens_per_s": speed, "greedy_tokens": greedy,
           "greedy_text": model.tokenizer.decode(greedy)}
    if evaluate:
        out["heldout_loss"] = heldout_loss(model, cfg, eval_batches, batch_size)
    return out


def _library(scheme: str) -> tuple[str, str, str]:
    """(format, library, config) of a scheme; an unknown scheme or a missing torchao fails before any work."""
    if scheme == INT8:
        return INT8_FORMAT, f"torch {torch.__version__} (_weight_int8pack_mm)", "Int8Linear"
    torchao_config(scheme)
    return FORMAT, f"torchao {require('torchao', 'smolhub quantize').__version__}", SCHEMES[scheme]


def quantize_checkpoint(checkpoint: str, out: str | Path, evaluate: bool = True, eval_batches: int = 10,
                        batch_size: int = 8, bench_tokens: int = 64, scheme: str = INT8) -> dict:
    """Write OUT (must be new or empty) and return the before/after report."""
    from smolhub_hub.hf_folder import ensure_empty
    from smolhub_hub.inference import load_model

    out = Path(out)
    ensure_empty(out)
    fmt, library, config = _library(scheme)
    model = load_model(checkpoint, device="cpu")
    ckpt, cfg = model.checkpoint_path, model.checkpoint_config
    prompt = cfg.get("train", {}).get("sample_prompt") or "Once upon a time"
    bench = dict(prompt=prompt, evaluate=evaluate, eval_batches=eval_batches, batch_size=batch_size,
                 bench_tokens=bench_tokens)
    before = _measure(model, cfg, ckpt / "model.safetensors", **bench)
    params_total = model.param_counts()["total"]  # before quantizing unties a tied head
    names = quantize_model(model, scheme)
    linear_params = sum(model.get_submodule(n).weight.numel() for n in names)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    quant = {"format": fmt, "library": library, "scheme": scheme, "config": config, "modules": names,
             "source": str(ckpt)}
    save_quantized(model, cfg, quant, tmp)
    after = _measure(model, cfg, tmp / WEIGHTS, **bench)
    pairs = zip(before["greedy_tokens"], after["greedy_tokens"], strict=False)
    same = next((i for i, (a, b) in enumerate(pairs) if a != b), len(after["greedy_tokens"]))
    report = {"checkpoint": str(ckpt), "family": cfg["family"], "scheme": scheme, "library": quant["library"],
              "quantized_modules": len(names), "params_total": params_total,
              "quantized_params": linear_params, "torch_threads": torch.get_num_threads(),
              "greedy_tokens_equal": same, "before": before, "after": after}
    (tmp / REPORT).write_text(json.dumps(report, indent=2))
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return report


def format_report(r: dict, out: Path) -> str:
    b, a = r["before"], r["after"]
    lines = [f"{r['family']}: {r['quantized_modules']} linear layers to int8 with {r['library']} ({r['scheme']}), "
             f"{r['quantized_params']:,} of {r['params_total']:,} parameters",
             f"  size        {b['bytes'] / 2**20:8.2f} MiB -> {a['bytes'] / 2**20:8.2f} MiB  "
             f"({a['bytes'] / b['bytes']:.2f}x)",
             f"  tokens/s    {b['tokens_per_s']:8.1f}     -> {a['tokens_per_s']:8.1f}      "
             f"({a['tokens_per_s'] / b['tokens_per_s']:.2f}x, batch 1, {r['torch_threads']} thread(s))"]
    if "heldout_loss" in b:
        lines.append(f"  held-out    {b['heldout_loss']:8.4f}     -> {a['heldout_loss']:8.4f}      "
                     f"({a['heldout_loss'] - b['heldout_loss']:+.4f} nats/token)")
    lines += [f"  greedy      {r['greedy_tokens_equal']} of {len(a['greedy_tokens'])} tokens as before",
              f"    fp32: {b['greedy_text']!r}", f"    int8: {a['greedy_text']!r}",
              f"wrote {out}: `smolhub generate {out} --prompt ...` or smolhub_hub.inference.load_model('{out}')"]
    return "\n".join(lines)
