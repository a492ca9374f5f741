"""Generate stories with a StoryLlama checkpoint.

    python inference.py --checkpoint ../runs/StoryLlama-quick --prompt "Once upon a time" [--greedy]

    from StoryLlama.inference import load_model, generate_text
    model = load_model("runs/StoryLlama-quick")          # or a Hub repo id
    print(generate_text(model, "Once upon a time", max_length=100, temperature=0.7))
"""

from smolhub_hub import inference
from smolhub_hub.inference import generate_text, stream_text  # noqa: F401  (the documented API)
from StoryLlama.config import FAMILY


def load_model(path_or_hub_id: str, device: str = "auto"):
    return inference.load_model(path_or_hub_id, family=FAMILY, device=device)


if __name__ == "__main__":
    inference.main(FAMILY)
