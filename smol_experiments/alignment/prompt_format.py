"""The one prompt format every stage uses: SFT, preference pairs, DPO, CPO and evaluation.

    prompt     = "{src}\\nCorrection:"
    completion = " {tgt}" + EOS

The completion keeps its leading space. The reference project stripped it when it built preference
pairs, so DPO/CPO trained a first token the SFT model never produces; here every stage builds its
strings and token ids through this module, and a test checks that the trainers agree.
"""

from __future__ import annotations

PROMPT_TEMPLATE = "{src}\nCorrection:"


def make_prompt(src: str) -> str:
    return PROMPT_TEMPLATE.format(src=src.strip())


def make_completion(text: str) -> str:
    """The completion string without EOS (the trainers append it): one leading space, then the text."""
    return " " + text.strip()


def encode_prompt(tokenizer, src_prompt: str) -> list[int]:
    """Token ids of a prompt string, exactly as generation sees them (no BOS, no special tokens added)."""
    return tokenizer(src_prompt, add_special_tokens=False)["input_ids"]


def encode_completion(tokenizer, prompt: str, completion: str) -> list[int]:
    """Token ids of `completion` + EOS as they follow `prompt` in one sequence.

    The completion is cut from the tokenized prompt+completion so that any merge across the boundary is seen;
    the format is chosen so that none happens (":" then " word"), which the tests check.
    """
    prompt_ids = encode_prompt(tokenizer, prompt)
    full_ids = tokenizer(prompt + completion, add_special_tokens=False)["input_ids"]
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise ValueError(f"The tokenizer merges the end of the prompt with the completion: {prompt!r} + {completion!r}")
    return full_ids[len(prompt_ids):] + [tokenizer.eos_token_id]


def strip_instruction(src: str) -> str:
    """The sentence to correct, without CoEdIT's instruction ("Fix grammar: ..."): the copy-the-input baseline."""
    head, sep, tail = src.partition(": ")
    return tail.strip() if sep else src.strip()
