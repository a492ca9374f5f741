"""Generate text with a SmolTransformer checkpoint.

    python inference.py --checkpoint ../runs/SmolTransformer-quick --prompt "Once upon a time" [--greedy]

    from SmolTransformer.inference import load_model, generate_text
    model = load_model("runs/SmolTransformer-quick")          # or a Hub repo id
    print(generate_text(model, "The meaning of life is", max_length=100, temperature=0.7))
"""

from smolhub_hub import inference
from smolhub_hub.inference import generate_text, stream_text  # noqa: F401  (the documented API)
from SmolTransformer.config import FAMILY


def load_model(path_or_hub_id: str, device: str = "auto"):
    return inference.load_model(path_or_hub_id, family=FAMILY, device=device)


if __name__ == "__main__":
    inference.main(FAMILY)
