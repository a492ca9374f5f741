"""A checkpoint that is not there: the message names the missing folder, and the Hub only when a repo id could
be meant."""

import pytest

from smolhub_hub.errors import UserError
from smolhub_hub.inference import load_model


@pytest.fixture
def cwd_with_runs(tmp_path, monkeypatch):
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("source", ["runs/StoryLlama-quick", "runs/a/b", "./model", "no-such-folder"])
def test_a_missing_local_folder_is_reported_as_missing(cwd_with_runs, source):
    with pytest.raises(UserError) as e:
        load_model(source)
    assert "does not exist" in str(e.value) and "Hub" not in str(e.value)


def test_a_possible_hub_id_says_both_where_it_looked(cwd_with_runs):
    with pytest.raises(UserError) as e:  # the tests run with HF_HUB_OFFLINE=1
        load_model("someone/storyllama")
    message = str(e.value)
    assert f"neither a folder here ({cwd_with_runs})" in message and "HF_HUB_OFFLINE is set" in message
