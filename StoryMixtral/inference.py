"""Generate stories with a StoryMixtral checkpoint (SmolMixtral's CLI, `--show-routing` included).

    python inference.py --checkpoint ../runs/StoryMixtral-quick --prompt "Once upon a time" [--show-routing]
"""

from smolhub_hub import inference
from smolhub_hub.inference import generate_text, stream_text  # noqa: F401  (the documented API)
from SmolMixtral.inference import main

FAMILY = "StoryMixtral"


def load_model(path_or_hub_id: str, device: str = "auto"):
    return inference.load_model(path_or_hub_id, family=FAMILY, device=device)


if __name__ == "__main__":
    main(FAMILY)
