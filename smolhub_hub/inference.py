"""Loading checkpoints and generating text: the API every model folder's inference.py exposes.

    model = load_model("runs/StoryLlama-quick")           # a run folder, a checkpoint, or a Hub id
    generate_text(model, "Once upon a time", max_length=100, temperature=0.7, top_k=None, top_p=None)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from smolhub_hub import checkpoint as ckpt_io
from smolhub_hub.config import ModelFamily
from smolhub_hub.errors import ArgumentParser, UserError, exit_on_user_error
from smolhub_hub.generation import SamplingConfig, generate, generate_tokens
from smolhub_hub.routing import format_routing, routing_of
from smolhub_hub.training.distributed import pick_device


def resolve_source(path_or_hub_id: str) -> Path:
    """A local checkpoint / run folder, or a Hub repo downloaded to the local cache.

    The Hub is asked only when the text could be a repo id and no local folder is meant; when the Hub
    cannot give it either, the message says both."""
    p = Path(path_or_hub_id).expanduser()
    if p.exists() or not _could_be_hub_id(path_or_hub_id):
        return ckpt_io.resolve_checkpoint(p)  # a missing folder is reported as such
    from smolhub_hub.hub import download

    try:
        return ckpt_io.resolve_checkpoint(download(path_or_hub_id))
    except UserError as e:
        raise UserError(f"'{path_or_hub_id}' is neither a folder here ({Path.cwd()}) nor a Hub repo that could be "
                        f"fetched: {e}") from None


def _could_be_hub_id(text: str) -> bool:
    """user/name, valid for the Hub, and not inside a local folder (runs/x with runs/ present is a path)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if text.count("/") != 1 or text.startswith((".", "/", "~")) or Path(text).parent.exists():
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def load_model(path_or_hub_id: str, family: ModelFamily | None = None, device: str = "auto"):
    """A model in eval mode with `.tokenizer` attached. `family` refuses checkpoints of other models."""
    from smolhub_hub.data.tokenizer import check_fingerprint, load_tokenizer
    from smolhub_hub.quantized_folder import is_quantized, load_quantized
    from smolhub_hub.registry import get_family

    if is_quantized(Path(path_or_hub_id)):  # `smolhub quantize` output: int8 weights, CPU only
        model = load_quantized(path_or_hub_id)
        if family is not None and model.checkpoint_config["family"] != family.name:
            raise UserError(f"{path_or_hub_id} is a quantized {model.checkpoint_config['family']} model, not "
                            f"{family.name}")
        return model
    ckpt = resolve_source(str(path_or_hub_id))
    cfg = ckpt_io.read_config(ckpt)
    if family is not None and cfg["family"] != family.name:
        raise UserError(f"{ckpt} is a {cfg['family']} checkpoint, not {family.name}; "
                        f"load it with {cfg['family']}/inference.py (or `smolhub generate`)")
    fam = get_family(cfg["family"])
    model = ckpt_io.build_model(ckpt, fam.model_class(), ckpt_io.model_config(ckpt, cfg, fam.model_config))
    ckpt_io.load_weights(ckpt, model)
    model = model.to(pick_device(device)).eval()
    model.tokenizer = load_tokenizer(str(ckpt), fix="use an earlier checkpoint")
    check_fingerprint(model.tokenizer, cfg.get(ckpt_io.TOKENIZER_KEY), str(ckpt),
                      "copy in the tokenizer files of the run that trained these weights, or use another checkpoint")
    model.checkpoint_path = ckpt
    model.checkpoint_config = cfg
    if len(model.tokenizer) > model.config.vocab_size:
        raise UserError(f"{ckpt}: the tokenizer has {len(model.tokenizer)} ids but the model embeds "
                        f"{model.config.vocab_size}; the checkpoint's files do not belong together")
    return model


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def encode_prompt(model, prompt: str, max_new_tokens: int) -> torch.Tensor:
    if not isinstance(prompt, str):
        raise UserError(f"the prompt must be text (got {type(prompt).__name__})")
    ids = model.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if not ids:  # an empty prompt starts a new document
        ids = [model.tokenizer.eos_token_id]
    room = model.max_seq_len - max_new_tokens
    if len(ids) > room:
        raise UserError(f"the prompt is {len(ids)} tokens; with {max_new_tokens} new tokens it must be at most "
                        f"{max(room, 0)} for this model's {model.max_seq_len}-token context. Shorten it.")
    return torch.tensor([ids], device=_device_of(model))


def generate_text(model, prompt, max_length: int = 100, temperature: float = 0.7, top_k: int | None = None,
                  top_p: float | None = None, greedy: bool = False, seed: int | None = None):
    """Continue `prompt` (a string, or a list of strings) by up to `max_length` new tokens."""
    cfg = SamplingConfig(max_length, temperature, top_k, top_p, greedy).validate()
    if isinstance(prompt, (list, tuple)):
        return [generate_text(model, p, max_length, temperature, top_k, top_p, greedy, seed) for p in prompt]
    ids = encode_prompt(model, prompt, max_length)
    gen = None
    if seed is not None:
        gen = torch.Generator(device=ids.device).manual_seed(seed)
    out = generate(model, ids, cfg, eos_id=model.tokenizer.eos_token_id, generator=gen)
    return model.tokenizer.decode(out[0], skip_special_tokens=True)


def stream_text(model, prompt: str, max_length: int = 100, temperature: float = 0.7, top_k=None, top_p=None,
                greedy: bool = False, seed: int | None = None):
    """Yield the growing completion (prompt included) after every new token: for streaming UIs."""
    cfg = SamplingConfig(max_length, temperature, top_k, top_p, greedy).validate()
    ids = encode_prompt(model, prompt, max_length)
    gen = torch.Generator(device=ids.device).manual_seed(seed) if seed is not None else None
    eos = model.tokenizer.eos_token_id
    new: list[int] = []
    for tok in generate_tokens(model, ids, cfg, eos_id=eos, generator=gen):
        t = int(tok[0])
        if t == eos:
            break
        new.append(t)
        yield model.tokenizer.decode(ids[0].tolist() + new, skip_special_tokens=True)
    if not new:  # the story ended at once (EOS first): still show the prompt
        yield model.tokenizer.decode(ids[0].tolist(), skip_special_tokens=True)


# --- CLI -------------------------------------------------------------------------------------------
def add_sampling_flags(p: argparse.ArgumentParser):
    """The sampling options of every model folder's inference.py and of `smolhub generate`."""
    p.add_argument("--prompt", action="append", required=True, help="prompt text (repeat for several)")
    p.add_argument("--max-length", type=int, default=100, help="new tokens to generate")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (0 = greedy)")
    p.add_argument("--top-k", type=int, default=None, help="sample from the k most likely tokens only")
    p.add_argument("--top-p", type=float, default=None, help="sample from the smallest set of tokens holding this "
                                                             "probability (nucleus sampling)")
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument("--seed", type=int, default=None, help="random seed: the same seed gives the same text")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (quantized folders run on CPU)")


def build_parser(family: ModelFamily, show_routing: bool = False) -> argparse.ArgumentParser:
    p = ArgumentParser(prog=f"{family.name}/inference.py",
                       description=f"Generate text with a {family.name} checkpoint.")
    p.add_argument("--checkpoint", required=True, help="checkpoint folder, run folder, or Hub repo id")
    add_sampling_flags(p)
    if show_routing:
        p.add_argument("--show-routing", action="store_true",
                       help="after each text, list the experts every generated token went to, per MoE layer")
    return p


@exit_on_user_error
def main(family: ModelFamily, argv=None, show_routing: bool = False):
    """A model folder's inference CLI; `show_routing` adds --show-routing (the mixture-of-experts families)."""
    args = build_parser(family, show_routing).parse_args(argv)
    model = load_model(args.checkpoint, family=family, device=args.device)
    cfg = SamplingConfig(args.max_length, args.temperature, args.top_k, args.top_p, args.greedy).validate()
    for prompt in args.prompt:
        ids = encode_prompt(model, prompt, args.max_length)
        gen = torch.Generator(device=ids.device).manual_seed(args.seed) if args.seed is not None else None
        out = generate(model, ids, cfg, eos_id=model.tokenizer.eos_token_id, generator=gen)
        print(model.tokenizer.decode(out[0], skip_special_tokens=True))
        if show_routing and args.show_routing:
            print(format_routing(model.tokenizer, out[:1], routing_of(model, out[:1]), start=ids.shape[1]))
        sys.stdout.flush()
