"""Mistakes a user can make end in one clear message, and nothing already on disk is overwritten."""

import json
import os
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from smol_experiments.alignment import build_preference_pairs, cpo, dpo, evaluate, run_pipeline, sft
from smol_experiments.alignment.data import load_gec_examples, load_preference_pairs
from smol_experiments.alignment.fixtures import write_synthetic_gec
from smol_experiments.alignment.run_dir import prepare_output_dir
from smol_experiments.pretrained import load_model_and_tokenizer
from smol_experiments.stages import claim, write_marker
from smolhub_hub.errors import UserError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_gec(tmp_path_factory.mktemp("bad") / "data", num_train=20, num_validation=5)


def test_dataset_without_the_needed_fields(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"source": "Fix: a", "target": "b"}) + "\n")
    with pytest.raises(UserError, match="no field.*src, tgt"):
        load_gec_examples(str(path), "train")
    with pytest.raises(UserError, match="no field.*prompt, chosen, rejected"):
        load_preference_pairs(str(path))


def test_missing_local_files(tmp_path, data):
    with pytest.raises(UserError, match="does not exist"):
        load_gec_examples(str(tmp_path / "nope.jsonl"), "train")
    with pytest.raises(UserError, match="test.jsonl"):
        load_gec_examples(str(data), "test")
    bad = tmp_path / "rows.csv"
    bad.write_text("src,tgt\na,b\n")
    with pytest.raises(UserError, match="unsupported"):
        load_gec_examples(str(bad), "train")


def test_no_network_for_a_hub_id():
    with pytest.raises(UserError, match="Could not load dataset 'grammarly/coedit'.*local JSON"):
        load_gec_examples("grammarly/coedit", "validation")
    with pytest.raises(UserError, match="Could not load model 'HuggingFaceTB/SmolLM-135M'"):
        load_model_and_tokenizer("HuggingFaceTB/SmolLM-135M")


@pytest.mark.parametrize("stage", [sft, dpo, cpo])
def test_output_dir_of_another_stage_is_refused_and_untouched(stage, tmp_path, data):
    out = tmp_path / "run"
    out.mkdir()
    other = "sft" if stage is not sft else "dpo"
    write_marker(out, {"stage": other, "done": True})
    (out / "model.safetensors").write_bytes(b"precious")
    argv = ["--model", str(tmp_path / "missing-model"), "--dataset", str(data), "--output-dir", str(out)]
    with pytest.raises(UserError, match=f"holds a '{other}' run"):
        prepare_output_dir(out, stage.STAGE, {})
    before = sorted((p.name, p.read_bytes()) for p in out.iterdir())
    with pytest.raises(UserError):
        stage.run(argv)
    assert sorted((p.name, p.read_bytes()) for p in out.iterdir()) == before


def test_unknown_or_finished_output_dirs_are_refused(tmp_path):
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        prepare_output_dir(stray, "sft", {})
    finished = tmp_path / "finished"
    finished.mkdir()
    write_marker(finished, {"stage": "sft", "done": True})
    with pytest.raises(UserError, match="finished sft"):
        prepare_output_dir(finished, "sft", {})
    with pytest.raises(UserError, match="evaluation will not write"):
        evaluate.claim_eval_dir(finished)
    with pytest.raises(UserError, match="holds a 'sft' run"):
        claim(finished, build_preference_pairs.STAGE, {}, overwrite=True, flag="--output-dir")


@pytest.mark.parametrize("run, extra", [
    (sft.run, []), (build_preference_pairs.run, ["--model", "m"]), (dpo.run, ["--model", "m", "--dataset", "d"]),
    (cpo.run, ["--model", "m", "--dataset", "d"]), (evaluate.run, ["--models", "a=b"]), (run_pipeline.run, []),
])
def test_max_samples_zero(run, extra, tmp_path):
    with pytest.raises(UserError, match="--max-samples: expected a positive integer, got 0"):
        run(["--max-samples", "0", "--output-dir", str(tmp_path / "out"), *extra])
    assert not (tmp_path / "out").exists()


def test_cli_prints_one_line_and_exits_2(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "smol_experiments.alignment.sft", "--output-dir", str(tmp_path / "o")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: Could not load dataset 'grammarly/coedit'")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("main, argv, flag", [
    (run_pipeline.main, ["--dpo-args", "--beta '0.5"], "--dpo-args"),  # an unclosed quote
    (run_pipeline.main, ["--sft-args", "--epochs 2 \"", "--quick"], "--sft-args"),
    (run_pipeline.main, ["--eval-samples", "-3"], "--eval-samples"),
    (sft.main, ["--learning-rate", "0"], "--learning-rate"),
    (sft.main, ["--lr-scheduler", "cosnie"], "--lr-scheduler"),
    (sft.main, ["--seed", "-1"], "--seed"),
    (sft.main, ["--warmup", "-0.1"], "--warmup"),
    (sft.main, ["--batch-size", "two"], "--batch-size"),
    (dpo.main, ["--model", "m", "--dataset", "d", "--beta", "0"], "--beta"),
    (dpo.main, ["--model", "m", "--dataset", "d", "--loss-type", "sigmod"], "--loss-type"),
    (cpo.main, ["--model", "m", "--dataset", "d", "--cpo-alpha", "-1"], "--cpo-alpha"),
    (build_preference_pairs.main, ["--model", "m", "--temperatures", "1.0", "0"], "--temperatures"),
    (build_preference_pairs.main, ["--model", "m", "--chunk-size", "0"], "--chunk-size"),
    (evaluate.main, ["--models", "a=b", "--batch-size", "0"], "--batch-size"),
    (evaluate.main, ["--models", "a=b", "--compare-to", "c"], "--compare-to"),
])
def test_bad_flag_values_give_one_line_naming_the_flag(main, argv, flag, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv + ["--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert flag in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_paths_expand_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    args = sft.build_parser().parse_args(["--output-dir", "~/sft", "--dataset", "~/data", "--model", "~/model"])
    assert (args.output_dir, args.dataset, args.model) == tuple(str(tmp_path / p) for p in ("sft", "data", "model"))
    assert evaluate.parse_models(["sft=~/sft", "base=HuggingFaceTB/SmolLM-135M"]) == {
        "sft": str(tmp_path / "sft"), "base": "HuggingFaceTB/SmolLM-135M"}


@pytest.mark.parametrize("main, argv", [(run_pipeline.main, []), (sft.main, []), (evaluate.main, ["--models", "a=b"])])
def test_an_output_folder_under_a_file_is_one_line(main, argv, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as exit_info:
        main(argv + ["--output-dir", str(tmp_path / "notes.txt" / "run")])
    assert exit_info.value.code == 2 and "notes.txt is a file" in capsys.readouterr().err
