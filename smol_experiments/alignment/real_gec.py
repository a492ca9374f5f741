"""A grammatical-error-correction set from real English: sentences of a packaged text with injected errors.

CoEdIT cannot be downloaded offline, so this builds CoEdIT-style `gec` rows from prose a package ships: by
default the reStructuredText sources of the Python documentation in Debian's `python3.11-doc` (PSF-2.0 licence;
`apt-get install python3.11-doc`, or `apt-get download python3.11-doc && dpkg -x python3.11-doc_*.deb DIR`).
One source file is one document. Only plain sentences are kept (6 to 20 words, starting with a capital, ending
with a period, no markup, code or inner periods left after the roles are reduced to their text).

Each sentence gets one error (three in ten get a second of another kind) of the kinds CoEdIT's gec task fixes:
subject-verb agreement, articles, prepositions, verb forms, spelling, punctuation and word order. `src` is a
CoEdIT instruction plus the broken sentence ("Fix grammatical errors in this sentence: ..."), `tgt` the
original. Documents, not sentences, are split between train and validation, so no document is in both; a
sentence that also occurs in a validation document is dropped from train. Everything follows from --seed.

    python -m smol_experiments.alignment.real_gec --source DIR --output-dir runs/gec-data
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from smol_experiments.alignment.fixtures import INSTRUCTIONS
from smol_experiments.flags import Parser, non_negative_int, path, positive_float
from smol_experiments.stages import stage_main, write_atomic
from smolhub_hub.errors import UserError

PACKAGE = "python3.11-doc"
LICENSE = "PSF-2.0"
DEFAULT_SOURCE = "/usr/share/doc/python3.11/html/_sources"
SUFFIX = ".rst.txt"
MIN_WORDS, MAX_WORDS = 6, 20
SECOND_ERROR_SHARE = 0.3

# --- sentences from reStructuredText ------------------------------------------------------------------------

ROLE = re.compile(r":[\w:.-]+:`!?~?([^`<]*?)\s*(?:<[^`>]*>)?`")  # :func:`text <target>` -> text
LITERAL = re.compile(r"``([^`]*)``|\*\*?([^*]+)\*\*?|`([^`<]*?)\s*(?:<[^`>]*>)?`_{0,2}")
ADORNMENT = re.compile(r"^([=\-~^\"'`#*+:.])\1{2,}\s*$")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
PLAIN = re.compile(r"[A-Z][A-Za-z0-9 ,;'-]*[A-Za-z0-9]\.")


def paragraphs(text: str) -> Iterator[str]:
    """Prose paragraphs: blocks of unindented lines that start with a letter (no directive, list, title or code)."""
    block: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.strip():
            block.append(line)
            continue
        if block and all(b[0].isalpha() for b in block) and not any(ADORNMENT.match(b) for b in block):
            yield " ".join(b.strip() for b in block)
        block = []


def sentences(text: str) -> list[str]:
    """The plain prose sentences of one reStructuredText document, in order."""
    out = []
    for paragraph in paragraphs(text):
        prose = LITERAL.sub(lambda m: next(g for g in m.groups() if g is not None), ROLE.sub(r"\1", paragraph))
        for sentence in SENTENCE_END.split(re.sub(r"\s+", " ", prose)):
            if PLAIN.fullmatch(sentence) and MIN_WORDS <= len(sentence.split()) <= MAX_WORDS:
                out.append(sentence)
    return out


def documents(root: str | Path) -> dict[str, list[str]]:
    """{path relative to root: its sentences} for every source file that has any, in path order."""
    root = Path(root)
    files = sorted(root.rglob(f"*{SUFFIX}"))
    if not files:
        raise UserError(f"--source {root}: no {SUFFIX} files; install {PACKAGE} (apt-get install {PACKAGE}) or "
                        f"pass the _sources folder of an extracted copy (apt-get download {PACKAGE} && dpkg -x ...).")
    docs = {str(f.relative_to(root)): sentences(f.read_text(encoding="utf-8", errors="replace")) for f in files}
    return {name: found for name, found in docs.items() if found}


# --- error injection: each function changes `words` in place and says whether it could ----------------------

AGREEMENT = {"is": "are", "are": "is", "was": "were", "were": "was", "has": "have", "have": "has",
             "does": "do", "do": "does", "doesn't": "don't", "don't": "doesn't"}
NOT_AFTER = {"to", "can", "could", "will", "would", "shall", "should", "may", "might", "must", "not"}
PREPOSITIONS = ("in", "on", "at", "of", "for", "to", "with", "from", "by", "into", "about")
BE_FORMS = {"is", "are", "was", "were", "be", "been", "being"}
MODALS = {"can", "could", "will", "would", "should", "may", "might", "must", "to"}
Words = list[str]


def _split(word: str) -> tuple[str, str]:
    """('word', ',') for 'word,': the letters and the punctuation that follows them."""
    core = word.rstrip(",;.")
    return core, word[len(core):]


def _spots(words: Words, test: Callable[[int, str], bool]) -> list[int]:
    return [i for i, w in enumerate(words) if test(i, _split(w)[0])]


def _replace(words: Words, i: int, core: str) -> None:
    words[i] = core + _split(words[i])[1]


def agreement(words: Words, rng: random.Random) -> bool:
    spots = _spots(words, lambda i, w: w.lower() in AGREEMENT and (i == 0 or words[i - 1].lower() not in NOT_AFTER))
    if not spots:
        return False
    i = rng.choice(spots)
    core = _split(words[i])[0]
    swapped = AGREEMENT[core.lower()]
    _replace(words, i, swapped.capitalize() if core[0].isupper() else swapped)
    return True


def article(words: Words, rng: random.Random) -> bool:
    spots = _spots(words, lambda i, w: w in ("a", "an", "the") and 0 < i < len(words) - 1)
    if not spots:
        return False
    i = rng.choice(spots)
    if words[i] == "the" or rng.random() < 0.5:
        del words[i]
    else:
        words[i] = {"a": "an", "an": "a"}[words[i]]
    return True


def preposition(words: Words, rng: random.Random) -> bool:
    spots = _spots(words, lambda i, w: w in PREPOSITIONS and i > 0)
    if not spots:
        return False
    i = rng.choice(spots)
    _replace(words, i, rng.choice([p for p in PREPOSITIONS if p != _split(words[i])[0]]))
    return True


def _ing(verb: str) -> str:
    return (verb[:-1] if verb.endswith("e") and not verb.endswith("ee") else verb) + "ing"


def verb_form(words: Words, rng: random.Random) -> bool:
    """A participle after a form of 'be' loses its ending ('is called' -> 'is call'), or a base verb after a
    modal or 'to' takes one ('can use' -> 'can using')."""
    def participle(i, w):
        return i > 0 and words[i - 1].lower() in BE_FORMS and w.endswith("ed") and len(w) > 5

    def base(i, w):
        return i > 0 and words[i - 1].lower() in MODALS and w.isalpha() and w.islower() and len(w) > 2 \
            and not w.endswith(("ing", "ed", "s"))

    spots = _spots(words, lambda i, w: participle(i, w) or base(i, w))
    if not spots:
        return False
    i = rng.choice(spots)
    core = _split(words[i])[0]
    _replace(words, i, _stem(core) if core.endswith("ed") else rng.choice([_ing(core), core + "s"]))
    return True


def _stem(participle: str) -> str:
    """'executed' -> 'execute', 'called' -> 'call': the base form a learner writes, from a regular participle."""
    keeps_e = participle.endswith(("ated", "uted", "ized", "ised", "osed", "used", "ired", "ured", "ived", "uced"))
    return participle[:-1] if keeps_e else participle[:-2]


def spelling(words: Words, rng: random.Random) -> bool:
    """A typo in a lower-case word: two letters swapped, one dropped or one doubled."""
    spots = _spots(words, lambda i, w: w.isalpha() and w.islower() and len(w) >= 5)
    if not spots:
        return False
    i = rng.choice(spots)
    w = _split(words[i])[0]
    j = rng.randrange(1, len(w) - 2)
    typo = rng.choice([w[:j] + w[j + 1] + w[j] + w[j + 2:], w[:j] + w[j + 1:], w[:j] + w[j] + w[j:]])
    _replace(words, i, typo)
    return typo != w


def punctuation(words: Words, rng: random.Random) -> bool:
    """A comma dropped (or one added where none belongs), or its/it's confused."""
    apostrophes = _spots(words, lambda i, w: w.lower() in ("its", "it's"))
    commas = [i for i, w in enumerate(words[:-1]) if w.endswith(",")]
    if apostrophes and rng.random() < 0.5:
        i = rng.choice(apostrophes)
        core = _split(words[i])[0]
        _replace(words, i, core.replace("'", "") if "'" in core else core[:2] + "'" + core[2:])
    elif commas:
        i = rng.choice(commas)
        words[i] = words[i][:-1]
    else:
        plain = [i for i, w in enumerate(words[1:-2], 1) if w.isalpha()]
        if not plain:
            return False
        words[rng.choice(plain)] += ","
    return True


def word_order(words: Words, rng: random.Random) -> bool:
    """Two neighbouring words swapped (neither the first word nor one that carries punctuation)."""
    spots = [i for i in range(1, len(words) - 2)
             if words[i].isalpha() and words[i + 1].isalpha() and words[i].lower() != words[i + 1].lower()]
    if not spots:
        return False
    i = rng.choice(spots)
    words[i], words[i + 1] = words[i + 1], words[i]
    return True


ERROR_KINDS: dict[str, Callable[[Words, random.Random], bool]] = {
    "agreement": agreement, "article": article, "preposition": preposition, "verb_form": verb_form,
    "spelling": spelling, "punctuation": punctuation, "word_order": word_order}


def inject_errors(sentence: str, rng: random.Random) -> tuple[str, list[str]]:
    """(the sentence with one or two errors, their kinds); kinds that do not apply are skipped."""
    wanted = 2 if rng.random() < SECOND_ERROR_SHARE else 1
    words, kinds = sentence.split(), []
    for kind in rng.sample(list(ERROR_KINDS), len(ERROR_KINDS)):
        before = list(words)
        if ERROR_KINDS[kind](words, rng) and words != before:
            kinds.append(kind)
            if len(kinds) == wanted:
                break
        else:
            words[:] = before
    return " ".join(words), kinds


# --- the data set --------------------------------------------------------------------------------------------

def split_documents(docs: dict[str, list[str]], validation_share: float, seed: int) -> dict[str, list[str]]:
    """{"train": names, "validation": names}: documents in a seeded order go to validation until it holds
    `validation_share` of all sentences."""
    names = sorted(docs)
    random.Random(seed).shuffle(names)
    target, held = validation_share * sum(len(s) for s in docs.values()), 0
    validation = []
    for name in names:
        if held >= target:
            break
        validation.append(name)
        held += len(docs[name])
    return {"train": [n for n in names if n not in validation], "validation": validation}


def gec_rows(docs: dict[str, list[str]], names: list[str], rng: random.Random, exclude=frozenset()) -> list[dict]:
    """CoEdIT-style rows of the documents' distinct sentences (those in `exclude` left out), shuffled."""
    pairs = {s: name for name in names for s in docs[name] if s not in exclude}
    order = list(pairs)
    rng.shuffle(order)
    rows = []
    for sentence in order:
        broken, kinds = inject_errors(sentence, rng)
        if kinds:
            rows.append({"task": "gec", "src": f"{rng.choice(INSTRUCTIONS)}: {broken}", "tgt": sentence,
                         "errors": kinds, "document": pairs[sentence]})
    return rows


def build_gec_dataset(source: str | Path, out: str | Path, *, seed: int = 0, validation_share: float = 0.1) -> dict:
    """Write train.jsonl, validation.jsonl and source.json to `out`; return the summary in source.json."""
    docs = documents(source)
    splits = split_documents(docs, validation_share, seed)
    rng = random.Random(seed)
    validation = gec_rows(docs, splits["validation"], rng)
    train = gec_rows(docs, splits["train"], rng, exclude=frozenset(r["tgt"] for r in validation))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("validation", validation)):
        write_atomic(out / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    summary = {"package": PACKAGE, "license": LICENSE, "source": str(source), "document": f"one {SUFFIX} file",
               "seed": seed, "validation_share": validation_share, "error_kinds": list(ERROR_KINDS),
               "documents": {k: len(v) for k, v in splits.items()}, "rows": {"train": len(train),
                                                                            "validation": len(validation)}}
    write_atomic(out / "source.json", json.dumps(summary, indent=2) + "\n")
    return summary


def build_parser():
    p = Parser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--source", default=DEFAULT_SOURCE, type=path,
                   help=f"folder of {SUFFIX} files (the _sources folder of {PACKAGE})")
    p.add_argument("--output-dir", required=True, type=path, help="folder for train.jsonl and validation.jsonl")
    p.add_argument("--seed", type=non_negative_int, default=0, help="document split, sentence order and errors")
    p.add_argument("--validation-share", type=positive_float, default=0.1,
                   help="share of the sentences whose documents go to validation")
    return p


@stage_main
def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.validation_share >= 1:
        raise UserError(f"--validation-share {args.validation_share}: give a share below 1.")
    summary = build_gec_dataset(args.source, args.output_dir, seed=args.seed, validation_share=args.validation_share)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
