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
SAFETENSORS_SUPPORT = "torchao.prototype.safetensors.safetensors_support"  # torchao tensors <-> safetensors
WEIGHTS = "model.int8.safetensors"


def is_quantized(path: str | Path) -> bool:
    return (Path(path) / WEIGHTS).exists()


def _read_config(path: Path) -> dict:
    cfg = json.loads((path / "config.json").read_text())
    fmt = cfg.get("quantization", {}).get("format")
    if fmt != FORMAT:
        raise UserError(f"{path} was quantized by an older SmolHub (format {fmt!r}, PyTorch's deprecated int8 "
                        "layers); quantize the checkpoint again with `smolhub quantize`")
    return cfg


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    unflatten_tensor_state_dict = require(SAFETENSORS_SUPPORT, "reading a quantized folder").unflatten_tensor_state_dict

    try:
        with safe_open(path / WEIGHTS, "pt") as f:
            tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
        state, leftover = unflatten_tensor_state_dict(tensors, metadata)
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
    state = _read_weights(path)
    int8 = {name: state.pop(f"{name}.weight", None) for name in cfg["quantization"]["modules"]}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k.removesuffix(".weight") not in int8 and not ckpt_io._is_tied_alias(model, k)]
    if missing or unexpected or any(w is None for w in int8.values()):
        raise UserError(f"{path / WEIGHTS} does not fit its config (missing {missing[:3]}, unexpected "
                        f"{unexpected[:3]}); quantize the checkpoint again with `smolhub quantize`")
    for name, weight in int8.items():  # a head tied to the embedding is untied here, as when it was quantized
        model.get_submodule(name).weight = nn.Parameter(weight, requires_grad=False)
    model.eval()
    model.tokenizer = load_tokenizer(str(path))
    check_fingerprint(model.tokenizer, cfg.get(ckpt_io.TOKENIZER_KEY), str(path),
                      "copy in the tokenizer files of the checkpoint it was quantized from, or quantize it again")
    model.checkpoint_path, model.checkpoint_config = path, cfg
    return model


def save_quantized(model, cfg: dict, quant: dict, folder: Path):
    """Write `model` (quantized in place by `smolhub_hub.quantize`) with its config and tokenizer into `folder`."""
    from safetensors.torch import save_file

    flatten_tensor_state_dict = require(SAFETENSORS_SUPPORT, "smolhub quantize").flatten_tensor_state_dict
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    plain = ckpt_io._untie({k: v for k, v in state.items() if type(v) is torch.Tensor})  # a tied matrix once
    int8 = {k: v for k, v in state.items() if type(v) is not torch.Tensor}
    tensors, metadata = flatten_tensor_state_dict({**plain, **int8})
    save_file(tensors, folder / WEIGHTS, metadata=metadata)
    (folder / "config.json").write_text(json.dumps({**cfg, "quantization": quant}, indent=2))
    model.tokenizer.save_pretrained(folder)
