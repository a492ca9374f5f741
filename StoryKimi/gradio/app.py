"""StoryKimi demo: `python app.py --checkpoint ../../runs/StoryKimi-quick` (binds 127.0.0.1:7860)."""

from smolhub_hub.demo import main
from StoryKimi.config import FAMILY

if __name__ == "__main__":
    main(FAMILY)
