"""Train StoryKimi: `python trainer.py --preset quick`, or `torchrun --nproc_per_node=N trainer.py`.

`--optimizer muon` (default): Muon for the hidden matrices at --muon-lr (or at AdamW's --lr with
`--muon-adjust-lr match_rms_adamw`), AdamW at --lr for the rest; `--optimizer adamw` for comparison.
"""

from smolhub_hub.training import main
from StoryKimi.config import FAMILY

if __name__ == "__main__":
    main(FAMILY)
