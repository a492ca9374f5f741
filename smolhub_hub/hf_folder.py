"""Write a loaded SmolHub model as a Hugging Face transformers folder (weights, config, tokenizer,
generation config), through the family's converter in `smolhub_hub.export`."""

from __future__ import annotations

from pathlib import Path

from smolhub_hub.errors import UserError


def ensure_empty(out: Path, what: str = "output folder"):
    """Refuse to write into a folder that already holds files: nothing of the user's is overwritten."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{what} {out} is not empty; choose a new folder (or empty this one)")


def write_hf_folder(model, out: Path) -> Path:
    from transformers import GenerationConfig

    from smolhub_hub.export import converter_for

    tok = model.tokenizer
    ids = {"eos_token_id": tok.eos_token_id, "bos_token_id": tok.bos_token_id or tok.eos_token_id,
           "pad_token_id": tok.pad_token_id}
    hf = converter_for(model.checkpoint_config["family"]).to_hf(model, **ids)
    hf.generation_config = GenerationConfig(**ids, do_sample=True, temperature=0.7, max_new_tokens=100)
    hf.save_pretrained(out)
    tok.save_pretrained(out)
    return out
