"""Loading checkpoints and generating text: the API every model folder's inference.py exposes.

    model = load_model("runs/StoryLlama-quick")           # a run folder, a checkpoint, a Hub id, a .gguf ...
    generate_text(model, "Once upon a time", max_length=100, temperature=0.7, top_k=None, top_p=None)
    generate_text(load_model("smollm2"), "What is the capital of France?")  # through its chat template
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from smolhub_hub.config import ModelFamily
from smolhub_hub.errors import ArgumentParser, UserError, exit_on_user_error
from smolhub_hub.generation import SamplingConfig, generate, generate_tokens
from smolhub_hub.routing import format_routing, routing_of
from smolhub_hub.training.distributed import pick_device


def load_model(path_or_hub_id: str, family: ModelFamily | None = None, device: str = "auto"):
    """A model in eval mode with `.tokenizer` attached. `family` refuses checkpoints of other models.

    Any `smolhub import` source loads: a checkpoint or run folder, a Hub repo id, a transformers folder, a .gguf
    file or `smollm2` (those that are not SmolHub checkpoints are imported once into a cache)."""
    from smolhub_hub.importer import load
    from smolhub_hub.quantized_folder import is_quantized, load_quantized

    if is_quantized(Path(path_or_hub_id)):  # `smolhub quantize` output: int8 weights, CPU only
        model = load_quantized(path_or_hub_id)
        if family is not None and model.checkpoint_config["family"] != family.name:
            raise UserError(f"{path_or_hub_id} is a quantized {model.checkpoint_config['family']} model, not "
                            f"{family.name}")
        return model
    return load(str(path_or_hub_id), family.name if family else None).to(pick_device(device))


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def uses_chat(model, chat: bool | None = None) -> bool:
    """Whether prompts go through the tokenizer's chat template: `chat`, or (None) whether the tokenizer has one."""
    has_template = bool(getattr(model.tokenizer, "chat_template", None))
    if chat and not has_template:
        raise UserError("this checkpoint's tokenizer has no chat template; drop --chat (prompts are continued as text)")
    return has_template if chat is None else chat


def prompt_ids(model, prompt: str, chat: bool = False) -> list[int]:
    """The prompt's token ids: plain text, or one user turn of the chat template with the assistant's turn opened."""
    if not isinstance(prompt, str):
        raise UserError(f"the prompt must be text (got {type(prompt).__name__})")
    if chat:
        turn = [{"role": "user", "content": prompt}]
        return list(model.tokenizer.apply_chat_template(turn, add_generation_prompt=True)["input_ids"])
    return model.tokenizer(prompt, add_special_tokens=False)["input_ids"]


def encode_prompt(model, prompt: str, max_new_tokens: int, chat: bool = False) -> torch.Tensor:
    ids = prompt_ids(model, prompt, chat)
    if not ids:  # an empty prompt starts a new document
        ids = [model.tokenizer.eos_token_id]
    room = model.max_seq_len - max_new_tokens
    if len(ids) > room:
        raise UserError(f"the prompt is {len(ids)} tokens; with {max_new_tokens} new tokens it must be at most "
                        f"{max(room, 0)} for this model's {model.max_seq_len}-token context. Shorten it.")
    return torch.tensor([ids], device=_device_of(model))


def shown_text(model, head: list[int], new: list[int], chat: bool) -> str:
    """What a reader sees of the prompt ids `head` and the `new` ids: both, or in a chat the answer alone."""
    return model.tokenizer.decode(new if chat else head + new, skip_special_tokens=True)


def _prompt_and_generator(model, prompt: str, cfg: SamplingConfig, seed: int | None, chat: bool):
    """The prompt's ids (1, T) on the model's device, and the seeded generator for sampling (None: unseeded)."""
    ids = encode_prompt(model, prompt, cfg.max_new_tokens, chat)
    return ids, torch.Generator(device=ids.device).manual_seed(seed) if seed is not None else None


def _generate(model, prompt: str, cfg: SamplingConfig, seed: int | None, chat: bool):
    """(prompt ids, prompt and new ids): generation stops at the tokenizer's EOS (SmolLM2's is <|im_end|>)."""
    ids, gen = _prompt_and_generator(model, prompt, cfg, seed, chat)
    return ids, generate(model, ids, cfg, eos_id=model.tokenizer.eos_token_id, generator=gen)


def generate_text(model, prompt, max_length: int = 100, temperature: float = 0.7, top_k: int | None = None,
                  top_p: float | None = None, greedy: bool = False, seed: int | None = None, chat: bool | None = None):
    """Continue `prompt` (a string, or a list of strings) by up to `max_length` new tokens: returns the prompt and
    its continuation, or, through the tokenizer's chat template (`chat=None`: when it has one), the answer alone."""
    cfg = SamplingConfig(max_length, temperature, top_k, top_p, greedy).validate()
    if isinstance(prompt, (list, tuple)):
        return [generate_text(model, p, max_length, temperature, top_k, top_p, greedy, seed, chat) for p in prompt]
    chat = uses_chat(model, chat)
    ids, out = _generate(model, prompt, cfg, seed, chat)
    return shown_text(model, ids[0].tolist(), out[0, ids.shape[1]:].tolist(), chat)


def stream_text(model, prompt: str, max_length: int = 100, temperature: float = 0.7, top_k=None, top_p=None,
                greedy: bool = False, seed: int | None = None, chat: bool | None = None):
    """Yield the growing text (as `generate_text` returns it) after every new token: for streaming UIs."""
    cfg = SamplingConfig(max_length, temperature, top_k, top_p, greedy).validate()
    chat = uses_chat(model, chat)
    ids, gen = _prompt_and_generator(model, prompt, cfg, seed, chat)
    eos = model.tokenizer.eos_token_id
    head, new = ids[0].tolist(), []
    for tok in generate_tokens(model, ids, cfg, eos_id=eos, generator=gen):
        t = int(tok[0])
        if t == eos:
            break
        new.append(t)
        yield shown_text(model, head, new, chat)
    if not new:  # the story ended at once (EOS first): still show the prompt
        yield shown_text(model, head, new, chat)


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
    p.add_argument("--chat", action=argparse.BooleanOptionalAction, default=None,
                   help="wrap the prompt in the tokenizer's chat template and print the answer (default: when the "
                        "tokenizer has one); --no-chat continues the prompt as plain text")


def build_parser(family: ModelFamily, show_routing: bool = False) -> argparse.ArgumentParser:
    p = ArgumentParser(prog=f"{family.name}/inference.py",
                       description=f"Generate text with a {family.name} checkpoint.")
    p.add_argument("--checkpoint", required=True, help="checkpoint folder, run folder, Hub repo id, or any `smolhub "
                                                       "import` source (.gguf file, transformers folder, smollm2)")
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
    chat = uses_chat(model, args.chat)
    for prompt in args.prompt:
        ids, out = _generate(model, prompt, cfg, args.seed, chat)
        print(shown_text(model, ids[0].tolist(), out[0, ids.shape[1]:].tolist(), chat))
        if show_routing and args.show_routing:
            print(format_routing(model.tokenizer, out[:1], routing_of(model, out[:1]), start=ids.shape[1]))
        sys.stdout.flush()
