"""StoryMixtral's inference CLI and Python API on a tiny trained checkpoint: --show-routing, the family check,
generation and export."""

import torch

from tests.helpers import run_cli


def test_story_inference_shows_routing(story_run):
    proc = run_cli("StoryMixtral/inference.py", "--checkpoint", story_run, "--prompt", "Once upon a time",
                   "--greedy", "--max-length", "8", "--show-routing", check=True)
    lines = proc.stdout.strip().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("token"))
    assert "L0" in lines[header] and "L1" in lines[header]
    rows = lines[header + 1:]
    assert 1 <= len(rows) <= 8
    assert all(len([c for c in row.split() if c.startswith("e") and "+" in c]) == 2 for row in rows)


def test_a_checkpoint_of_the_other_family_is_refused(story_run):
    proc = run_cli("SmolMixtral/inference.py", "--checkpoint", story_run, "--prompt", "Hi")
    assert proc.returncode == 2 and "StoryMixtral" in proc.stderr and "Traceback" not in proc.stderr


def test_python_api_and_export(story_run):
    from SmolMixtral.convert import to_hf
    from StoryMixtral.inference import generate_text, load_model

    model = load_model(str(story_run), device="cpu")
    assert type(model).__name__ == "StoryMixtral"
    text = generate_text(model, "Once upon a time", max_length=10, greedy=True)
    assert text.startswith("Once upon a time")
    idx = torch.tensor([[5, 9, 13, 2, 7]])
    with torch.no_grad():
        torch.testing.assert_close(to_hf(model)(idx).logits, model(idx).logits, rtol=0, atol=1e-4)
