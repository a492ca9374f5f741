"""Real text from packages as datasets: reST sections and Python definitions become documents (a small local
stand-in of each package's files; nothing is downloaded)."""

from __future__ import annotations

import gzip
import json

from smolhub_hub.data.builtin import generate_stories
from smolhub_hub.data.packaged import CORPORA, MIN_SECTION_CHARS, code_documents, main
from tests.helpers import run_cli, tiny_run_args

PAGE = """.. _json-module:

:mod:`json` --- JSON encoder and decoder
=======================================

.. module:: json
   :synopsis: Encode and decode the JSON format.

.. index:: single: JSON

{story}

Use :func:`~json.dumps` to write ``obj`` as text, as :rfc:`7159` says::

    >>> import json
    >>> json.dumps([1, 2])
    '[1, 2]'

.. note::

   {story}

Basic usage
-----------

.. function:: dump(obj, fp)

   {story}

Tiny
----

Too short to stand alone.

Decoders
--------

{story}
"""


def _stand_in(root, pages: int):
    """A python3.11-doc tree: `pages` reST pages and the Debian changelog that names the version."""
    corpus = CORPORA["python-docs"]
    folder = root / corpus.folder / "library"
    folder.mkdir(parents=True)
    stories = generate_stories(4 * pages)
    for i in range(pages):
        (folder / f"page{i:02d}.rst.txt").write_text(PAGE.format(story=" ".join(stories[4 * i:4 * i + 3])))
    changelog = root / "usr/share/doc/python3.11-doc/changelog.Debian.gz"
    changelog.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(changelog, "wt") as f:
        f.write("python3.11 (3.11.2-6+deb12u9) bookworm; urgency=medium\n")


def test_rest_pages_become_plain_text_documents_with_their_source_card(tmp_path, capsys):
    _stand_in(tmp_path / "root", 2)
    main(["python-docs", str(tmp_path / "out"), "--root", str(tmp_path / "root")])
    records = [json.loads(line) for line in (tmp_path / "out/python-docs.jsonl").read_text().splitlines()]
    assert [r["source"] for r in records[:3]] == ["library/page00.rst.txt § json --- JSON encoder and decoder",
                                                  "library/page00.rst.txt § Basic usage",
                                                  "library/page00.rst.txt § Tiny"]
    first, basic, tiny = (r["text"] for r in records[:3])
    assert "Use dumps to write `obj` as text, as RFC 7159 says:\n\n    >>> import json" in first
    assert "Note:" in first and ".. " not in first and ":func:" not in first and "single: JSON" not in first
    assert basic.startswith("Basic usage\n\ndump(obj, fp)\n")
    assert tiny.startswith("Tiny\n\nToo short to stand alone.\n\nDecoders\n\n")  # joined to the next section
    assert all(len(r["text"]) >= MIN_SECTION_CHARS for r in records)
    card = (tmp_path / "out/SOURCE.md").read_text()
    assert "`python3.11-doc`, version 3.11.2-6+deb12u9" in card and "PSF-2.0" in card and "Documents: 6" in card


def test_python_source_is_cut_at_top_level_definitions():
    source = '"""Doc."""\nimport os\n\n\n@cache\ndef f():\n    return 1\n\n\nclass C:\n    x = 1\n\nLIMIT = 3\n'
    docs = dict(code_documents(source, "m.py"))
    assert list(docs) == ["m.py:f", "m.py:C", "m.py:<module>"]
    assert docs["m.py:f"] == "# m.py\n@cache\ndef f():\n    return 1"
    assert docs["m.py:<module>"] == '# m.py\n"""Doc."""\nimport os\n\nLIMIT = 3'


def test_a_packaged_corpus_trains_as_a_dataset(tmp_path):
    _stand_in(tmp_path / "root", 30)
    main(["python-docs", str(tmp_path / "data"), "--root", str(tmp_path / "root")])
    run_cli("StoryLlama/trainer.py", *tiny_run_args(tmp_path / "run", steps=2, extra=[
        "--dataset", tmp_path / "data/python-docs.jsonl", "--val-fraction", "0.1", "--seq-len", "32"]), check=True)
    assert (tmp_path / "run/LATEST").exists()


JARGON = """                              The Jargon File

Table of Contents

   cruft

   kludge

   :cruft: /kruhft/, n.

   [very common] 1. An unpleasant substance.
   See also {crufty}.

   :crufty: adj.

   Poorly built. {story}

   :kludge: /kluhj/

   {story} Compare {hack}.

                          Part\u00a0III.\u00a0Appendices

Appendix\u00a0A.\u00a0Hacker Folklore

   :not an entry: {story}
"""


def test_jargon_entries_become_documents_and_the_appendices_are_left_out(tmp_path):
    corpus = CORPORA["jargon"]
    story = " ".join(generate_stories(3))
    folder = tmp_path / "root" / corpus.folder
    folder.mkdir(parents=True)
    with gzip.open(folder / "jargon.txt.gz", "wt", encoding="utf-8") as f:
        f.write(JARGON.replace("{story}", story))
    main(["jargon", str(tmp_path / "out"), "--root", str(tmp_path / "root")])
    records = [json.loads(line) for line in (tmp_path / "out/jargon.jsonl").read_text().splitlines()]
    assert [r["source"] for r in records] == ["jargon.txt.gz § cruft: /kruhft/, n.", "jargon.txt.gz § kludge: /kluhj/"]
    first, second = (r["text"] for r in records)  # the table of contents before the first entry is left out
    assert first.startswith("cruft: /kruhft/, n.\n\n[very common] 1. An unpleasant")
    assert "See also crufty.\n\ncrufty: adj.\n\nPoorly built. " in first  # a short entry joined, braces gone
    assert second.endswith("Compare hack.") and "not an entry" not in second and "Appendix" not in second
    assert "public domain" in (tmp_path / "out/SOURCE.md").read_text()
