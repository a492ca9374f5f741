"""The real domains from packages (`--data packaged`): split by source file, near-duplicates of training text
removed from held-out, the overlap printed (a local stand-in of the packaged corpora; nothing is fetched)."""

import json

import pytest

from smol_experiments.moe import domains
from smol_experiments.moe.domains import PACKAGED_DOMAINS, domain_splits, ngrams, overlap, source_file, split_by_file
from smol_experiments.moe.fixtures import save_packaged_stand_in
from smolhub_hub.errors import UserError


def test_source_file_of_each_corpus_kind():
    assert source_file({"source": "library/json.rst.txt § Basic usage: dump"}) == "library/json.rst.txt"
    assert source_file({"source": "json/decoder.py:JSONDecoder"}) == "json/decoder.py"
    assert source_file({"source": "jargon.txt.gz § cruft: /kruhft/, n."}) == "jargon.txt.gz"


def _records(files: int, per_file: int) -> list[dict]:
    return [{"text": f"document {f}.{d} " + " ".join(f"w{f}_{d}_{k}" for k in range(20)), "source": f"m{f}.py:f{d}"}
            for f in range(files) for d in range(per_file)]


def test_no_source_file_gives_both_training_and_heldout_documents(capsys):
    records = _records(files=40, per_file=5)
    train, heldout = split_by_file(records, train_docs=100, heldout_docs=10, seed=0, name="code")
    file_of = {r["text"]: source_file(r) for r in records}
    assert len(train) == 100 and len(heldout) == 10
    assert not {file_of[t] for t in train} & {file_of[t] for t in heldout}
    assert len({file_of[t] for t in heldout}) >= 5  # at most two held-out documents per file
    assert "held-out 8-gram overlap with training text: mean 0.0%" in capsys.readouterr().out
    assert (train, heldout) == split_by_file(records, 100, 10, 0, "code")  # deterministic given the seed
    assert heldout != split_by_file(records, 100, 10, 1, "code")[1]


def test_a_heldout_document_that_repeats_training_text_is_dropped(capsys):
    # every file also holds a copy of one licence header: some copies land in training, the held-out ones go
    header = "Licensed under the Python Software Foundation License Version 2 see the LICENSE file for details"
    records = [r for f in range(40) for r in ({"text": f"unique {f} " + " ".join(f"w{f}_{k}" for k in range(20)),
                                               "source": f"m{f}.py:f"},
                                              {"text": header, "source": f"m{f}.py:<module>"})]
    train, heldout = split_by_file(records, 40, 5, 0, "code")
    assert header in train and header not in heldout and len(heldout) == 5
    seen = set().union(*map(ngrams, train))
    assert overlap(header, seen) == 1.0 and all(overlap(doc, seen) <= domains.MAX_OVERLAP for doc in heldout)
    out = capsys.readouterr().out
    assert "(5 candidates above 20% dropped)" in out  # two candidates from each of 5 files: one is the header


def test_a_corpus_cut_from_one_file_is_split_by_entry():
    records = [{"text": f"entry {i} " + " ".join(f"w{i}_{k}" for k in range(12)), "source": f"jargon.txt.gz § e{i}"}
               for i in range(60)]
    train, heldout = split_by_file(records, 40, 8, 0, "prose")
    assert len(train) == 40 and len(heldout) == 8 and not set(train) & set(heldout)


def test_too_few_documents_is_one_clear_error():
    with pytest.raises(UserError, match="lower --train-docs / --heldout-docs"):
        split_by_file(_records(files=5, per_file=2), 50, 4, 0, "code")


def test_packaged_domains_read_the_corpora_from_the_data_folder(tmp_path, capsys):
    save_packaged_stand_in(tmp_path / "data")
    splits = domain_splits("packaged", train_docs=60, heldout_docs=10, seed=0, data_dir=tmp_path / "data")
    assert list(splits) == list(PACKAGED_DOMAINS) == ["code", "math", "prose"]
    corpus = {json.loads(line)["text"] for line in (tmp_path / "data/python-stdlib/python-stdlib.jsonl").open()}
    assert set(splits["code"][0]) <= corpus and all(len(h) == 10 for _, h in splits.values())
    out = capsys.readouterr().out
    assert "prose (jargon): 60 training / 10 held-out documents from different entries" in out
    assert "code (python-stdlib): 60 training / 10 held-out documents from different files" in out
