"""Property tests of every command line and of generate_text: whatever a user types or feeds in ends
in a valid result or one clear `error:` line (exit 2), never a traceback, a hang or a crash.
In-process calls keep the examples fast; example counts stay small on purpose."""

import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smolhub_hub import cli, inference
from smolhub_hub.config import parse_cli
from smolhub_hub.errors import UserError
from smolhub_hub.training import main as train_main
from StoryLlama.config import FAMILY
from tests.reliability.conftest import assert_clean, run_args, run_cli

FAST = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))

texts = st.one_of(st.just(""), st.text(max_size=40), st.text(alphabet=st.characters(max_codepoint=0x1F), max_size=20),
                  st.text(alphabet="naïve 🐱日本\u200b\x00\x07", max_size=30), st.just("Lily went home. " * 300))
# Temperatures in (0, 1e-6) overflow the scaled logits: a known defect of generation.sample_next (see
# test_tiny_temperature below), kept out of the random values so the other properties stay checked.
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not 0 < x < 1e-6),
                   st.sampled_from([0.0, -1.0, 1.5, 2.0]))
ints = st.one_of(st.integers(-3, 300), st.sampled_from([10**9, -10**9]))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "run"
    train_main(FAMILY, run_args("StoryLlama", out, 2))
    return out


@pytest.fixture(scope="module")
def model(tiny_run):
    return inference.load_model(str(tiny_run), device="cpu")


@FAST
@given(prompt=st.one_of(texts, st.lists(texts, max_size=3)), max_length=ints, temperature=floats,
       top_k=st.one_of(st.none(), ints), top_p=st.one_of(st.none(), floats), greedy=st.booleans())
def test_generate_text_returns_text_or_a_clear_error(model, prompt, max_length, temperature, top_k, top_p, greedy):
    try:
        out = inference.generate_text(model, prompt, max_length, temperature, top_k, top_p, greedy=greedy, seed=0)
    except UserError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert isinstance(out, list if isinstance(prompt, list) else str)


def test_tiny_temperature_is_greedy(model):
    assert inference.generate_text(model, "Once", 3, temperature=1e-45, seed=0) == \
        inference.generate_text(model, "Once", 3, greedy=True)


flag_values = {
    "--prompt": texts, "--max-length": ints.map(str), "--temperature": floats.map(str), "--top-k": ints.map(str),
    "--top-p": floats.map(str), "--seed": ints.map(str), "--device": st.sampled_from(["cpu", "cuda", "tpu", ""]),
    "--bogus": st.text(max_size=5),
}
args = st.lists(st.sampled_from(sorted(flag_values)).flatmap(lambda f: st.tuples(st.just(f), flag_values[f])),
                max_size=4).map(lambda pairs: [x for pair in pairs for x in pair])


@FAST
@given(extra=args)
def test_inference_cli(tiny_run, extra):
    assert_clean(*run_cli(lambda argv: inference.main(FAMILY, argv),
                          ["--checkpoint", str(tiny_run), "--prompt", "Once", "--max-length", "3", *extra]))


@FAST
@given(command=st.sampled_from(["generate", "export", "list", "pull", "nope", ""]), extra=args)
def test_smolhub_cli(tiny_run, command, extra):
    if command == "generate":
        argv = ["generate", str(tiny_run), "--prompt", "Once", "--max-length", "3", *extra]
    elif command == "export":
        argv = ["export", str(tiny_run), tempfile.mkdtemp(), *extra[:2]]
    elif command == "pull":
        argv = ["pull", "no-such-user/no-such-model", *extra[:1]]
    else:
        argv = [command, *extra][: 1 + len(extra) % 2]
    assert_clean(*run_cli(cli.main, [a for a in argv if a != ""] or ["--bogus"]))


# Sizes stay small: a legal but enormous batch (--total-batch-tokens 1e9) is slow, not broken.
small = st.integers(-3, 300).map(str)
train_flags = {
    "--lr": floats.map(str), "--batch-size": small, "--seq-len": ints.map(str),
    "--warmup-steps": ints.map(str), "--grad-clip": floats.map(str), "--val-fraction": floats.map(str),
    "--keep-last": ints.map(str), "--n-heads": small, "--dim": st.integers(-2, 96).map(str),
    "--dropout": floats.map(str), "--total-batch-tokens": small, "--optimizer": st.text(max_size=6),
    "--sample-prompt": texts, "--no-such-flag": st.text(max_size=4),
}


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(pairs=st.lists(st.sampled_from(sorted(train_flags)).flatmap(lambda f: st.tuples(st.just(f), train_flags[f])),
                      min_size=1, max_size=2))
def test_trainer_cli(pairs):
    out = Path(tempfile.mkdtemp()) / "run"
    extra = [x for pair in pairs for x in pair]
    assert_clean(*run_cli(lambda argv: train_main(FAMILY, argv), [*run_args("StoryLlama", out, 2), *extra]))


BAD_FILES = {
    "empty.txt": b"",
    "blank.txt": b"\n\n   \n\t\n",
    "binary.txt": bytes(range(256)) * 40,
    "latin1.txt": "caf\xe9 au lait\n\nna\xefve".encode("latin-1"),
    "huge-line.txt": b"Lily " * 400_000,
    "broken.jsonl": b'{"text": "ok"}\n{"text": \n',
    "no-field.jsonl": b'{"story": "Once"}\n',
    "fake.parquet": b"PAR1 not really parquet",
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_bad_dataset_files(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(BAD_FILES[name])
    argv = run_args("StoryLlama", tmp_path / "run", 2, ["--dataset", str(path)])
    code, err = run_cli(lambda a: train_main(FAMILY, a), argv)
    assert code == 2 and "Traceback" not in err, err
    assert str(path) in err or name.split(".")[0] in err or "document" in err


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=3000))
def test_random_bytes_as_a_dataset(data):
    root = Path(tempfile.mkdtemp())
    (root / "data.txt").write_bytes(data)
    assert_clean(*run_cli(lambda a: train_main(FAMILY, a),
                          run_args("StoryLlama", root / "run", 2, ["--dataset", str(root / "data.txt")])))


# Each of these used to train first and then fail (or crash with a traceback at once): now one line, before step 1.
UP_FRONT = {  # case: (flags, what the error line says)
    "beta1 above 1": (["--beta1", "1.5"], "--beta1 must be >= 0 and < 1 (got 1.5)"),
    "beta2 of 1": (["--beta2", "1"], "--beta2 must be >= 0 and < 1 (got 1.0)"),
    "context of 0": (["--max-seq-len", "0"], "--max-seq-len must be >= 1 (got 0)"),
    "no heads": (["--n-heads", "0"], "--n-heads must be >= 1 (got 0)"),
    "no layers": (["--n-layers", "0"], "--n-layers must be >= 1 (got 0)"),
    "dropout above 1": (["--dropout", "1.5"], "--dropout must be >= 0 and < 1 (got 1.5)"),
    "infinite learning rate": (["--lr", "inf"], "--lr must be > 0 (got inf)"),
    "held-out share of a half": (["--val-fraction", "0.5"], "--val-fraction must be > 0 and < 0.5 (got 0.5)"),
    "unknown device": (["--device", "tpu"], "--device 'tpu' is not a device; use auto, cpu, cuda, cuda:N or mps"),
    "no Apple GPU": (["--device", "mps"], "--device mps asked for, but this machine has no Apple GPU (MPS)"),
    "empty prompt": (["--sample-prompt="], "--sample-prompt is empty"),
    "prompt beyond the context": (["--sample-prompt", "Lily " * 200], "--sample-prompt is 2"),
    "held-out split under one window": (["--builtin-stories", "40", "--val-fraction", "0.03", "--seq-len", "128"],
                                        "fewer than one window of 129 (--seq-len 128 + 1); use more data, raise "
                                        "--val-fraction"),
}


@pytest.mark.parametrize("case", UP_FRONT)
def test_what_can_be_checked_is_checked_before_the_first_step(tmp_path, case):
    flags, message = UP_FRONT[case]
    if case == "no Apple GPU" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    out = tmp_path / "run"
    code, err = run_cli(lambda a: train_main(FAMILY, a), [*run_args("StoryLlama", out, 2), *flags])
    assert_clean(code, err)
    assert code == 2 and message in err, err
    assert not (out / "metrics.csv").exists() and not list(out.glob("step_*"))  # not one step trained


def test_path_flags_read_the_home_folder_as_a_shell_would(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    paths = {"out_dir": "train", "init_from": "train", "dataset": "data", "tokenizer": "data", "cache_dir": "data"}
    argv = [arg for name in paths for arg in ("--" + name.replace("_", "-"), f"~/{name}")]
    configs = dict(zip(("model", "train", "data"), parse_cli(FAMILY, argv)[:3], strict=False))
    for name, kind in paths.items():
        assert getattr(configs[kind], name) == str(tmp_path / name)
