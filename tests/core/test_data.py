"""Data: the built-in corpus, local files, Hub ids offline, packed caches split by document."""

import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from smolhub_hub.config import DataConfig
from smolhub_hub.data.builtin import generate_stories
from smolhub_hub.data.packed import cache_key, prepare_data, window_starts
from smolhub_hub.data.sources import iter_documents
from smolhub_hub.errors import UserError


def test_builtin_corpus_is_deterministic_and_varied():
    a, b = generate_stories(500, seed=3), generate_stories(500, seed=3)
    assert a == b and a != generate_stories(500, seed=4)
    sentences = {s for story in generate_stories(3000) for s in story.split(". ")}
    assert len(sentences) > 5000
    assert all(story.count('"') % 2 == 0 for story in a)  # dialogue quotes are closed


def test_local_txt_jsonl_parquet_and_folder(tmp_path):
    (tmp_path / "a.txt").write_text("First story.\n\nSecond story.")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "Third."}) + "\n" + json.dumps({"text": "Fourth."}) + "\n")
    pq.write_table(pa.table({"text": ["Fifth.", "Sixth."]}), tmp_path / "c.parquet")
    docs = list(iter_documents(DataConfig(dataset=str(tmp_path))))
    assert docs == ["First story.", "Second story.", "Third.", "Fourth.", "Fifth.", "Sixth."]
    assert list(iter_documents(DataConfig(dataset=str(tmp_path / "b.jsonl"), max_documents=1))) == ["Third."]


@pytest.mark.parametrize("make, match", [
    (lambda p: None, "does not exist"),
    (lambda p: p.write_bytes(b""), "no text"),
    (lambda p: p.write_bytes("caf\xe9".encode("latin1") * 10), "not UTF-8"),
    (lambda p: p.write_bytes(b"\x00\x01\x02" * 100), "binary"),
])
def test_bad_local_files_are_clear_errors(tmp_path, make, match):
    path = tmp_path / "data.txt"
    make(path)
    with pytest.raises(UserError, match=match):
        list(iter_documents(DataConfig(dataset=str(path))))


def test_jsonl_without_the_text_field(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"story": "x"}) + "\n")
    with pytest.raises(UserError, match="--text-field"):
        list(iter_documents(DataConfig(dataset=str(path))))


def test_hub_id_offline_fails_fast_naming_the_offline_options():
    t = time.time()
    with pytest.raises(UserError, match="--dataset builtin"):
        list(iter_documents(DataConfig(dataset="roneneldan/TinyStories")))
    assert time.time() - t < 30


def test_packed_cache_is_reused_and_split_by_document(tmp_path):
    cfg = DataConfig(dataset="builtin", builtin_stories=400, vocab_size=400, val_fraction=0.1,
                     cache_dir=str(tmp_path))
    d = prepare_data(cfg)
    eos = d.meta["eos_id"]
    assert d.meta["val_documents"] == 40 and d.meta["train_documents"] == 360
    # documents end with EOS, no padding: one EOS per document in each split
    assert int((np.asarray(d.train) == eos).sum()) == 360 and int((np.asarray(d.val) == eos).sum()) == 40
    stories = generate_stories(400)
    val_text = d.tokenizer.decode(np.asarray(d.val[:200]).tolist())
    assert stories[9][:40] in val_text  # every 10th document is held out
    mtime = (d.path / "train.bin").stat().st_mtime_ns
    again = prepare_data(cfg)
    assert (again.path / "train.bin").stat().st_mtime_ns == mtime
    assert cache_key(cfg) != cache_key(cfg.replace(vocab_size=500))


def test_windows_are_a_function_of_seed_and_step():
    a = window_starts(10_000, 64, 8, seed=1, step=5)
    assert np.array_equal(a, window_starts(10_000, 64, 8, seed=1, step=5))
    assert not np.array_equal(a, window_starts(10_000, 64, 8, seed=1, step=6))
    with pytest.raises(UserError):
        window_starts(50, 64, 8, seed=1, step=0)
