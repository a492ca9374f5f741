"""Small things that were accepted and ignored, or decided per rank: each is now refused in one line, or decided
together. A flag that does nothing (--outtype without GGUF, another --preset on --resume), a quantized folder's
tokenizer swapped for another, one rank's non-finite loss, a second rank's metrics.csv."""

import json
import multiprocessing
import shutil

import pytest
import torch

from smolhub_hub import cli
from smolhub_hub.errors import UserError
from smolhub_hub.training import distributed, engine, main
from StoryLlama.config import FAMILY
from tests.reliability.conftest import GOOD_RUN_STEPS as STEPS
from tests.reliability.conftest import assert_clean, latest, run_args, run_cli
from tests.reliability.test_bad_checkpoints import _other_tokenizer


def test_outtype_without_gguf_is_refused_before_anything_is_written(good_run, tmp_path):
    code, err = run_cli(cli.main, ["export", str(good_run), str(tmp_path / "hf"), "--outtype", "q8_0"])
    assert_clean(code, err)
    assert code == 2 and "--outtype q8_0 is a GGUF weight type; add --format gguf" in err, err
    assert not (tmp_path / "hf").exists()


def test_another_preset_on_resume_is_refused_and_the_run_keeps_its_own(good_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    assert json.loads((latest(run) / "config.json").read_text())["preset"] == "quick"
    code, err = run_cli(lambda a: main(FAMILY, a), [*run_args("StoryLlama", run, STEPS + 1, ["--resume"]),
                                                    "--preset", "default"])
    assert code == 2 and "--preset default differs from the run's preset quick" in err, err
    args = [a for a in run_args("StoryLlama", run, STEPS + 1, ["--resume"]) if a not in ("--preset", "quick")]
    assert run_cli(lambda a: main(FAMILY, a), args)[0] == 0  # no --preset: the run's own, recorded again
    assert json.loads((latest(run) / "config.json").read_text())["preset"] == "quick"


def test_a_quantized_folder_with_another_tokenizer_is_refused(good_run, tmp_path):
    from smolhub_hub.quantize import quantize_checkpoint
    from smolhub_hub.quantized_folder import load_quantized

    quantize_checkpoint(str(good_run), tmp_path / "q", evaluate=False, bench_tokens=2)
    _other_tokenizer(tmp_path / "q")
    with pytest.raises(UserError, match="the tokenizer is not the one the weights were trained with"):
        load_quantized(tmp_path / "q")


def _rank(rank: int, store: str, results):
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        info = distributed.DistInfo(rank=rank, world_size=2)
        results.put((rank, info.all_true(torch.tensor(rank == 0)), info.all_true(torch.tensor(True))))
    finally:
        torch.distributed.destroy_process_group()


def test_a_non_finite_loss_on_one_rank_skips_the_step_on_every_rank(tmp_path):
    """Two gloo processes on the CPU: rank 1 alone sees a bad step; both skip it, and both take a good one."""
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_rank, args=(r, tmp_path / "store", results)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert sorted(results.get(timeout=5) for _ in procs) == [(0, False, True), (1, False, True)]


def test_only_rank_0_writes_metrics(tmp_path, monkeypatch):
    """A second rank builds its Trainer for a new run: it writes no metrics.csv (rank 0 owns it)."""
    from smolhub_hub.training import configs_from_cli

    monkeypatch.setattr(distributed, "setup", lambda device: distributed.DistInfo(rank=1, world_size=1))
    engine.Trainer(FAMILY, *configs_from_cli(FAMILY, run_args("StoryLlama", tmp_path / "run", STEPS)))
    assert not (tmp_path / "run" / "metrics.csv").exists()
