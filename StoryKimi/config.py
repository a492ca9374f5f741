"""StoryKimi configuration: DeepSeek-V3 / Kimi-K2 architecture at small scale, its training defaults, presets.

Field names follow DeepSeek-V3 where it has one (kv_lora_rank, qk_rope_head_dim, routed_scaling_factor...)
so that a DeepSeek user recognises them and `StoryKimi/convert.py` maps them one to one.
"""

from __future__ import annotations

from dataclasses import dataclass

from smolhub_hub.config import DataConfig, ModelFamily, TrainConfig, opt, out_of_range
from smolhub_hub.errors import UserError
from smolhub_hub.modeling import ConfigMixin


@dataclass
class StoryKimiConfig(ConfigMixin):
    # One name per width across the families (until the issue-15 redesign these were moe_hidden / dense_hidden)
    RENAMED = {"moe_hidden": "expert_hidden", "dense_hidden": "ffn_hidden"}

    vocab_size: int = opt(32000, "vocabulary size (set from the tokenizer when training)", min=1)
    dim: int = opt(512, "model width", min=1)
    n_layers: int = opt(10, "transformer blocks", min=1)
    n_heads: int = opt(8, "attention heads", min=1)
    # --- multi-head latent attention (DeepSeek-V2/V3) ---
    q_lora_rank: int = opt(0, "query latent rank (0 = a plain query projection, as in DeepSeek-V2-Lite)", min=0)
    kv_lora_rank: int = opt(128, "key/value latent rank: the part of the KV cache shared by all heads", min=1)
    qk_nope_head_dim: int = opt(64, "per-head query/key width without RoPE (up-projected from the latent)", min=1)
    qk_rope_head_dim: int = opt(32, "decoupled RoPE query/key width (the key part is shared by all heads)", min=2)
    v_head_dim: int = opt(64, "per-head value width", min=1)
    # --- mixture of experts (DeepSeek-V3) ---
    n_experts: int = opt(8, "routed experts per MoE layer", min=1)
    top_k: int = opt(2, "routed experts per token", min=1)
    n_shared_experts: int = opt(1, "shared experts every token goes through (0 = none)", min=0)
    expert_hidden: int = opt(1088, "SwiGLU width of each routed (and each shared) expert", min=1)
    first_k_dense: int = opt(1, "the first K blocks use a dense SwiGLU instead of MoE (DeepSeek's "
                                "first_k_dense_replace; 0 = every block is MoE)", min=0)
    ffn_hidden: int = opt(2816, "SwiGLU width of the dense blocks", min=1)
    n_group: int = opt(1, "expert groups for group-limited routing (1 = off)", min=1)
    topk_group: int = opt(1, "groups a token may route into", min=1)
    routed_scaling_factor: float = opt(1.0, "scale on the routed experts' mixing weights (DeepSeek-V3: 2.5)", above=0)
    norm_topk_prob: bool = opt(True, "normalise the top-k sigmoid scores to sum to 1")
    bias_update_rate: float = opt(1e-3, "aux-loss-free balancing: bias step gamma per optimizer step (0 = off)",
                                 training=True, min=0)
    seq_aux_loss_coef: float = opt(1e-4, "sequence-wise balance loss coefficient alpha (0 = off)",
                                  training=True, min=0)
    moe_impl: str = opt("grouped", "expert computation: grouped (grouped_mm) or loop (reference)",
                        choices=["grouped", "loop"], training=True)
    # --- the rest of the transformer ---
    max_seq_len: int = opt(512, "context length (RoPE: longer prompts still work)", min=1)
    rope_base: float = opt(10000.0, "RoPE base frequency", above=0)
    norm_eps: float = opt(1e-6, "RMSNorm epsilon", above=0)
    dropout: float = opt(0.0, "dropout (training only)", training=True, min=0, below=1)
    tie_embeddings: bool = opt(False, "share the token embedding with the output head (DeepSeek does not)")
    # --- Kimi K2's MuonClip (Muon's own settings are TrainConfig's: every family can use Muon) ---
    qk_clip_tau: float = opt(0.0, "QK-clip (Kimi K2 MuonClip): rescale a head's query/key weights when its "
                                  "max attention logit exceeds tau after a step (0 = off; K2 uses 100)",
                              training=True, min=0)

    def __post_init__(self):
        if out_of_range(self):  # refused by check_ranges, naming the flag or the damaged file
            return
        problems = []
        if self.top_k > self.n_experts:
            problems.append(f"--top-k {self.top_k} exceeds --n-experts {self.n_experts}")
        if self.n_experts % self.n_group:
            problems.append(f"--n-experts {self.n_experts} must be a multiple of --n-group {self.n_group}")
        elif self.n_group > 1 and self.n_experts // self.n_group < 2:
            problems.append("group-limited routing scores a group by its top-2 experts: use >= 2 experts per group")
        if not 1 <= self.topk_group <= self.n_group:
            problems.append(f"--topk-group {self.topk_group} must be between 1 and --n-group {self.n_group}")
        if self.qk_rope_head_dim % 2:
            problems.append(f"--qk-rope-head-dim {self.qk_rope_head_dim} must be even")
        if problems:
            raise UserError("; ".join(problems))

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    def is_moe_layer(self, layer_idx: int) -> bool:
        return layer_idx >= self.first_k_dense


PRESETS = {
    # Trains on the built-in corpus on a 2-core CPU in a few minutes and visibly learns.
    "quick": {
        "model": {"dim": 128, "n_layers": 4, "n_heads": 4, "kv_lora_rank": 32, "qk_nope_head_dim": 32,
                  "qk_rope_head_dim": 16, "v_head_dim": 32, "n_experts": 8, "top_k": 2, "expert_hidden": 128,
                  "ffn_hidden": 384, "max_seq_len": 128, "tie_embeddings": True},
        "train": {"max_steps": 300, "batch_size": 16, "total_batch_tokens": 0, "lr": 6e-3, "min_lr": 6e-4,
                  "warmup_steps": 30, "weight_decay": 0.01, "optimizer": "muon", "muon_lr": 0.05,
                  "eval_interval": 100, "eval_batches": 10,
                  "sample_interval": 150, "save_interval": 150, "log_interval": 10},
        "data": {"dataset": "builtin", "tokenizer": "bpe", "vocab_size": 2048, "builtin_stories": 6000},
    },
}

FAMILY = ModelFamily(
    name="StoryKimi",
    model_config=StoryKimiConfig,
    model="StoryKimi.model:StoryKimi",
    # 524,288 tokens per optimizer step, as in the reference run; Muon 0.02 + AdamW 6e-4.
    train=TrainConfig(total_batch_tokens=524_288, max_steps=5000, batch_size=32, optimizer="muon"),
    data=DataConfig(dataset="roneneldan/TinyStories", tokenizer="hf-internal-testing/llama-tokenizer"),
    presets=PRESETS,
    converter="StoryKimi.convert",
    hf_architecture="DeepseekV3ForCausalLM",
    description="DeepSeek-V3 / Kimi-K2 style: latent attention (MLA), MoE with a shared expert and "
                "aux-loss-free balancing, Muon (~180M total, TinyStories).",
)
