"""The GEC set built from packaged English: prose extraction, every error kind, document splits, determinism.

A few small reStructuredText files stand in for the Python documentation sources of python3.11-doc.
"""

import json
import random
import subprocess
import sys

import pytest

from smol_experiments.alignment import real_gec
from smol_experiments.alignment.fixtures import INSTRUCTIONS
from smolhub_hub.errors import UserError

DOCUMENT = """\
.. _section-{n}:

*******************
Part {n} of a guide
*******************

Part {n} explains how the parser is called when a module has a new line of text.  It
returns the result to the caller, and the caller can use it at once.

.. note::

   Notes like this one are indented and never kept as sentences.

The :func:`parse` function in part {n} reads ``the input`` from a file into the buffer.
For example::

   >>> parse("x = 1")

* A list item in part {n} is not a paragraph of prose either.

These files are read by an old tool, but its output is kept in part {n} for the users.
"""


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("docs")
    for n in range(12):
        folder = root / ("library" if n % 2 else "tutorial")
        folder.mkdir(exist_ok=True)
        (folder / f"part{n}{real_gec.SUFFIX}").write_text(DOCUMENT.format(n=n))
    (root / "empty.rst.txt").write_text("Title\n=====\n\n.. toctree::\n\n   part1\n")
    return root


def test_only_plain_prose_sentences_are_kept():
    assert real_gec.sentences(DOCUMENT.format(n=3)) == [
        "Part 3 explains how the parser is called when a module has a new line of text.",
        "It returns the result to the caller, and the caller can use it at once.",
        "The parse function in part 3 reads the input from a file into the buffer.",
        "These files are read by an old tool, but its output is kept in part 3 for the users.",
    ]


@pytest.mark.parametrize("kind", list(real_gec.ERROR_KINDS))
def test_each_error_kind_fires_and_changes_the_sentence(kind):
    fired = 0
    for seed in range(5):
        for sentence in real_gec.sentences(DOCUMENT.format(n=1)):
            words = sentence.split()
            if real_gec.ERROR_KINDS[kind](words, random.Random(seed)):
                fired += 1
                assert " ".join(words) != sentence, (kind, sentence)
    assert fired >= 5


def test_an_error_kind_that_does_not_apply_leaves_the_sentence_alone():
    words = "Python runs programs quickly.".split()
    assert not real_gec.agreement(words, random.Random(0))
    assert not real_gec.article(words, random.Random(0))
    assert words == "Python runs programs quickly.".split()


def test_splits_are_disjoint_by_document_and_deterministic(source, tmp_path):
    summary = real_gec.build_gec_dataset(source, tmp_path / "a", seed=3, validation_share=0.25)
    rows = {split: [json.loads(line) for line in (tmp_path / "a" / f"{split}.jsonl").read_text().splitlines()]
            for split in ("train", "validation")}
    documents = {split: {r["document"] for r in split_rows} for split, split_rows in rows.items()}
    assert documents["train"] and documents["validation"] and not documents["train"] & documents["validation"]
    assert summary["documents"] == {"train": 9, "validation": 3}  # the file without prose is no document
    # each document has 3 sentences of its own and one they all share: it stays in validation only
    assert summary["rows"] == {"train": 27, "validation": 10}
    assert not {r["tgt"] for r in rows["train"]} & {r["tgt"] for r in rows["validation"]}
    for row in [*rows["train"], *rows["validation"]]:
        instruction, _, broken = row["src"].partition(": ")
        assert instruction in INSTRUCTIONS and broken != row["tgt"] and row["task"] == "gec"
    assert {kind for r in rows["train"] for kind in r["errors"]} == set(real_gec.ERROR_KINDS)

    real_gec.build_gec_dataset(source, tmp_path / "b", seed=3, validation_share=0.25)
    real_gec.build_gec_dataset(source, tmp_path / "c", seed=4, validation_share=0.25)
    for split in ("train", "validation"):
        first = (tmp_path / "a" / f"{split}.jsonl").read_text()
        assert (tmp_path / "b" / f"{split}.jsonl").read_text() == first
        assert (tmp_path / "c" / f"{split}.jsonl").read_text() != first


def test_a_source_without_documents_is_one_line(tmp_path):
    with pytest.raises(UserError, match="apt-get install python3.11-doc"):
        real_gec.documents(tmp_path)
    done = subprocess.run([sys.executable, "-m", "smol_experiments.alignment.real_gec", "--source", str(tmp_path),
                           "--output-dir", str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and done.stderr.startswith("error: --source")


def test_the_pipeline_flag_builds_the_set_in_its_output_folder(source, tmp_path, monkeypatch):
    from smol_experiments.alignment import run_pipeline
    from smol_experiments.alignment.fixtures import force_offline_hub

    force_offline_hub(monkeypatch)
    with pytest.raises(UserError, match="not both"):
        run_pipeline.run(["--packaged-gec", str(source), "--dataset", "x.jsonl", "--output-dir", str(tmp_path)])
    with pytest.raises(UserError, match="Hub id"):  # the default base cannot be fetched offline: SFT stops there
        run_pipeline.run(["--packaged-gec", str(source), "--output-dir", str(tmp_path)])
    rows = (tmp_path / "gec-data" / "validation.jsonl").read_text().splitlines()
    assert json.loads(rows[0])["task"] == "gec" and not (tmp_path / "sft").exists()
