"""StoryLlama configuration: the architecture, its training defaults, and named presets."""

from __future__ import annotations

import math
from dataclasses import dataclass

from smolhub_hub.config import DataConfig, ModelFamily, TrainConfig, opt
from smolhub_hub.modeling import ConfigMixin


def llama_ffn_hidden(dim: int, multiple_of: int = 64) -> int:
    """Llama's SwiGLU width: 2/3 of 4 * dim (the parameters of a 4 * dim GELU MLP), rounded up to a multiple of 64."""
    return multiple_of * math.ceil(int(2 * 4 * dim / 3) / multiple_of)


@dataclass
class StoryLlamaConfig(ConfigMixin):
    vocab_size: int = opt(50304, "vocabulary size (set from the tokenizer when training)", min=1)
    dim: int = opt(768, "model width", min=1)
    n_layers: int = opt(8, "transformer blocks", min=1)
    n_heads: int = opt(12, "query heads", min=1)
    n_kv_heads: int = opt(4, "key/value heads: 1 = multi-query, n_heads = multi-head, between = grouped-query", min=1)
    ffn_hidden: int = opt(0, "SwiGLU hidden width (0 = Llama's 8/3 * dim rounded to 64)", min=0)
    max_seq_len: int = opt(512, "context length", min=1)
    rope_base: float = opt(10000.0, "RoPE base frequency", above=0)
    norm_eps: float = opt(1e-5, "RMSNorm epsilon", above=0)
    dropout: float = opt(0.0, "dropout (training only)", training=True, min=0, below=1)
    tie_embeddings: bool = opt(True, "share the token embedding with the output head")
    attn_impl: str = opt("sdpa", "attention kernel: sdpa (FlashAttention on GPU) or flash_attn (the package)",
                         choices=["sdpa", "flash_attn"], training=True)

    @property
    def ffn_width(self) -> int:
        return self.ffn_hidden or llama_ffn_hidden(self.dim)

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


PRESETS = {
    # Trains on the built-in corpus on a 2-core CPU in a few minutes and visibly learns.
    "quick": {
        "model": {"dim": 128, "n_layers": 4, "n_heads": 4, "n_kv_heads": 2, "max_seq_len": 128},
        "train": {"max_steps": 400, "batch_size": 16, "total_batch_tokens": 0, "lr": 3e-3, "min_lr": 3e-4,
                  "warmup_steps": 40, "weight_decay": 0.01, "eval_interval": 100, "eval_batches": 10,
                  "sample_interval": 200, "save_interval": 200, "log_interval": 10},
        "data": {"dataset": "builtin", "tokenizer": "bpe", "vocab_size": 2048, "builtin_stories": 6000},
    },
    # llama2.c's 15M model: dim 288, 6 layers, 6 heads, context 256.
    "llama2c-15m": {
        "model": {"dim": 288, "n_layers": 6, "n_heads": 6, "n_kv_heads": 6, "ffn_hidden": 768, "max_seq_len": 256},
        "train": {"lr": 5e-4, "min_lr": 5e-5, "warmup_steps": 1000, "batch_size": 128},
    },
}

FAMILY = ModelFamily(
    name="StoryLlama",
    model_config=StoryLlamaConfig,
    model="StoryLlama.model:StoryLlama",
    # 524,288 tokens per optimizer step, as in the reference run (2 x A100).
    train=TrainConfig(total_batch_tokens=524_288, max_steps=5000, batch_size=32),
    data=DataConfig(dataset="roneneldan/TinyStories", tokenizer="gpt2"),
    presets=PRESETS,
    converter="StoryLlama.convert",
    hf_architecture="LlamaForCausalLM",
    description="Llama-style: RoPE, SwiGLU, GQA/MQA, RMSNorm (~88M, TinyStories).",
)
