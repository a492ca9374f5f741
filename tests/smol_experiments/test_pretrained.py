"""The pretrained model an experiment starts from: `smollm2` names the packaged GGUF, a path always wins."""

from pathlib import Path

import pytest

from smol_experiments.pretrained import loader_args
from smolhub_hub.errors import UserError
from tests.real.conftest import needs_real_model


@needs_real_model
def test_smollm2_is_the_gguf_the_package_ships():
    folder, kwargs = loader_args("smollm2")
    assert kwargs == {"gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
    assert (Path(folder) / kwargs["gguf_file"]).stat().st_size > 50_000_000


def test_a_folder_called_smollm2_is_that_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "smollm2").mkdir()
    assert loader_args("smollm2") == ("smollm2", {})


def test_a_missing_gguf_is_one_line(tmp_path):
    with pytest.raises(UserError, match="no such .gguf file"):
        loader_args(str(tmp_path / "model.gguf"))


@needs_real_model
def test_the_alignment_pipeline_takes_smollm2_as_its_packaged_gguf(tmp_path, monkeypatch):
    from smol_experiments.alignment import run_pipeline

    converted = []
    monkeypatch.setattr(run_pipeline, "write_folder_once", lambda folder, write: converted.append(folder) or folder)
    folder = run_pipeline.base_folder("smollm2", tmp_path)
    assert converted and folder == str(converted[0]) and converted[0].name.startswith("base-")
