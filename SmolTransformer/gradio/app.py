"""Gradio demo for a SmolTransformer checkpoint: `python app.py --checkpoint PATH` (bound to 127.0.0.1)."""

from smolhub_hub.demo import main
from SmolTransformer.config import FAMILY

if __name__ == "__main__":
    main(FAMILY)
