"""Data pipeline: tokens/s into the packed files, and the data loader's share of a training step.

  1. `prepare_data` on the StoryLlama `quick` data (built-in corpus, byte-level BPE) into a fresh cache
     directory: end to end (corpus generation + BPE training + tokenize-and-pack) and
     tokenization alone (the trained tokenizer over the same documents, in the same batches);
  2. the data loader of one optimizer step (`window_starts` + `windows_to_batch`) against a training step
     of the StoryLlama `quick` model (forward, backward, grad clip, AdamW), timed interleaved.

    python bench/bench_data.py
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import interleaved_seconds, print_table, save_json  # noqa: E402

from smolhub_hub.data.packed import TOKENIZE_BATCH, prepare_data, window_starts, windows_to_batch  # noqa: E402
from smolhub_hub.data.sources import iter_documents  # noqa: E402
from smolhub_hub.training.engine import round_vocab  # noqa: E402
from smolhub_hub.training.optim import build_adamw  # noqa: E402
from StoryLlama.config import FAMILY  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="quick", help="StoryLlama preset whose data and model are used")
    p.add_argument("--loader-calls", type=int, default=50, help="loader calls per timed round")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default="")
    return p.parse_args(argv)


def bench_prepare(dcfg, cache: str):
    """Build the packed files in the fresh directory `cache`; returns (rows, the PackedData)."""
    cfg = dcfg.replace(cache_dir=cache)
    t = time.perf_counter()
    data = prepare_data(cfg)
    total = time.perf_counter() - t
    tokens = data.meta["train_tokens"] + data.meta["val_tokens"]
    docs = list(iter_documents(cfg))
    tok = data.tokenizer
    t = time.perf_counter()
    n = 0
    for i in range(0, len(docs), TOKENIZE_BATCH):
        ids = tok(docs[i:i + TOKENIZE_BATCH], add_special_tokens=False)["input_ids"]
        n += sum(len(x) + 1 for x in ids)
    tokenize = time.perf_counter() - t
    label = f"{dcfg.dataset} {dcfg.builtin_stories} docs, {dcfg.tokenizer} {data.meta['vocab_size']}"
    rows = [
        {"benchmark": f"prepare_data tok/s, end to end ({label}, {tokens:,} tokens, {total:.1f} s)",
         "smolhub": tokens / total},
        {"benchmark": f"tokenize tok/s, trained BPE, batches of {TOKENIZE_BATCH} ({n:,} tokens)",
         "smolhub": n / tokenize},
    ]
    return rows, data


def bench_loader_share(args, train, meta) -> list[dict]:
    """`train`: the memory-mapped packed tokens, read exactly as the trainer reads them."""
    mcfg, tcfg, _ = FAMILY.resolve(args.preset)
    mcfg = mcfg.replace(vocab_size=round_vocab(meta["vocab_size"]))
    seq = tcfg.seq_len or mcfg.max_seq_len
    b = tcfg.batch_size
    torch.manual_seed(0)
    model = FAMILY.model_class()(mcfg).to(args.device).train()
    opt = build_adamw(model, tcfg, args.device)  # the trainer's optimizer
    step_no = iter(itertools.count())

    def loader():
        for _ in range(args.loader_calls):
            starts = window_starts(len(train), seq, b, tcfg.seed, next(step_no))
            windows_to_batch(train, starts, seq, args.device)

    x, y = windows_to_batch(train, window_starts(len(train), seq, b, tcfg.seed, 0), seq, args.device)

    def step():
        opt.zero_grad(set_to_none=True)
        model(x, y).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        opt.step()

    t = interleaved_seconds({"loader": loader, "step": step}, args.device, args.repeats)
    load = t["loader"] / args.loader_calls
    share = load / (load + t["step"])
    shape = f"StoryLlama {args.preset}: B={b}, T={seq}, {model.param_counts()['total'] / 1e6:.2f}M params"
    return [
        {"benchmark": f"loader ms per step (window_starts + windows_to_batch; {shape})", "smolhub": load * 1e3},
        {"benchmark": f"training step ms (fwd + bwd + clip + AdamW; {shape})", "smolhub": t["step"] * 1e3},
        {"benchmark": "loader share of a training step (%)", "smolhub": 100 * share},
    ]


def main(argv=None):
    args = parse_args(argv)
    _, _, dcfg = FAMILY.resolve(args.preset)
    print(f"data pipeline: StoryLlama {args.preset} data ({dcfg.dataset}, {dcfg.tokenizer}), device {args.device}, "
          f"{torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory(prefix="smolhub-bench-data-") as cache:
        rows, data = bench_prepare(dcfg, cache)
        rows += bench_loader_share(args, data.train, data.meta)
        del data
    print_table(rows, ["benchmark", "smolhub"])
    if args.json:
        save_json(rows, args.json)
    return rows


if __name__ == "__main__":
    main()
