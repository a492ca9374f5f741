"""Write a loaded SmolHub model as a Hugging Face transformers folder (weights, config, tokenizer,
generation config), through the converter in its family's folder (`<Folder>/convert.py`).

The folder reads the same in transformers 4.x and 5.x. Two things differ between them and are written
for both here (the weights themselves are saved in the layout both read):
  - RoPE: 5.x reads `rope_parameters`, 4.x reads a top-level `rope_theta` and silently falls back to the
    architecture's default (Mixtral: 1e6) when it is missing. Both keys are written, with the same value.
  - Tokenizer class: 5.x saves `TokenizersBackend`, a name 4.x does not know. `PreTrainedTokenizerFast`
    is known to both (in 5.x it is an alias of `TokenizersBackend`) and reads `tokenizer.json` as it is.
"""

from __future__ import annotations

import json
from pathlib import Path

from smolhub_hub.errors import UserError

TOKENIZER_CLASS = "PreTrainedTokenizerFast"


def ensure_empty(out: Path, what: str = "output folder"):
    """Refuse to write into a folder that already holds files: nothing of the user's is overwritten."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{what} {out} is not empty; choose a new folder (or empty this one)")


def special_token_ids(tok) -> dict[str, int | None]:
    """bos / eos / pad ids as the exports declare them (SmolHub adds no BOS; EOS stands in for it)."""
    return {"eos_token_id": tok.eos_token_id, "bos_token_id": tok.bos_token_id or tok.eos_token_id,
            "pad_token_id": tok.pad_token_id}


def _update_json(path: Path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_hf_folder(model, out: Path) -> Path:
    from transformers import GenerationConfig

    from smolhub_hub.registry import get_family

    tok = model.tokenizer
    ids = special_token_ids(tok)
    hf = get_family(model.checkpoint_config["family"]).converter_module().to_hf(model, **ids)
    hf.generation_config = GenerationConfig(**ids, do_sample=True, temperature=0.7, max_new_tokens=100)
    hf.save_pretrained(out)
    tok.save_pretrained(out)
    rope = hf.config.to_dict().get("rope_parameters")
    if rope:  # GPT-2 has no RoPE
        _update_json(out / "config.json", rope_theta=rope["rope_theta"])
    # model_max_length: transformers warns (and pipelines truncate) past the model's real context.
    _update_json(out / "tokenizer_config.json", tokenizer_class=TOKENIZER_CLASS, model_max_length=model.max_seq_len)
    return out
