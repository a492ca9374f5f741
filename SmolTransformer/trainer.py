"""Train SmolTransformer: `python trainer.py --preset quick`, or `torchrun --nproc_per_node=N trainer.py`.

Start from OpenAI's GPT-2 weights (nanoGPT's init_from='gpt2') with `--init-from gpt2` or a local
transformers folder.
"""

from smolhub_hub.training import main
from SmolTransformer.config import FAMILY

if __name__ == "__main__":
    main(FAMILY)
