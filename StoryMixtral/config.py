"""StoryMixtral: the SmolMixtral architecture at ~200M total parameters, tuned for stories.

Same model code as SmolMixtral (`SmolMixtral/model.py`); only the defaults, presets and data differ.
"""

from __future__ import annotations

from dataclasses import dataclass

from smolhub_hub.config import DataConfig, ModelFamily, TrainConfig, opt
from SmolMixtral.config import LLAMA_TOKENIZER, QUICK, MixtralConfig


@dataclass
class StoryMixtralConfig(MixtralConfig):
    dim: int = opt(768, "model width", min=1)
    n_heads: int = opt(12, "query heads", min=1)
    n_kv_heads: int = opt(4, "key/value heads: 1 = multi-query, n_heads = multi-head, between = grouped-query", min=1)
    expert_hidden: int = opt(1088, "SwiGLU hidden width of one expert", min=1)
    max_seq_len: int = opt(512, "context length (TinyStories stories are short)", min=1)


PRESETS = {
    "quick": QUICK,
    # A ~57M-total (25M active) variant that trains on one consumer GPU in an afternoon.
    "small": {"model": {"dim": 384, "n_layers": 6, "n_heads": 6, "n_kv_heads": 2, "expert_hidden": 768}},
}

FAMILY = ModelFamily(
    name="StoryMixtral",
    model_config=StoryMixtralConfig,
    model="StoryMixtral.model:StoryMixtral",
    train=TrainConfig(total_batch_tokens=524_288, max_steps=10000, batch_size=32),
    data=DataConfig(dataset="roneneldan/TinyStories", tokenizer=LLAMA_TOKENIZER),
    presets=PRESETS,
    converter="StoryMixtral.convert",
    hf_architecture="MixtralForCausalLM",
    description="The Mixtral family at story scale: 8 experts top-2, noisy top-k, load balancing "
                "(~200M total, ~77M active, TinyStories).",
)
