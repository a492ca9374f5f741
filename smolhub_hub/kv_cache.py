"""A static key/value cache that lives with the model during generation (gpt-fast style).

Memory is allocated once for the whole generation; each forward writes its new keys and values at
`pos` and reads back everything up to `pos + T`. Architectures that cache something else (StoryKimi
caches the MLA latent) write their own class with the same `pos` / `update` / `advance` shape.
"""

from __future__ import annotations

import torch

from smolhub_hub.errors import UserError


class KVCache:
    def __init__(self, n_layers: int, batch_size: int, n_kv_heads: int, max_len: int, head_dim: int,
                 device=None, dtype=torch.float32, v_head_dim: int | None = None):
        shape = (n_layers, batch_size, n_kv_heads, max_len)
        self.k = torch.zeros(*shape, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros(*shape, v_head_dim or head_dim, device=device, dtype=dtype)
        self.max_len = max_len
        self.pos = 0

    def check_room(self, n_new: int):
        if self.pos + n_new > self.max_len:
            raise UserError(f"the KV cache holds {self.max_len} tokens; {self.pos} used and {n_new} more asked. "
                            "Shorten the prompt or the number of new tokens.")

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        t = k.shape[2]
        self.k[layer, :, :, self.pos:self.pos + t] = k
        self.v[layer, :, :, self.pos:self.pos + t] = v
        return self.k[layer, :, :, :self.pos + t], self.v[layer, :, :, :self.pos + t]

    def advance(self, n: int):
        self.pos += n

    def nbytes_per_token(self) -> int:
        """Bytes one token occupies across all layers (for comparing cache designs)."""
        per = lambda t: t.element_size() * t.shape[0] * t.shape[2] * t.shape[4]  # noqa: E731
        return per(self.k) + per(self.v)
