"""SmolMixtral configuration: the architecture, its training defaults, and named presets.

StoryMixtral reuses `MixtralConfig` with its own defaults (see `StoryMixtral/config.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from smolhub_hub.config import DataConfig, ModelFamily, TrainConfig, opt
from smolhub_hub.modeling import ConfigMixin

LLAMA_TOKENIZER = "hf-internal-testing/llama-tokenizer"  # the Llama-2 tokenizer, no gated access


@dataclass
class MixtralConfig(ConfigMixin):
    vocab_size: int = opt(32000, "vocabulary size (set from the tokenizer when training)", min=1)
    dim: int = opt(512, "model width", min=1)
    n_layers: int = opt(8, "transformer blocks", min=1)
    n_heads: int = opt(8, "query heads", min=1)
    n_kv_heads: int = opt(4, "key/value heads: 1 = multi-query, n_heads = multi-head, between = grouped-query", min=1)
    n_experts: int = opt(8, "experts per MoE layer", min=1)
    top_k: int = opt(2, "experts each token is routed to", min=1)
    expert_hidden: int = opt(1024, "SwiGLU hidden width of one expert", min=1)
    noisy_topk: bool = opt(True, "add learned, softplus-scaled Gaussian noise to router logits (training only)",
                           training=True)
    balance_coef: float = opt(0.01, "weight of the Switch load-balancing loss E * sum_e f_e * P_e (0 = off)",
                             training=True, min=0)
    z_loss_coef: float = opt(0.0, "weight of the router z-loss (ST-MoE; 1e-3 is typical, 0 = off)", training=True,
                             min=0)
    moe_impl: str = opt("grouped", "expert computation: grouped (grouped_mm over tokens sorted by expert) "
                                   "or loop (a Python loop over experts, the reference)", choices=["grouped", "loop"],
                        training=True)
    max_seq_len: int = opt(1024, "context length", min=1)
    rope_base: float = opt(10000.0, "RoPE base frequency", above=0)
    norm_eps: float = opt(1e-5, "RMSNorm epsilon", above=0)
    dropout: float = opt(0.0, "dropout (training only)", training=True, min=0, below=1)
    tie_embeddings: bool = opt(True, "share the token embedding with the output head")
    attn_impl: str = opt("sdpa", "attention kernel: sdpa (FlashAttention on GPU) or flash_attn (the package)",
                         choices=["sdpa", "flash_attn"], training=True)

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


# Presets shared by the Mixtral family (StoryMixtral adds its own on top).
QUICK = {
    # Trains on the built-in corpus on a 2-core CPU in a few minutes and visibly learns.
    "model": {"dim": 128, "n_layers": 4, "n_heads": 4, "n_kv_heads": 2, "n_experts": 8, "top_k": 2,
              "expert_hidden": 192, "max_seq_len": 128},
    "train": {"max_steps": 400, "batch_size": 16, "total_batch_tokens": 0, "lr": 3e-3, "min_lr": 3e-4,
              "warmup_steps": 40, "weight_decay": 0.01, "eval_interval": 100, "eval_batches": 10,
              "sample_interval": 200, "save_interval": 200, "log_interval": 10},
    "data": {"dataset": "builtin", "tokenizer": "bpe", "vocab_size": 2048, "builtin_stories": 6000},
}

PRESETS = {
    "quick": QUICK,
    # The width of the reference code (d=768, 8 layers): 346M total, 119M active (theirs counted 427M
    # because each layer held 8 full attentions).
    "d768": {"model": {"dim": 768, "n_heads": 12, "n_kv_heads": 12, "expert_hidden": 2048}},
}

FAMILY = ModelFamily(
    name="SmolMixtral",
    model_config=MixtralConfig,
    model="SmolMixtral.model:SmolMixtral",
    # 524,288 tokens per optimizer step, as in the reference run.
    train=TrainConfig(total_batch_tokens=524_288, max_steps=13000, batch_size=16),
    data=DataConfig(dataset="roneneldan/TinyStories", tokenizer=LLAMA_TOKENIZER),
    presets=PRESETS,
    converter="SmolMixtral.convert",
    hf_architecture="MixtralForCausalLM",
    description="Mixtral-style sparse MoE: 8 SwiGLU experts, top-2, noisy top-k, load balancing "
                "(~124M total, ~48M active, TinyStories).",
)
