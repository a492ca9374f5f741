"""Batched generation of corrections (greedy for evaluation, sampled for preference pairs)."""

from __future__ import annotations

import torch

from smol_experiments.alignment.prompt_format import encode_prompt
from smolhub_hub.training.distributed import pick_device


@torch.no_grad()
def generate_corrections(model, tokenizer, prompts: list[str], *, batch_size: int = 32, temperature: float = 0.0,
                         max_new_tokens: int = 128, seed: int = 0, desc: str = "generating") -> list[str]:
    """The completion text for each prompt (up to EOS, special tokens removed); temperature 0 = greedy.

    Prompts are tokenized with `encode_prompt` (the same ids the trainers use) and left-padded, so every
    row's generation starts right after its own prompt. Sorting by length keeps padding small.
    """
    from tqdm.auto import tqdm

    device = pick_device()
    model.to(device).eval()
    torch.manual_seed(seed)
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    outputs: list[str] = [""] * len(prompts)
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature > 0 \
        else {"do_sample": False}
    for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False):
        rows = order[start:start + batch_size]
        width = max(len(encoded[i]) for i in rows)
        pad = tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(encoded[i])) + encoded[i] for i in rows], device=device)
        attention_mask = torch.tensor([[0] * (width - len(encoded[i])) + [1] * len(encoded[i]) for i in rows],
                                      device=device)
        # a correction is about as long as its input: the cap stops a model that never emits EOS early
        new_tokens = min(max_new_tokens, width + 16)
        generated = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=new_tokens,
                                   eos_token_id=tokenizer.eos_token_id, pad_token_id=pad, **sampling)
        for i, ids in zip(rows, generated[:, width:].tolist(), strict=True):
            outputs[i] = tokenizer.decode(ids, skip_special_tokens=True)
    return outputs
