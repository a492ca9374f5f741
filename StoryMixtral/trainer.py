"""Train StoryMixtral: `python trainer.py --preset quick`, or `torchrun --nproc_per_node=N trainer.py`."""

from smolhub_hub.training import main
from StoryMixtral.config import FAMILY

if __name__ == "__main__":
    main(FAMILY)
