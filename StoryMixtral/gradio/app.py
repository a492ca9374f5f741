"""StoryMixtral demo: `python app.py --checkpoint ../../runs/StoryMixtral-quick` (binds 127.0.0.1:7860)."""

from smolhub_hub.demo import main

if __name__ == "__main__":
    main("StoryMixtral")
