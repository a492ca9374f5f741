"""inference.py: the documented API, the CLI, and its error messages."""

import pytest

from smolhub_hub.errors import UserError
from StoryLlama.inference import generate_text, load_model
from tests.helpers import run_cli


def test_api_generates_and_is_seeded(llama_run):
    model = load_model(str(llama_run))
    a = generate_text(model, "Once upon a time", max_length=20, temperature=0.7, seed=1)
    assert a.startswith("Once upon a time") and a == generate_text(model, "Once upon a time", max_length=20, seed=1)
    assert generate_text(model, ["Tom went", "Lily saw"], max_length=5, greedy=True)[1].startswith("Lily saw")
    assert generate_text(model, "", max_length=5, greedy=True) is not None
    assert generate_text(model, "naïve 🐱 \x07", max_length=5, top_k=5, top_p=0.9) is not None


def test_cli_greedy_matches_api(llama_run):
    proc = run_cli("StoryLlama/inference.py", "--checkpoint", llama_run, "--prompt", "Tom went", "--greedy",
                   "--max-length", "15", check=True)
    assert proc.stdout.strip() == generate_text(load_model(str(llama_run)), "Tom went", max_length=15, greedy=True)


def test_prompt_longer_than_context(llama_run):
    model = load_model(str(llama_run))
    with pytest.raises(UserError, match="Shorten it"):
        generate_text(model, "Lily went to the park. " * 200, max_length=10)


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "/no/such/run", "--prompt", "x"], "does not exist"),
    (["--checkpoint", "{run}", "--prompt", "x", "--temperature", "-1"], "temperature must be >= 0"),
    (["--checkpoint", "{run}", "--prompt", "x", "--top-p", "2"], "top_p must be in (0, 1]"),
])
def test_cli_errors(llama_run, args, message):
    proc = run_cli("StoryLlama/inference.py", *[a.replace("{run}", str(llama_run)) for a in args])
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_checkpoint_of_another_family_is_refused(llama_run):
    from smolhub_hub.inference import load_model as generic_load
    from SmolMixtral.config import FAMILY as MIXTRAL

    with pytest.raises(UserError, match="is a StoryLlama checkpoint, not SmolMixtral"):
        generic_load(str(llama_run), family=MIXTRAL)
