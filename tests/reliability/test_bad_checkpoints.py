"""Damaged, foreign and booby-trapped checkpoints and data caches: loading, --resume and new runs refuse
them with one clear line, and nothing in them is executed."""

import json
import os
import pickle
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from smolhub_hub.checkpoint import TOKENIZER_KEY
from smolhub_hub.data.builtin import generate_stories
from smolhub_hub.data.tokenizer import train_bpe
from smolhub_hub.errors import UserError
from smolhub_hub.inference import load_model
from smolhub_hub.training import main
from SmolMixtral.config import FAMILY as MIXTRAL
from StoryLlama.config import FAMILY
from tests.reliability.conftest import GOOD_RUN_STEPS, run_args
from tests.smolhub_hub.test_data import CACHE_DAMAGE

STEPS = GOOD_RUN_STEPS
CKPT = f"step_{STEPS:07d}"


def _edit_json(name, change):
    def mutate(ckpt):
        (ckpt / name).write_text(json.dumps(change(json.loads((ckpt / name).read_text()))))
    return mutate


def _truncate(name):
    def mutate(ckpt):
        data = (ckpt / name).read_bytes()
        (ckpt / name).write_bytes(data[: len(data) // 3])
    return mutate


def _edit_section(section, **values):
    return _edit_json("config.json", lambda d: {**d, section: {**d[section], **values}})


def _drop_section(section):
    return _edit_json("config.json", lambda d: {k: v for k, v in d.items() if k != section})


def _other_tokenizer(ckpt):
    """The tokenizer files of another corpus, with as many ids: a swap that only the fingerprint shows."""
    tok = train_bpe(generate_stories(300, seed=5), vocab_size=512)
    assert len(tok) <= 512
    tok.save_pretrained(ckpt)


def _reshape_one_weight(ckpt):
    state = load_file(ckpt / "model.safetensors")
    state[sorted(state)[1]] = torch.zeros(3, 3)
    save_file(state, ckpt / "model.safetensors")


def _pickle_bomb(marker):
    class Bomb:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    return pickle.dumps(Bomb())


DAMAGE = {  # what is done to the checkpoint -> what the message says; loading weights / resuming
    "truncated weights": (_truncate("model.safetensors"), "truncated or corrupt"),
    "flipped header bytes": (lambda c: (c / "model.safetensors").write_bytes(
        b"\xff" * 64 + (c / "model.safetensors").read_bytes()[64:]), "truncated or corrupt"),
    "weights of another shape": (_reshape_one_weight, "does not fit this model"),
    "binary config": (lambda c: (c / "config.json").write_bytes(os.urandom(64)), "corrupt"),
    "config without a model": (_edit_json("config.json", lambda d: {**d, "model": 5}), "corrupt (no model section)"),
    "config with a wrong type": (_edit_section("model", dim="x"), "corrupt (dim = 'x')"),
    "config with a zero size": (_edit_section("model", dim=0), "corrupt (dim = 0, must be >= 1)"),
    "config with no heads": (_edit_section("model", n_heads=0), "corrupt (n_heads = 0, must be >= 1)"),
    "config with a negative size": (_edit_section("model", n_layers=-2), "corrupt (n_layers = -2, must be >= 1)"),
    "config with a rate outside its range": (_edit_section("model", dropout=1.5),
                                             "corrupt (dropout = 1.5, must be >= 0 and < 1)"),
    "config with a non-finite number": (_edit_section("model", rope_base=float("nan")),
                                        "corrupt (rope_base = nan, must be > 0)"),
    "config with sizes that do not fit together": (_edit_section("model", n_kv_heads=3),
                                                   "must be a multiple of n_kv_heads (3)"),
    "config recording another tokenizer": (_edit_json("config.json", lambda d: {**d, TOKENIZER_KEY: "0" * 64}),
                                           "the tokenizer is not the one the weights were trained with"),
    "not a SmolHub config": (lambda c: (c / "config.json").write_text("[1, 2]"), "not written by SmolHub"),
    "garbage LATEST": (lambda c: (c.parent / "LATEST").write_bytes(b"\xff\x00/../../etc"), "LATEST is corrupt"),
    "LATEST naming a lost folder": (lambda c: (c.parent / "LATEST").write_text("step_0009999\n"),
                                    "is not a SmolHub checkpoint"),
}

STATE_DAMAGE = {  # damage only --resume reads
    "truncated training state": (_truncate("training_state.safetensors"), "training state"),
    "training state of another shape": (_edit_json("training_state.json", lambda d: {"__dict__": [["step", 3]]}),
                                        "corrupt or from another run"),
    "torch.save pickle as training state": (lambda c: torch.save({"x": torch.zeros(1)},
                                                                 c / "training_state.safetensors"), "corrupt"),
    "config without a train section": (_drop_section("train"), "corrupt (no train section)"),
    "config without a data section": (_drop_section("data"), "corrupt (no data section)"),
    "config with a training setting of a wrong type": (_edit_section("train", lr="fast"), "corrupt (lr = 'fast')"),
    "config with a training setting outside its range": (_edit_section("train", batch_size=0),
                                                          "corrupt (batch_size = 0, must be >= 1)"),
}

TOKENIZER_DAMAGE = {  # damage only loading the model reads (a run's tokenizer comes from its data cache)
    "tokenizer.json of the wrong structure": (_edit_json("tokenizer.json", lambda d: {**d, "model": 5}),
                                              "could not load a tokenizer from"),
    "tokenizer files of another run": (_other_tokenizer, "the tokenizer is not the one the weights were trained with"),
}


def _damaged(good_run, tmp_path, mutate):
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    mutate(run / CKPT)
    return run


def _resume(family, run, capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        main(family, run_args("StoryLlama", run, STEPS + 2, ["--resume"]))
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err
    [line] = [x for x in err.splitlines() if x.startswith("error:")]
    return line


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_checkpoint_is_refused_by_load_and_resume(good_run, tmp_path, capsys, damage):
    mutate, message = DAMAGE[damage]
    run = _damaged(good_run, tmp_path, mutate)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_model(str(run), device="cpu")
    assert message in _resume(FAMILY, run, capsys)


@pytest.mark.parametrize("damage", STATE_DAMAGE)
def test_damaged_training_state_is_refused_by_resume(good_run, tmp_path, capsys, damage):
    mutate, message = STATE_DAMAGE[damage]
    run = _damaged(good_run, tmp_path, mutate)
    assert message in _resume(FAMILY, run, capsys)
    assert load_model(str(run), device="cpu")  # the weights themselves are still usable


@pytest.mark.parametrize("damage", TOKENIZER_DAMAGE)
def test_a_damaged_or_foreign_tokenizer_is_refused_by_load(good_run, tmp_path, capsys, damage):
    from smolhub_hub.inference import main as generate

    mutate, message = TOKENIZER_DAMAGE[damage]
    run = _damaged(good_run, tmp_path, mutate)
    with pytest.raises(SystemExit) as stop:
        generate(FAMILY, ["--checkpoint", str(run), "--prompt", "Once", "--device", "cpu"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err
    [line] = [x for x in err.splitlines() if x.startswith("error:")]
    assert message in line and str(run / CKPT) in line


def test_a_checkpoint_from_before_the_fingerprint_still_loads_and_resumes(good_run, tmp_path, capsys):
    run = _damaged(good_run, tmp_path, _edit_json("config.json", lambda d: {k: v for k, v in d.items()
                                                                           if k != TOKENIZER_KEY}))
    assert load_model(str(run), device="cpu")
    assert main(FAMILY, run_args("StoryLlama", run, STEPS + 1, ["--resume"]))["step"] == STEPS + 1


@pytest.mark.parametrize("damage", ["train.bin cut short", "tokenizer.json of the wrong structure"])
def test_a_damaged_data_cache_stops_new_runs_and_resumes_in_one_line(packed_data, tmp_path, capsys, damage):
    mutate, message = CACHE_DAMAGE[damage]
    cache = tmp_path / "cache" / packed_data.path.name  # a private copy of the session's cache
    shutil.copytree(packed_data.path, cache)
    own_cache = ["--cache-dir", str(cache.parent)]
    main(FAMILY, run_args("StoryLlama", tmp_path / "run", STEPS, own_cache))
    mutate(cache)
    for line in (_resume(FAMILY, tmp_path / "run", capsys), _start(tmp_path / "new", own_cache, capsys)):
        assert re.search(message, line) and f"delete the cache folder {cache}" in line


def test_init_from_weights_with_another_tokenizer_is_refused(packed_data, tmp_path, capsys):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "hf")
    _other_tokenizer(tmp_path / "hf")
    line = _start(tmp_path / "run", ["--init-from", str(tmp_path / "hf")], capsys)
    assert f"--init-from {tmp_path / 'hf'}: the tokenizer is not the one the weights were trained with" in line
    assert f"--tokenizer {tmp_path / 'hf'}" in line
    packed_data.tokenizer.save_pretrained(tmp_path / "hf")  # the run's own tokenizer: accepted
    assert main(FAMILY, run_args("StoryLlama", tmp_path / "run", 1, ["--init-from", str(tmp_path / "hf")]))


def _start(run, extra, capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        main(FAMILY, run_args("StoryLlama", run, STEPS, extra))
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err
    [line] = [x for x in err.splitlines() if x.startswith("error:")]
    return line


@pytest.mark.parametrize("target", ["training_state.json", "training_state.safetensors", "model.safetensors",
                                    "config.json"])
def test_a_pickle_payload_is_never_executed(good_run, tmp_path, capsys, target):
    marker = tmp_path / "executed"
    run = _damaged(good_run, tmp_path, lambda c: (c / target).write_bytes(_pickle_bomb(marker)))
    _resume(FAMILY, run, capsys)
    with pytest.raises(UserError):
        if target.startswith("training_state"):
            raise UserError("inference never reads the training state")
        load_model(str(run), device="cpu")
    assert not marker.exists()


def test_a_checkpoint_of_another_family_is_refused(good_run, capsys):
    assert "resume it with StoryLlama/trainer.py" in _resume(MIXTRAL, good_run, capsys)
    with pytest.raises(UserError, match="is a StoryLlama checkpoint, not SmolMixtral"):
        load_model(str(good_run), family=MIXTRAL, device="cpu")
