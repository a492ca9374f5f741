"""Train SmolMixtral: `python trainer.py --preset quick`, or `torchrun --nproc_per_node=N trainer.py`.

Per-layer routing telemetry (expert load, share of experts active, router entropy, balance loss) is
logged with the losses, and `expert_load.png` is written next to the checkpoints.
"""

from smolhub_hub.training import main
from SmolMixtral.config import FAMILY

if __name__ == "__main__":
    main(FAMILY)
