"""Issue 19 §6: every entry point driven with bad flags, bad values and missing or damaged files ends in exit
code 2 and exactly one line `error: ...` on stderr, never a traceback, and leaves every earlier checkpoint as it
was (the run folders are hashed before and after).

The entry points: the five trainers, the five inference.py, the five gradio apps (arguments and loading only: the
server is replaced), every `smolhub` command, and both smol_experiments pipelines. They are called in-process
through their main(argv). The bad trainer values come from the fields' declared ranges (`opt(min=...)`), so a
field added to a config is driven the day it is added. Every generated command line holds at least one mistake,
so nothing trains: the whole file takes seconds."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smol_experiments.alignment import run_pipeline as alignment_pipeline
from smol_experiments.moe import run_pipeline as moe_pipeline
from smolhub_hub import checkpoint as ckpt_io
from smolhub_hub import cli, demo, inference
from smolhub_hub.config import DERIVED_MODEL_FIELDS, DataConfig, TrainConfig, flag
from smolhub_hub.registry import family_names, get_family
from smolhub_hub.training import engine
from smolhub_hub.training import main as train_main
from tests.cli.test_help import _experiment_modules
from tests.reliability.conftest import GOOD_RUN_STEPS, SMALL_MODEL, run_args, run_cli

FAMILIES = family_names()

EXAMPLES = settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))


def assert_refused(code: int, err: str):
    """Exit 2, one line `error: ...` and nothing else on stderr."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)


def tree_hash(folder: Path) -> str:
    """Every file's path and bytes, except the run-folder lock (it records the pid of the last trainer)."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != engine.LOCK_FILE:
            h.update(str(p.relative_to(folder)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def refused_and_unchanged(fn, argv, *folders: Path):
    before = [tree_hash(f) for f in folders]
    assert_refused(*run_cli(fn, [str(a) for a in argv]))
    assert [tree_hash(f) for f in folders] == before, "an earlier checkpoint changed"


# --- one checkpoint per family ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(good_run, tmp_path_factory) -> dict[str, Path]:
    """A trained StoryLlama run (with training state), and for every other family quick-preset weights saved with
    that run's tokenizer and train / data sections: a run folder each, as --resume and the loaders read it."""
    root = tmp_path_factory.mktemp("entry_points")
    shutil.copytree(good_run, root / "StoryLlama")
    source = ckpt_io.resolve_checkpoint(root / "StoryLlama")
    saved, tokenizer = ckpt_io.read_config(source), inference.load_model(str(source), device="cpu").tokenizer
    out = {"StoryLlama": root / "StoryLlama"}
    for name in FAMILIES:
        if name not in out:
            family = get_family(name)
            mcfg = family.resolve("quick")[0].replace(vocab_size=512)
            torch.manual_seed(0)
            model = family.model_class()(mcfg)
            config = {**saved, "family": name, "model": mcfg.to_dict(), "param_counts": model.param_counts()}
            ckpt_io.save_checkpoint(root / name, 2, model, config, tokenizer)
            out[name] = root / name
    return out


def _truncate(path: Path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


DAMAGE = {  # what is done to a copy of the run's latest checkpoint
    "truncated weights": lambda c: _truncate(c / "model.safetensors"),
    "config.json that is not JSON": lambda c: (c / "config.json").write_text('{"family": "StoryLlama", "mod'),
    "config.json with a size of 0": lambda c: (c / "config.json").write_text(json.dumps(
        {**json.loads((c / "config.json").read_text()), "model": {"dim": 0}})),
    "missing tokenizer": lambda c: [p.unlink() for p in c.glob("tokenizer*")],
    "missing folder": lambda c: shutil.rmtree(c.parent),
}


@pytest.fixture(params=sorted(DAMAGE))
def damaged(request, runs, tmp_path):
    """(family -> a damaged copy of its run folder)."""
    def make(name: str) -> Path:
        run = tmp_path / name
        shutil.copytree(runs[name], run)
        DAMAGE[request.param](ckpt_io.resolve_checkpoint(run))
        return run
    return make


# --- generated mistakes ----------------------------------------------------------------------------
def outside(f: dataclasses.Field) -> st.SearchStrategy[str]:
    """Values argparse reads but the field's declared range refuses, and text that is no number of its type."""
    bounds = f.metadata["range"]
    edges = [bounds["min"] - 1 if "min" in bounds else None, bounds.get("above"),
             bounds["max"] + 1 if "max" in bounds else None, bounds.get("below")]
    if f.type in ("float", float):
        texts = [repr(float(v)) for v in edges if v is not None] + ["nan", "inf", "-inf"]
    else:
        texts = [str(v) for v in edges if v is not None] + ["1.5"]
    return st.sampled_from([*texts, "ten", ""])


def trainer_mistakes(family) -> st.SearchStrategy[list[str]]:
    fields = [f for cls in (family.model_config, TrainConfig, DataConfig) for f in dataclasses.fields(cls)
              if not (cls is family.model_config and f.name in DERIVED_MODEL_FIELDS)]
    numbers = [f for f in fields if f.metadata.get("range")]
    choices = [f for f in fields if "choices" in f.metadata]
    switches = [f for f in fields if f.type in ("bool", bool)]
    return st.one_of(
        st.sampled_from(numbers).flatmap(lambda f: outside(f).map(lambda v: [f"{flag(f.name)}={v}"])),
        st.sampled_from(choices).map(lambda f: [flag(f.name), "no-such-choice"]),
        st.sampled_from(switches).map(lambda f: [f"{flag(f.name)}=yes"]),
        st.text("abcxyz-", min_size=1, max_size=8).map(lambda t: [f"--no-such-flag-{t}"]),
        st.just(["--preset", "no-such-preset"]),
        st.just(["--dataset", "/no/such/corpus.txt"]),
        st.just(["--tokenizer", "/no/such/tokenizer-folder"]),
    )


def with_one_mistake(base: list[str], mistakes: st.SearchStrategy[list[str]]):
    """The mistake anywhere among the good flags (argparse reads the last of a repeated flag)."""
    return mistakes.map(lambda bad: [*base, *bad])


# --- trainers --------------------------------------------------------------------------------------
def trainer(name):
    return lambda argv: train_main(get_family(name), argv)


def trainer_args(name: str, out: Path, extra=()) -> list[str]:
    """The flags of the runs above: StoryLlama's small sizes, the other families' quick preset as saved."""
    args = run_args("StoryLlama", out, GOOD_RUN_STEPS)
    return [*(args if name == "StoryLlama" else args[:-len(SMALL_MODEL["StoryLlama"])]), *map(str, extra)]


@pytest.mark.parametrize("name", FAMILIES)
def test_trainer_bad_flags(name, runs, tmp_path):
    @EXAMPLES
    @given(argv=with_one_mistake(trainer_args(name, runs[name], ["--resume"]), trainer_mistakes(get_family(name))))
    def check(argv):
        refused_and_unchanged(trainer(name), argv, runs[name])
    check()


@pytest.mark.parametrize("name", FAMILIES)
def test_trainer_damaged_run_or_source(name, damaged, tmp_path):
    run = damaged(name)
    refused_and_unchanged(trainer(name), trainer_args(name, run, ["--resume"]), tmp_path)
    refused_and_unchanged(trainer(name), trainer_args(name, tmp_path / "new", ["--init-from", run]), tmp_path)


@pytest.mark.parametrize("damage", ["truncated weights", "config.json that is not JSON", "missing folder"])
def test_trainer_init_from_a_damaged_transformers_folder(damage, runs, tmp_path):
    source = cli.export_to_hf(str(runs["StoryLlama"]), str(tmp_path / "hf" / "model"))
    DAMAGE[damage](source)
    refused_and_unchanged(trainer("StoryLlama"), trainer_args("StoryLlama", tmp_path / "new", ["--init-from", source]),
                          tmp_path / "hf")


def test_trainer_out_dir_that_is_a_file(runs, tmp_path):
    (tmp_path / "file").write_text("x")
    for name in FAMILIES:
        refused_and_unchanged(trainer(name), trainer_args(name, tmp_path / "file"), runs[name])


# --- inference.py and the gradio apps ---------------------------------------------------------------
sampling_mistakes = st.one_of(
    st.sampled_from([["--max-length", "-1"], ["--max-length", "ten"], ["--temperature", "-1"],
                     ["--temperature", "nan"], ["--top-p", "1.5"], ["--top-p", "0"], ["--top-k", "-2"],
                     ["--top-k", "1.5"], ["--seed", "x"], ["--device", "tpu"], ["--device", "cuda:7"],
                     ["--prompt"], ["--prompt", "Lily " * 2000]]),
    st.text("abcxyz-", min_size=1, max_size=8).map(lambda t: [f"--no-such-flag-{t}"]),
)


def generate_args(run: Path) -> list[str]:
    return ["--checkpoint", str(run), "--prompt", "Once", "--max-length", "3", "--device", "cpu"]


@pytest.mark.parametrize("name", FAMILIES)
def test_inference_bad_flags(name, runs):
    @EXAMPLES
    @given(argv=with_one_mistake(generate_args(runs[name]), sampling_mistakes))
    def check(argv):
        refused_and_unchanged(lambda a: inference.main(get_family(name), a), argv, runs[name])
    check()


@pytest.mark.parametrize("name", FAMILIES)
def test_inference_and_demo_damaged_checkpoint(name, damaged, tmp_path, monkeypatch):
    run = damaged(name)
    refused_and_unchanged(lambda a: inference.main(get_family(name), a), generate_args(run), tmp_path)
    monkeypatch.setattr(demo, "build_demo", _no_server)
    refused_and_unchanged(lambda a: demo.main(get_family(name), a), ["--checkpoint", run, "--device", "cpu"], tmp_path)


def _no_server(*args, **kwargs):
    raise AssertionError("the demo got as far as starting a server")


demo_mistakes = st.one_of(
    st.sampled_from([["--port", "http"], ["--port", "-1"], ["--port", "70000"], ["--max-new-tokens", "0"],
                     ["--max-new-tokens", "many"], ["--device", "tpu"], ["--share=yes"]]),
    st.text("abcxyz-", min_size=1, max_size=8).map(lambda t: [f"--no-such-flag-{t}"]),
)


@pytest.mark.parametrize("name", FAMILIES)
def test_demo_bad_flags(name, runs, monkeypatch):
    monkeypatch.setattr(demo, "build_demo", _no_server)

    @EXAMPLES
    @given(argv=with_one_mistake(["--checkpoint", str(runs[name]), "--device", "cpu"], demo_mistakes))
    def check(argv):
        refused_and_unchanged(lambda a: demo.main(get_family(name), a), argv, runs[name])
    check()


# --- smolhub ---------------------------------------------------------------------------------------
def smolhub_mistakes(run: Path, out: Path) -> st.SearchStrategy[list[str]]:
    good = {"export": ["export", run, out], "generate": ["generate", run, "--prompt", "Once", "--max-length", "2"],
            "push": ["push", run, "me/model", "--dry-run", out], "compare": ["compare", run, "--plot", "none"],
            "quantize": ["quantize", run, out, "--no-eval"], "list": ["list", "--no-params"],
            "pull": ["pull", "me/model", out]}
    bad = {"export": [["--format", "onnx"], ["--outtype", "q4"], ["--format", "hf", "--outtype", "q8_0"]],
           "generate": [["--top-p", "2"], ["--max-length", "-3"], ["--device", "tpu"]],
           "push": [["--private=yes"]], "compare": [["--x", "time"], ["--format", "yaml"]],
           "quantize": [["--scheme", "int4"], ["--eval-batches", "x"]], "list": [["--params"]],
           "pull": [["--revision"]]}
    return st.one_of(
        st.sampled_from([[*good[c], *b] for c in good for b in bad[c]]),
        st.sampled_from(sorted(good)).map(lambda c: [*good[c], "--no-such-flag"]),
        st.sampled_from([["no-such-command"], [], ["export", run], ["pull"], ["push", run]]),
    )


def test_smolhub_bad_flags(runs, tmp_path):
    run = runs["StoryLlama"]

    @EXAMPLES
    @given(argv=smolhub_mistakes(run, tmp_path / "out"))
    def check(argv):
        refused_and_unchanged(cli.main, argv, run)
        assert not (tmp_path / "out").exists()
    check()


@pytest.mark.parametrize("name", ["StoryLlama", "StoryKimi"])
def test_smolhub_damaged_checkpoint(name, damaged, tmp_path):
    run, out = damaged(name), tmp_path / "out"
    for argv in (["export", run, out], ["export", run, out, "--format", "gguf"], ["generate", run, "--prompt", "Once"],
                 ["push", run, "me/x", "--dry-run", out], ["quantize", run, out, "--no-eval"]):
        refused_and_unchanged(cli.main, argv, tmp_path)
        assert not out.exists()


def test_smolhub_compare_damaged_metrics(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["StoryLlama"], run)
    (run / "metrics.csv").write_bytes(b"\xff\xfe not,a\ncsv")
    refused_and_unchanged(cli.main, ["compare", run, "--plot", "none"], run)
    refused_and_unchanged(cli.main, ["compare", tmp_path / "no-such-run"], run)


# --- smol_experiments pipelines ------------------------------------------------------------------------
def test_pipelines_bad_flags(tmp_path):
    (tmp_path / "file").write_text("x")
    cases = {
        moe_pipeline.main: [["--seed", "-1"], ["--seed", "x"], ["--cpt-args", "--steps 'unclosed"],
                            ["--output", tmp_path / "file"], ["--no-such-flag"], ["--quick=yes"]],
        alignment_pipeline.main: [["--max-samples", "0"], ["--dpo-args", "--beta 'unclosed"],
                                  ["--output-dir", tmp_path / "file"], ["--no-such-flag"], ["--quick=yes"]],
    }
    for main, mistakes in cases.items():
        for bad in mistakes:
            refused_and_unchanged(main, bad, tmp_path)


@pytest.mark.parametrize("module", _experiment_modules())
def test_every_pipeline_stage_refuses_unknown_flags_and_bad_values(module, tmp_path):
    """Each stage's own command line (discovered as test_help discovers them) parses before it does any work."""
    main = importlib.import_module(module).main
    refused_and_unchanged(main, ["--no-such-flag"], tmp_path)
    refused_and_unchanged(main, ["--seed", "many"], tmp_path)
