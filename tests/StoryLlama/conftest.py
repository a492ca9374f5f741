import pytest

from tests.helpers import run_cli, tiny_run_args


@pytest.fixture(scope="session")
def llama_run(tmp_path_factory):
    """A tiny StoryLlama trained for a few steps through the real trainer CLI."""
    out = tmp_path_factory.mktemp("llama") / "run"
    run_cli("StoryLlama/trainer.py", *tiny_run_args(out, steps=10, extra=["--dim", "64", "--n-layers", "2"]),
            check=True)
    return out
