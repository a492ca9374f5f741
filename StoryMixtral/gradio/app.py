"""StoryMixtral demo: `python app.py --checkpoint ../../runs/StoryMixtral-quick` (binds 127.0.0.1:7860)."""

from smolhub_hub.demo import main
from StoryMixtral.config import FAMILY

if __name__ == "__main__":
    main(FAMILY)
