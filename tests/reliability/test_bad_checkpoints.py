"""Damaged, foreign and booby-trapped checkpoints: loading and --resume refuse them with one clear line,
and nothing in them is executed."""

import json
import os
import pickle
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from smolhub_hub.errors import UserError
from smolhub_hub.inference import load_model
from smolhub_hub.training import main
from SmolMixtral.config import FAMILY as MIXTRAL
from StoryLlama.config import FAMILY
from tests.reliability.conftest import run_args

STEPS = 3
CKPT = f"step_{STEPS:07d}"


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("good") / "run"
    main(FAMILY, run_args("StoryLlama", out, STEPS))
    return out


def _edit_json(name, change):
    def mutate(ckpt):
        (ckpt / name).write_text(json.dumps(change(json.loads((ckpt / name).read_text()))))
    return mutate


def _truncate(name):
    def mutate(ckpt):
        data = (ckpt / name).read_bytes()
        (ckpt / name).write_bytes(data[: len(data) // 3])
    return mutate


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
    "config with a wrong type": (_edit_json("config.json", lambda d: {**d, "model": {**d["model"], "dim": "x"}}),
                                 "corrupt (dim = 'x')"),
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
        load_model(str(good_run), family="SmolMixtral", device="cpu")
