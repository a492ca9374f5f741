"""Generate stories with a StoryKimi checkpoint (the latent KV cache is used automatically).

    python inference.py --checkpoint ../runs/StoryKimi-quick --prompt "Once upon a time" [--greedy] [--show-routing]

    from StoryKimi.inference import load_model, generate_text
    model = load_model("runs/StoryKimi-quick")          # or a Hub repo id
    print(generate_text(model, "Once upon a time", max_length=100, temperature=0.7))
"""

from smolhub_hub import inference
from smolhub_hub.inference import generate_text, stream_text  # noqa: F401  (the documented API)
from StoryKimi.config import FAMILY


def load_model(path_or_hub_id: str, device: str = "auto"):
    return inference.load_model(path_or_hub_id, family=FAMILY, device=device)


if __name__ == "__main__":
    inference.main(FAMILY, show_routing=True)
