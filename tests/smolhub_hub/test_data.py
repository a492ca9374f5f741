"""Data: the built-in corpus, local files, Hub ids offline, packed caches split by document."""

import codecs
import json
import shutil
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from smolhub_hub.config import DataConfig
from smolhub_hub.data.builtin import generate_stories
from smolhub_hub.data.packed import PackedData, cache_key, prepare_data, window_starts
from smolhub_hub.data.sources import SourceStats, iter_documents
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
    (lambda p: p.write_bytes("Once upon a time.".encode("utf-16")), r"UTF-16 text .*`iconv -f utf-16 -t utf-8 "),
    (lambda p: p.write_bytes(codecs.BOM_UTF16_BE + "Once.".encode("utf-16-be")), "UTF-16 text"),
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


def _jsonl(path, values, field="text"):
    path.write_text("".join(json.dumps({field: v}) + "\n" for v in values))
    return path


def _data(path, **kw) -> DataConfig:
    return DataConfig(dataset=str(path), vocab_size=300, cache_dir=str(path.parent / "cache"), **kw)


def test_the_bpe_learns_from_training_documents_only(tmp_path):
    """Every 4th document is held out; a word only those hold must not be a merged token."""
    docs = [("Zqxjvw " * 30 if i % 4 == 3 else "Blorptastic " * 30) + f"story {i}." for i in range(40)]
    d = prepare_data(_data(_jsonl(tmp_path / "d.jsonl", docs), val_fraction=0.25))
    assert d.meta["val_documents"] == 10
    assert len(d.tokenizer.tokenize(" Blorptastic")) == 1  # a training word is learned ...
    assert len(d.tokenizer.tokenize(" Zqxjvw")) > 1  # ... a held-out one is not


def test_non_text_values_are_skipped_and_counted(tmp_path, capsys):
    path = _jsonl(tmp_path / "d.jsonl", [None, 123, ["a", "b"], {"x": 1}, True] + [f"Story {i}." for i in range(8)])
    stats = SourceStats()
    docs = list(iter_documents(_data(path), stats))
    assert docs == [f"Story {i}." for i in range(8)] and stats.non_text == 5
    d = prepare_data(_data(path, val_fraction=0.25))
    assert d.meta["skipped_non_text"] == 5
    assert "None" not in d.tokenizer.decode(np.asarray(d.train).tolist())
    assert "skipped 5 non-text value(s)" in capsys.readouterr().out
    with pytest.raises(UserError, match="3 of its values are not strings"):
        list(iter_documents(_data(_jsonl(tmp_path / "n.jsonl", [None, 1, [2]]))))


@pytest.mark.parametrize("column, kind", [(pa.array([1, 2]), "int64"), (pa.array([["a"], ["b"]]), "list<"),
                                          (pa.array([b"a", b"b"]), "binary")])
def test_a_parquet_column_that_is_not_text_is_refused(tmp_path, column, kind):
    pq.write_table(pa.table({"text": column}), tmp_path / "d.parquet")
    with pytest.raises(UserError, match=f"holds {kind}.*, not text; set --text-field"):
        list(iter_documents(_data(tmp_path / "d.parquet")))


def test_parquet_nulls_are_counted_as_non_text(tmp_path):
    pq.write_table(pa.table({"text": pa.array(["One.", None, "Two."], pa.large_string())}), tmp_path / "d.parquet")
    stats = SourceStats()
    assert list(iter_documents(_data(tmp_path / "d.parquet"), stats)) == ["One.", "Two."] and stats.non_text == 1


def test_hidden_files_and_folders_are_not_data(tmp_path):
    root = tmp_path / ".datasets" / "stories"  # a hidden folder above the one given is fine
    (root / ".ipynb_checkpoints").mkdir(parents=True)
    (root / "sub").mkdir()
    (root / "a.txt").write_text("Kept one.\n\nKept two.")
    (root / ".ipynb_checkpoints" / "a-checkpoint.txt").write_text("Notebook copy.")
    (root / ".#a.txt").write_text("Editor copy.")
    _jsonl(root / "sub" / ".b.jsonl", ["Hidden jsonl."])
    stats = SourceStats()
    assert list(iter_documents(_data(root), stats)) == ["Kept one.", "Kept two."] and stats.hidden_files == 3
    (root / "a.txt").unlink()
    with pytest.raises(UserError, match="skipped 3 under hidden paths"):
        list(iter_documents(_data(root)))


def test_a_document_in_both_splits_is_dropped_from_training(tmp_path, capsys):
    docs = [f"Story number {i} is here." for i in range(12)]
    docs[0] = "  " + docs[3] + "\n"  # document 3 is held out (every 4th); document 0 repeats it
    d = prepare_data(_data(_jsonl(tmp_path / "d.jsonl", docs), val_fraction=0.25))
    assert (d.meta["train_documents"], d.meta["val_documents"], d.meta["duplicates_dropped"]) == (8, 3, 1)
    assert int((np.asarray(d.train) == d.meta["eos_id"]).sum()) == 8
    train_text = d.tokenizer.decode(np.asarray(d.train).tolist())
    assert "number 3 " not in train_text and "number 1 " in train_text and len(d.train) == d.meta["train_tokens"]
    assert "dropped 1 training document(s) that repeat a held-out one" in capsys.readouterr().out


def test_byte_order_mark_and_crlf_line_endings(tmp_path):
    (tmp_path / "d.txt").write_bytes(codecs.BOM_UTF8 + b"First story.\r\n\r\nSecond story,\r\nline two.\r\n")
    _jsonl(tmp_path / "e.jsonl", ["Third."])
    (tmp_path / "e.jsonl").write_bytes(codecs.BOM_UTF8 + (tmp_path / "e.jsonl").read_bytes().replace(b"\n", b"\r\n"))
    assert list(iter_documents(_data(tmp_path))) == ["First story.", "Second story,\nline two.", "Third."]


def test_check_windows_names_the_flags(tmp_path):
    meta = {"data": {"dataset": "d"}, "train_documents": 9, "val_documents": 1}
    data = PackedData(np.zeros(100), np.zeros(66), None, meta, tmp_path)
    data.check_windows(64)  # 66 tokens: one window of 65 and a token to place it
    with pytest.raises(UserError, match=r"held-out split .* has 66 tokens \(1 documents\).*raise --val-fraction"):
        data.check_windows(65)
    with pytest.raises(UserError, match=r"training split .* has 100 tokens .*lower --seq-len"):
        data.check_windows(99)


def _cut_short(name):
    return lambda cache: (cache / name).write_bytes((cache / name).read_bytes()[:-3])


CACHE_DAMAGE = {  # what is done to a finished cache -> what the message says (a regex)
    "train.bin cut short": (_cut_short("train.bin"), r"train.bin is [\d,]+ bytes long where meta.json says"),
    "val.bin missing": (lambda c: (c / "val.bin").unlink(), "val.bin is missing"),
    "meta.json not JSON": (lambda c: (c / "meta.json").write_text("{"), "meta.json is damaged"),
    "meta.json without sizes": (lambda c: (c / "meta.json").write_text('{"dtype": "uint16"}'), "meta.json is damaged"),
    "tokenizer.json of the wrong structure": (lambda c: (c / "tokenizer" / "tokenizer.json").write_text("[1, 2]"),
                                              "could not load a tokenizer from"),
    "tokenizer folder missing": (lambda c: shutil.rmtree(c / "tokenizer"), "tokenizer is missing"),
}


@pytest.mark.parametrize("damage", CACHE_DAMAGE)
def test_a_damaged_data_cache_is_refused_naming_the_folder_to_delete(tmp_path, damage):
    mutate, message = CACHE_DAMAGE[damage]
    cfg = _data(_jsonl(tmp_path / "d.jsonl", [f"Story {i}." for i in range(20)]), val_fraction=0.25)
    cache = prepare_data(cfg).path
    mutate(cache)
    with pytest.raises(UserError, match=f"{message}.*delete the cache folder {cache}"):
        prepare_data(cfg)
    shutil.rmtree(cache)  # what the message says to do
    assert prepare_data(cfg).meta["train_documents"] == 15


def test_a_cache_without_meta_json_was_never_finished_and_is_rebuilt(tmp_path):
    cfg = _data(_jsonl(tmp_path / "d.jsonl", [f"Story {i}." for i in range(20)]), val_fraction=0.25)
    cache = prepare_data(cfg).path
    (cache / "meta.json").unlink()
    (cache / "train.bin").write_bytes(b"")
    assert len(prepare_data(cfg).train) > 0
