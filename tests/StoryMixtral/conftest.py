import pytest

from tests.helpers import run_cli, tiny_run_args
from tests.SmolMixtral.conftest import SMALL


@pytest.fixture(scope="session")
def story_run(tmp_path_factory):
    """A tiny StoryMixtral trained for a few steps from its quick preset, through its trainer CLI."""
    out = tmp_path_factory.mktemp("storymixtral") / "run"
    run_cli("StoryMixtral/trainer.py", *tiny_run_args(out, steps=6, extra=SMALL), check=True)
    return out
