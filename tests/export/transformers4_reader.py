"""Run by tests/export/test_transformers4.py in the transformers 4.x environment (.venv-tf4), never imported.

Reads a JSON list of {"folder", "prompt", "new_tokens"} on stdin; loads each folder with the Auto classes
only (no SmolHub code) and prints one JSON object per folder: versions, classes, rope_theta, the prompt's
token ids, the logits over it and the greedy continuation.
"""

import json
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer


def read(folder: str, prompt: str, new_tokens: int) -> dict:
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits[0]
        greedy = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                pad_token_id=tok.pad_token_id)
    return {"transformers": transformers.__version__, "model_class": type(model).__name__,
            "tokenizer_class": type(tok).__name__, "rope_theta": getattr(model.config, "rope_theta", None),
            "model_max_length": tok.model_max_length, "ids": ids[0].tolist(), "logits": logits.tolist(),
            "greedy": greedy[0, ids.shape[1]:].tolist()}


if __name__ == "__main__":
    print(json.dumps([read(**job) for job in json.load(sys.stdin)]))
