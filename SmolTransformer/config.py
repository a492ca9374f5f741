"""SmolTransformer configuration: the architecture, its training defaults, and named presets."""

from __future__ import annotations

from dataclasses import dataclass

from smolhub_hub.config import DataConfig, ModelFamily, TrainConfig, opt, out_of_range
from smolhub_hub.errors import UserError
from smolhub_hub.modeling import ConfigMixin


@dataclass
class SmolTransformerConfig(ConfigMixin):
    vocab_size: int = opt(50304, "vocabulary size (set from the tokenizer when training)", min=1)
    dim: int = opt(768, "model width (nanoGPT's n_embd)", min=1)
    n_layers: int = opt(16, "transformer blocks", min=1)
    n_heads: int = opt(12, "attention heads", min=1)
    ffn_hidden: int = opt(0, "MLP hidden width (0 = 4 * dim)", min=0)
    max_seq_len: int = opt(1024, "context length: the number of learned positions (nanoGPT's block_size)", min=1)
    norm: str = opt("rmsnorm", "normalisation layer", choices=["rmsnorm", "layernorm"])
    norm_eps: float = opt(1e-5, "normalisation epsilon", above=0)
    bias: bool = opt(False, "biases in linear layers and LayerNorm (GPT-2 has them)")
    gelu_approximate: str = opt("tanh", "GELU form: tanh (GPT-2's gelu_new) or none (exact erf)",
                                choices=["tanh", "none"])
    dropout: float = opt(0.0, "dropout on embeddings, attention and residual branches (training only)",
                         training=True, min=0, below=1)
    tie_embeddings: bool = opt(True, "share the token embedding with the output head")
    attn_impl: str = opt("sdpa", "attention kernel: sdpa (FlashAttention on GPU) or flash_attn (the package)",
                         choices=["sdpa", "flash_attn"], training=True)

    def __post_init__(self):
        if out_of_range(self):  # refused by check_ranges, naming the flag or the damaged file
            return
        if self.dim % self.n_heads:
            raise UserError(f"--dim {self.dim} must be a multiple of --n-heads {self.n_heads}")

    @property
    def ffn_width(self) -> int:
        return self.ffn_hidden or 4 * self.dim

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def validate(self, seq_len: int = 0) -> SmolTransformerConfig:
        """Positions are learned, so nothing can run past `max_seq_len`: say so before training starts."""
        if seq_len > self.max_seq_len:
            raise UserError(f"--seq-len {seq_len} exceeds the {self.max_seq_len} learned positions of "
                            f"SmolTransformer; lower --seq-len or train a new model with --max-seq-len {seq_len}")
        return self


def _gpt2(dim: int, n_layers: int, n_heads: int) -> dict:
    """Exactly OpenAI's GPT-2 at one of its sizes (HF ids gpt2, gpt2-medium, gpt2-large, gpt2-xl)."""
    return {"model": {"vocab_size": 50257, "dim": dim, "n_layers": n_layers, "n_heads": n_heads,
                      "ffn_hidden": 0, "max_seq_len": 1024, "norm": "layernorm", "bias": True,
                      "gelu_approximate": "tanh", "tie_embeddings": True},
            "data": {"tokenizer": "gpt2"}}


PRESETS = {
    # Trains on the built-in corpus on a 2-core CPU in a few minutes and visibly learns.
    "quick": {
        "model": {"dim": 128, "n_layers": 4, "n_heads": 4, "max_seq_len": 128},
        "train": {"max_steps": 400, "batch_size": 16, "total_batch_tokens": 0, "lr": 3e-3, "min_lr": 3e-4,
                  "warmup_steps": 40, "weight_decay": 0.01, "eval_interval": 100, "eval_batches": 10,
                  "sample_interval": 200, "save_interval": 200, "log_interval": 10,
                  "sample_prompt": "Once upon a time"},
        "data": {"dataset": "builtin", "dataset_config": "", "tokenizer": "bpe", "vocab_size": 2048,
                 "builtin_stories": 6000},
    },
    "gpt2": _gpt2(768, 12, 12),            # 124M
    "gpt2-medium": _gpt2(1024, 24, 16),    # 350M
    "gpt2-large": _gpt2(1280, 36, 20),     # 774M
    "gpt2-xl": _gpt2(1600, 48, 25),        # 1558M
}

FAMILY = ModelFamily(
    name="SmolTransformer",
    model_config=SmolTransformerConfig,
    model="SmolTransformer.model:SmolTransformer",
    # build-nanogpt's GPT-2 recipe: 2**19 tokens per step, 19,073 steps = one pass over FineWeb sample-10BT.
    train=TrainConfig(total_batch_tokens=524_288, max_steps=19_073, warmup_steps=715, batch_size=16,
                      lr=6e-4, min_lr=6e-5, sample_prompt="The meaning of life is"),
    data=DataConfig(dataset="HuggingFaceFW/fineweb", dataset_config="sample-10BT", tokenizer="gpt2"),
    presets=PRESETS,
    converter="SmolTransformer.convert",
    hf_architecture="GPT2LMHeadModel",
    description="Classic decoder: learned positions, multi-head attention, GELU MLP (~150M, FineWeb).",
)
