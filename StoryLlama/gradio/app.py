"""StoryLlama demo: `python app.py --checkpoint ../../runs/StoryLlama-quick` (binds 127.0.0.1:7860)."""

from smolhub_hub.demo import main
from StoryLlama.config import FAMILY

if __name__ == "__main__":
    main(FAMILY)
