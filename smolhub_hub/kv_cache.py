"""A static key/value cache that lives with the model during generation (gpt-fast style).

Memory is allocated once for the whole generation. A model's forward asks `start = cache.reserve(T)` (the
position of its first new token), each attention layer writes its new keys and values there with `update` and
reads back everything up to `start + T`, and the model calls `cache.advance(T)` once every layer has written.
Architectures that cache something else (StoryKimi caches the MLA latent) subclass it with their own `update`.
"""

from __future__ import annotations

import torch

from smolhub_hub.errors import UserError


class KVCache:
    def __init__(self, n_layers: int, batch_size: int, n_kv_heads: int, max_len: int, head_dim: int,
                 device=None, dtype=torch.float32):
        shape = (n_layers, batch_size, n_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.pos = 0

    def reserve(self, n_new: int) -> int:
        """The position of the first of `n_new` tokens about to be written; one clear error if they do not fit."""
        if self.pos + n_new > self.max_len:
            raise UserError(f"the KV cache holds {self.max_len} tokens; {self.pos} used and {n_new} more asked. "
                            "Shorten the prompt or the number of new tokens.")
        return self.pos

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """k, v: (B, H_kv, T, head_dim) of the new tokens -> this layer's keys and values so far,
        (B, H_kv, pos + T, head_dim)."""
        t = k.shape[2]
        self.k[layer, :, :, self.pos:self.pos + t] = k
        self.v[layer, :, :, self.pos:self.pos + t] = v
        return self.k[layer, :, :, :self.pos + t], self.v[layer, :, :, :self.pos + t]

    def advance(self, n: int):
        self.pos += n

    def nbytes_per_token(self) -> int:
        """Bytes one token occupies across all layers (for comparing cache designs)."""
        return (self.k.element_size() * self.k[:, 0, :, 0].numel()) * 2
