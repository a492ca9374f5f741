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

FORMAT = "smolhub-torchao-int8-1"
INT8_FORMAT = "smolhub-int8pack-1"  # the `int8` scheme: Int8Linear's weight (int8) and scales (bf16) per module
SAFETENSORS_SUPPORT = "torchao.prototype.safetensors.safetensors_support"  # torchao tensors <-> safetensors
WEIGHTS = "model.int8.safetensors"
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


class Int8Linear(nn.Module):
    """A linear layer with int8 weights and one bf16 scale per output row (symmetric, max |w| -> 127).

    `torch._weight_int8pack_mm` (torch's CPU kernel) multiplies bf16 activations by the int8 rows and applies
    the scales; the result goes back to the input's dtype, so the rest of the model runs as before. The kernel
    needs the input width to be a multiple of 16; other widths multiply the widened weights instead.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scales", torch.ones(out_features, dtype=torch.bfloat16))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        q = cls(linear.in_features, linear.out_features, linear.bias is not None)
        w = linear.weight.detach().float().cpu()
        q.scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-12).to(torch.bfloat16)
        q.weight = (w / q.scales.float()[:, None]).round().clamp(-127, 127).to(torch.int8)
        if linear.bias is not None:
            q.bias = linear.bias.detach().float().cpu()
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        if self.in_features % 16 == 0:
            y = torch._weight_int8pack_mm(flat, self.weight, self.scales)
        else:
            y = flat @ (self.weight.to(torch.bfloat16) * self.scales[:, None]).T
        y = y.to(x.dtype).view(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias.to(x.dtype)


def _linear_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and not n.endswith(READ_AS_MATRIX)]


def _swap_int8(model: nn.Module, names: list[str], convert: bool):
    """Replace each named nn.Linear with an Int8Linear: quantized from it, or empty (to load weights into)."""
    for name in names:
        parent, _, child = name.rpartition(".")
        linear = model.get_submodule(name)
        new = Int8Linear.from_linear(linear) if convert else Int8Linear(linear.in_features, linear.out_features,
                                                                         linear.bias is not None)
        setattr(model.get_submodule(parent) if parent else model, child, new)


# --- quantize / save / load ------------------------------------------------------------------------
def quantize_model(model: nn.Module, scheme: str = INT8) -> list[str]:
    """Quantize every nn.Linear in place (SmolHub's Int8Linear, or torchao); returns the quantized module names."""
    names = _linear_names(model)
    if scheme == INT8:
        _swap_int8(model, names, convert=True)
    else:
        _torchao().quantize_(model, torchao_config(scheme), filter_fn=lambda module, name: name in names)
    return names


def is_quantized(path: str | Path) -> bool:
    return (Path(path) / WEIGHTS).exists()


def _read_config(path: Path) -> dict:
    cfg = json.loads((path / "config.json").read_text())
    fmt = cfg.get("quantization", {}).get("format")
    if fmt not in (FORMAT, INT8_FORMAT):
        raise UserError(f"{path} was quantized by an older SmolHub (format {fmt!r}, PyTorch's deprecated int8 "
                        "layers); quantize the checkpoint again with `smolhub quantize`")
    return cfg


def _read_weights(path: Path, torchao: bool) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    support = require(SAFETENSORS_SUPPORT, "reading a quantized folder") if torchao else None
    try:
        with safe_open(path / WEIGHTS, "pt") as f:
            tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
        if support is None:
            return tensors
        state, leftover = support.unflatten_tensor_state_dict(tensors, metadata)
    except Exception as e:  # truncated or corrupt file
        raise UserError(f"{path / WEIGHTS} cannot be read ({type(e).__name__}: {str(e)[:120]}); "
                        "quantize the checkpoint again") from None
    return {**state, **leftover}


def load_quantized(path: str | Path):
    """A quantized folder as a CPU model in eval mode with `.tokenizer`, ready for `generate_text`."""
    from smolhub_hub import checkpoint as ckpt_io
    from smolhub_hub.data.tokenizer import check_fingerprint, load_tokenizer
    from smolhub_hub.registry import get_family

    path = Path(path)
    if not is_quantized(path):
        raise UserError(f"'{path}' is not a quantized SmolHub folder (no {WEIGHTS}); make one with `smolhub quantize`")
    cfg = _read_config(path)
    fam = get_family(cfg["family"])
    model = fam.model_class()(fam.model_config.from_dict(cfg["model"]))
    _load_weights(model, path, cfg["quantization"])
    model.eval()
    model.tokenizer = load_tokenizer(str(path))
    check_fingerprint(model.tokenizer, cfg.get(ckpt_io.TOKENIZER_KEY), str(path),
                      "copy in the tokenizer files of the checkpoint it was quantized from, or quantize it again")
    model.checkpoint_path, model.checkpoint_config = path, cfg
    return model


def _load_weights(model: nn.Module, path: Path, quant: dict):
    from smolhub_hub import checkpoint as ckpt_io

    torchao = quant["format"] == FORMAT
    if not torchao:  # Int8Linear modules, whose buffers the state dict fills
        _swap_int8(model, quant["modules"], convert=False)
    state = _read_weights(path, torchao)
    int8 = {name: state.pop(f"{name}.weight", None) for name in quant["modules"]} if torchao else {}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k.removesuffix(".weight") not in int8 and not ckpt_io._is_tied_alias(model, k)]
    if missing or unexpected or any(w is None for w in int8.values()):
        raise UserError(f"{path / WEIGHTS} does not fit its config (missing {missing[:3]}, unexpected "
                        f"{unexpected[:3]}); quantize the checkpoint again with `smolhub quantize`")
    for name, weight in int8.items():  # a head tied to the embedding is untied here, as when it was quantized
        model.get_submodule(name).weight = nn.Parameter(weight, requires_grad=False)


def _save(model, cfg: dict, quant: dict, folder: Path):
    from safetensors.torch import save_file

    from smolhub_hub import checkpoint as ckpt_io

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    plain = ckpt_io._untie({k: v for k, v in state.items() if type(v) is torch.Tensor})  # a tied matrix once
    if quant["format"] == INT8_FORMAT:
        save_file(plain, folder / WEIGHTS, metadata={"format": INT8_FORMAT})
    else:
        flatten_tensor_state_dict = require(SAFETENSORS_SUPPORT, "smolhub quantize").flatten_tensor_state_dict
        int8 = {k: v for k, v in state.items() if type(v) is not torch.Tensor}
        tensors, metadata = flatten_tensor_state_dict({**plain, **int8})
        save_file(tensors, folder / WEIGHTS, metadata=metadata)
    (folder / "config.json").write_text(json.dumps({**cfg, "quantization": quant}, indent=2))
    model.tokenizer.save_pretrained(folder)


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
    _save(model, cfg, quant, tmp)
    after = _measure(model, cfg, tmp / WEIGHTS, **bench)
    same = next((i for i, (a, b) in enumerate(zip(before["greedy_tokens"], after["greedy_tokens"])) if a != b),
                len(after["greedy_tokens"]))
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
