"""Data for continued pretraining: local sources, a split by whole documents, packing without padding."""

import json

import pytest

from smol_experiments.moe.data import load_texts, pack, split_by_document
from smol_experiments.moe.domains import domain_splits
from smol_experiments.moe.fixtures import tiny_tokenizer
from smolhub_hub.config import DataConfig
from smolhub_hub.data.sources import iter_documents
from smolhub_hub.errors import UserError


def test_local_files_split_by_document_and_pack(tmp_path):
    docs = [f"document number {i}: " + " ".join(["word"] * (i % 7 + 3)) for i in range(40)]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps({"text": d}) for d in docs[:30]))
    for i, d in enumerate(docs[30:]):
        (tmp_path / f"doc{i}.txt").write_text(d)
    texts = load_texts(str(tmp_path))
    assert sorted(texts) == sorted(docs)
    train, val = split_by_document(texts, 0.2, seed=0)
    assert len(val) == 8 and not set(train) & set(val) and sorted(train + val) == sorted(docs)
    assert split_by_document(texts, 0.2, seed=0) == (train, val)  # seeded
    tok = tiny_tokenizer(docs_per_domain=20)
    windows = pack(train, tok, seq_len=16)
    n_tokens = sum(len(tok(t, add_special_tokens=False).input_ids) + 1 for t in train)
    assert windows.shape == (n_tokens // 16, 16)
    assert int((windows == tok.eos_token_id).sum()) >= len(train) - 2  # documents joined by EOS
    assert int((windows == tok.pad_token_id).sum()) == 0  # packed: no padding


def test_domain_splits_are_disjoint_and_errors_are_clear(tmp_path):
    splits = domain_splits("synthetic", 30, 10, seed=1)
    assert list(splits) == ["code", "math", "stories"]
    for train, held in splits.values():
        assert len(train) == 30 and len(held) == 10 and not set(train) & set(held)
    with pytest.raises(UserError, match="no such file"):
        load_texts(str(tmp_path / "missing.jsonl"))
    with pytest.raises(UserError, match="nemotron"):
        domain_splits("wikipedia", 1, 1, 0)


def test_local_data_mistakes_are_one_line_and_hidden_files_are_skipped(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "kept"}\n{"text": null}\n{"text": 7}\n')
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / ".ipynb_checkpoints" / "a.jsonl").write_text('{"text": "an editor copy"}\n')
    assert load_texts(str(tmp_path)) == ["kept"]  # null and numbers are not text
    with pytest.raises(UserError, match="no field 'content'; set --text-column"):
        load_texts(str(tmp_path), "content")
    (tmp_path / "a.jsonl").write_text('{"text": "cut off\n')
    with pytest.raises(UserError, match="a.jsonl:1 is not valid JSON"):
        load_texts(str(tmp_path))


def test_local_data_is_read_by_the_trainers_rules(tmp_path):
    """The stages read a folder as `--dataset FOLDER` of the trainers does: a BOM and CRLF line ends dropped,
    .txt files split into documents at blank lines, .json read as JSON lines, hidden files and non-text skipped."""
    (tmp_path / "notes.txt").write_bytes("\ufeffFirst story.\r\nIt rained.\r\n\r\nSecond story.\r\n".encode())
    (tmp_path / "rows.json").write_text('{"text": "from json"}\n{"text": null}\n')
    (tmp_path / ".hidden.jsonl").write_text('{"text": "an editor copy"}\n')
    texts = load_texts(str(tmp_path))
    assert texts == ["First story.\nIt rained.", "Second story.", "from json"]
    assert texts == list(iter_documents(DataConfig(dataset=str(tmp_path))))

