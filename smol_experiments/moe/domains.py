"""Domain-labelled documents for expert specialization: Nemotron (Hub) or three synthetic domains (offline).

Each domain is assigned one expert: the i-th domain of the tuple routes to expert i. Documents are split
into train / held-out *by document* before anything is tokenized, so held-out routing accuracy and loss
are measured on text the model never trained on.
"""

from __future__ import annotations

import random

from smolhub_hub.data.builtin import generate_stories
from smolhub_hub.errors import UserError

NEMOTRON_ID = "nvidia/Llama-Nemotron-Post-Training-Dataset"
NEMOTRON_DOMAINS = ("code", "math", "chat")
SYNTHETIC_DOMAINS = ("code", "math", "stories")

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


# --- the split used by specialization ---------------------------------------------------------------------

def domain_splits(source: str, train_docs: int, heldout_docs: int, seed: int) -> dict[str, tuple[list, list]]:
    """{domain: (train documents, held-out documents)} for `source` 'synthetic' or 'nemotron'."""
    if source == "synthetic":
        domains, fetch = SYNTHETIC_DOMAINS, synthetic_documents
    elif source == "nemotron":
        domains, fetch = NEMOTRON_DOMAINS, nemotron_documents
    else:
        raise UserError(f"--data must be 'synthetic' or 'nemotron', not '{source}'.")
    splits = {}
    for domain in domains:
        docs = fetch(domain, train_docs + heldout_docs, seed)
        splits[domain] = (docs[:train_docs], docs[train_docs:])  # by document: no text in both
    return splits
