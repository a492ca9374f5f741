"""Domain-labelled documents for expert specialization: Nemotron (Hub), three real domains from packages, or
three synthetic domains (offline).

Each domain is assigned one expert: the i-th domain of the tuple routes to expert i. Documents are split
into train / held-out *by document* before anything is tokenized, so held-out routing accuracy and loss
are measured on text the model never trained on. The packaged domains are split by source file (the
definitions of one module, the sections of one page stay together), and a held-out document that repeats
training text (a share of its word n-grams seen in training) is dropped, with the overlap printed.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from smolhub_hub.data.builtin import generate_stories
from smolhub_hub.errors import UserError

NEMOTRON_ID = "nvidia/Llama-Nemotron-Post-Training-Dataset"
NEMOTRON_DOMAINS = ("code", "math", "chat")
SYNTHETIC_DOMAINS = ("code", "math", "stories")
# domain -> the packaged corpus it reads (smolhub_hub.data.packaged: name, package and license in its SOURCE.md)
PACKAGED_DOMAINS = {"code": "python-stdlib", "math": "sympy-docs", "prose": "jargon"}
NGRAM = 8              # word n-grams compared between held-out and training text
MAX_OVERLAP = 0.2      # a held-out document with a larger share of its n-grams in training text is dropped

# --- synthetic domains: small grammars, deterministic given the seed -----------------------------------

_NAMES = ["total", "count", "items", "values", "result", "index", "limit", "data", "score", "node", "key",
          "size", "buffer", "name", "offset", "weights"]
_FUNCS = ["compute", "update", "merge", "parse", "filter", "scale", "load", "find", "build", "check"]
_NOUNS = ["list", "table", "batch", "tree", "queue", "record", "matrix", "cache"]


def _code_document(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(1, 3)):
        a, b = rng.sample(_NAMES, 2)
        fn = f"{rng.choice(_FUNCS)}_{rng.choice(_NOUNS)}"
        lines.append(f"def {fn}({a}, {b}):")
        lines.append(f"    {rng.choice(_NAMES)} = {rng.randint(0, 9)}")
        lines.append(f"    for i in range(len({a})):")
        op = rng.choice(["+=", "-=", "*="])
        lines.append(f"        if {a}[i] {rng.choice(['>', '<', '=='])} {b}:")
        lines.append(f"            {b} {op} {a}[i] * {rng.randint(1, 9)}")
        lines.append(f"    return {rng.choice([a, b])}")
        lines.append("")
    return "\n".join(lines)


def _math_document(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(2, 5)):
        x, y = rng.randint(2, 99), rng.randint(2, 99)
        op = rng.choice(["+", "-", "*"])
        value = {"+": x + y, "-": x - y, "*": x * y}[op]
        if rng.random() < 0.5:
            lines.append(f"Question: What is {x} {op} {y}?\nAnswer: {x} {op} {y} = {value}.")
        else:
            k = rng.randint(2, 9)
            kx = k * x
            value = {"+": kx + y, "-": kx - y, "*": kx * y}[op]
            lines.append(f"Let x = {x}. Then {k} * x {op} {y} = {kx} {op} {y} = {value}.")
    return "\n".join(lines)


def synthetic_documents(domain: str, num_documents: int, seed: int) -> list[str]:
    """`num_documents` documents of a synthetic domain (code-like text, arithmetic, or stories)."""
    if domain == "stories":
        return generate_stories(num_documents, seed=seed)
    make = {"code": _code_document, "math": _math_document}.get(domain)
    if make is None:
        raise UserError(f"unknown synthetic domain '{domain}'; choose from {', '.join(SYNTHETIC_DOMAINS)}.")
    rng = random.Random(f"{domain}-{seed}")
    return [make(rng) for _ in range(num_documents)]


# --- Nemotron (Hub, streamed) ----------------------------------------------------------------------------

def _nemotron_text(row: dict) -> str:
    """One SFT row as plain text: the prompt (a string or a list of chat messages) then the answer."""
    prompt = row.get("input", "")
    if isinstance(prompt, list):
        prompt = "\n".join(str(m.get("content", "")) for m in prompt)
    return f"{prompt}\n{row.get('output', '')}".strip()


def nemotron_documents(domain: str, num_documents: int, seed: int, shuffle_buffer: int = 10_000) -> list[str]:
    """Stream `num_documents` rows of one Nemotron SFT split, shuffled with a seeded buffer."""
    from datasets import load_dataset

    if domain not in NEMOTRON_DOMAINS:
        raise UserError(f"unknown Nemotron domain '{domain}'; choose from {', '.join(NEMOTRON_DOMAINS)}.")
    try:
        stream = load_dataset(NEMOTRON_ID, "SFT", split=domain, streaming=True)
        stream = stream.shuffle(seed=seed, buffer_size=shuffle_buffer)
        docs = [t for t in map(_nemotron_text, stream.take(num_documents * 2)) if t][:num_documents]
    except (OSError, ConnectionError, ValueError) as e:
        raise UserError(f"could not stream {NEMOTRON_ID} split '{domain}' ({e}). Check the network or use "
                        "--data synthetic for the offline domains.") from None
    if len(docs) < num_documents:
        raise UserError(f"{NEMOTRON_ID} split '{domain}' gave {len(docs)} documents, fewer than {num_documents}.")
    return docs


# --- real text shipped in packages (offline) ---------------------------------------------------------------

def packaged_records(corpus: str, data_dir: Path) -> list[dict]:
    """The {"text", "source"} records of a packaged corpus: data_dir/NAME/NAME.jsonl, made first if missing
    (`python -m smolhub_hub.data.packaged NAME data_dir/NAME`, which fetches the Debian package if needed)."""
    from smolhub_hub.data import packaged

    with open(packaged.ensure(corpus, data_dir), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def source_file(record: dict) -> str:
    """The file a packaged document was cut from: 'library/json.rst.txt § Basic usage' -> 'library/json.rst.txt',
    'json/decoder.py:JSONDecoder' -> 'json/decoder.py'."""
    return re.split(r" § |:(?=[^/]*$)", record["source"], maxsplit=1)[0]


def ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    words = text.split()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def overlap(text: str, seen: set) -> float:
    """Share of the document's word n-grams that occur in `seen` (0 for a document shorter than n words)."""
    grams = ngrams(text)
    return sum(g in seen for g in grams) / len(grams) if grams else 0.0


def split_by_file(records: list[dict], train_docs: int, heldout_docs: int, seed: int, name: str
                  ) -> tuple[list[str], list[str]]:
    """Training and held-out documents from different source files (from different documents when the corpus
    is one file); held-out ones that repeat training text (more than MAX_OVERLAP of their word n-grams) are
    dropped, and the overlap is printed."""
    files: dict[str, list[str]] = {}
    whole_files = len({source_file(r) for r in records}) > 1  # a corpus cut from one file is split by document
    for r in records:
        files.setdefault(source_file(r) if whole_files else r["source"], []).append(r["text"])
    order = sorted(files)
    rng = random.Random(f"{name}-{seed}")
    rng.shuffle(order)
    heldout, train = [], []
    for f in order:  # held-out candidates (twice enough: some may be dropped), at most two per file, then train
        if len(heldout) < 2 * heldout_docs:
            heldout.extend(rng.sample(files[f], min(2, len(files[f]))))  # the file's other documents go unused
        else:
            train.extend(files[f])
    rng.shuffle(train)
    train = train[:train_docs]
    seen = set().union(*map(ngrams, train)) if train else set()
    scored = [(overlap(doc, seen), doc) for doc in heldout]
    kept = [(o, doc) for o, doc in scored if o <= MAX_OVERLAP][:heldout_docs]
    dropped = sum(o > MAX_OVERLAP for o, _ in scored)
    if len(train) < train_docs or len(kept) < heldout_docs:
        raise UserError(f"{name}: {len(records)} documents give {len(train)} training and {len(kept)} held-out ones "
                        f"(after dropping near-duplicates); lower --train-docs / --heldout-docs.")
    share = [o for o, _ in kept]
    print(f"{name}: {len(train)} training / {len(kept)} held-out documents from different "
          f"{'files' if whole_files else 'entries'}; held-out "
          f"{NGRAM}-gram overlap with training text: mean {sum(share) / len(share):.1%}, max {max(share):.1%} "
          f"({dropped} candidates above {MAX_OVERLAP:.0%} dropped)", flush=True)
    return train, [doc for _, doc in kept]


def packaged_splits(train_docs: int, heldout_docs: int, seed: int, data_dir: Path) -> dict[str, tuple[list, list]]:
    return {domain: split_by_file(packaged_records(corpus, data_dir), train_docs, heldout_docs, seed,
                                  f"{domain} ({corpus})")
            for domain, corpus in PACKAGED_DOMAINS.items()}


# --- the split used by specialization ---------------------------------------------------------------------

def domain_splits(source: str, train_docs: int, heldout_docs: int, seed: int,
                  data_dir: str | Path = "data") -> dict[str, tuple[list, list]]:
    """{domain: (train documents, held-out documents)} for `source` 'synthetic', 'packaged' or 'nemotron'."""
    if source == "packaged":
        return packaged_splits(train_docs, heldout_docs, seed, Path(data_dir).expanduser())
    if source == "synthetic":
        domains, fetch = SYNTHETIC_DOMAINS, synthetic_documents
    elif source == "nemotron":
        domains, fetch = NEMOTRON_DOMAINS, nemotron_documents
    else:
        raise UserError(f"--data must be 'synthetic', 'packaged' or 'nemotron', not '{source}'.")
    splits = {}
    for domain in domains:
        docs = fetch(domain, train_docs + heldout_docs, seed)
        splits[domain] = (docs[:train_docs], docs[train_docs:])  # by document: no text in both
    return splits
