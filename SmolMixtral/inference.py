"""Generate text with a SmolMixtral checkpoint.

    python inference.py --checkpoint ../runs/SmolMixtral-quick --prompt "Once upon a time" [--greedy] [--show-routing]

    from SmolMixtral.inference import load_model, generate_text
    model = load_model("runs/SmolMixtral-quick")          # or a Hub repo id
    print(generate_text(model, "Once upon a time", max_length=100, temperature=0.7))
"""

from smolhub_hub import inference
from smolhub_hub.inference import generate_text, stream_text  # noqa: F401  (the documented API)
from SmolMixtral.routing import show_routing

FAMILY = "SmolMixtral"


def load_model(path_or_hub_id: str, device: str = "auto"):
    return inference.load_model(path_or_hub_id, family=FAMILY, device=device)


def main(family: str = FAMILY, argv=None):
    """The shared CLI plus `--show-routing`; StoryMixtral's inference.py calls this with its name."""
    parser = inference.build_parser(family)
    parser.add_argument("--show-routing", action="store_true",
                        help="after each text, list the experts every generated token went to, per layer")
    inference.main(family, argv, parser=parser, after_generate=show_routing)


if __name__ == "__main__":
    main()
