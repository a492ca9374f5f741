"""The folder `smolhub quantize` writes, and reading it back (safetensors + JSON, no pickle).

    config.json                 the source checkpoint's config plus a "quantization" block
    model.int8.safetensors      torchao's flattened int8 tensors (and its metadata) plus the fp32 rest
    tokenizer files, quantization_report.json

`smolhub_hub.inference.load_model` reads such a folder through `load_quantized`; `smolhub_hub.quantize` makes one.
Folders written by older SmolHub versions (format "smolhub-int8-1", PyTorch's deprecated `torch.ao` int8 layers)
are refused with the fix: quantize again.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn

from smolhub_hub import checkpoint as ckpt_io
from smolhub_hub.data.tokenizer import check_fingerprint, load_tokenizer
from smolhub_hub.errors import UserError
from smolhub_hub.extras import require
from smolhub_hub.registry import get_family

FORMAT = "smolhub-torchao-int8-1"
INT8_FORMAT = "smolhub-int8pack-1"  # the `int8` scheme: Int8Linear's weight (int8) and scales (bf16) per module
SAFETENSORS_SUPPORT = "torchao.prototype.safetensors.safetensors_support"  # torchao tensors <-> safetensors
WEIGHTS = "model.int8.safetensors"


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



def _swap_int8(model: nn.Module, names: list[str], convert: bool):
    """Replace each named nn.Linear with an Int8Linear: quantized from it, or empty (to load weights into)."""
    for name in names:
        parent, _, child = name.rpartition(".")
        linear = model.get_submodule(name)
        new = Int8Linear.from_linear(linear) if convert else Int8Linear(linear.in_features, linear.out_features,
                                                                         linear.bias is not None)
        setattr(model.get_submodule(parent) if parent else model, child, new)


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


def save_quantized(model, cfg: dict, quant: dict, folder: Path):
    from safetensors.torch import save_file


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


