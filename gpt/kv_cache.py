"""A preallocated key/value cache, the interface nanochat's attention expects (get_pos, insert_kv)."""
from __future__ import annotations

import torch


class KVCache:
    """Keys and values of every layer for `batch_size` rows, up to `seq_len` positions.

    Storage is [n_layer, 2, B, Hkv, seq_len, hd], allocated once. `insert_kv` writes the new keys/values of one layer
    at [pos, pos + T) and returns views of everything written so far; the position advances after the last layer,
    so every layer of one forward sees the same T0 (this is what offsets the rotary slice in GPT.forward).
    """

    def __init__(self, batch_size: int, num_heads: int, seq_len: int, head_dim: int, num_layers: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.kv = torch.zeros((num_layers, 2, batch_size, num_heads, seq_len, head_dim), device=device, dtype=dtype)
        self.pos = 0

    @property
    def seq_len(self) -> int:
        return self.kv.size(4)

    def get_pos(self) -> int:
        return self.pos

    def reset(self) -> None:
        self.pos = 0

    def insert_kv(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t0, t1 = self.pos, self.pos + k.size(2)
        if t1 > self.seq_len:
            raise ValueError(f"KV cache full: {t1} positions needed, {self.seq_len} allocated")
        self.kv[layer_idx, 0, :, :, t0:t1] = k
        self.kv[layer_idx, 1, :, :, t0:t1] = v
        if layer_idx == self.kv.size(0) - 1:
            self.pos = t1
        return self.kv[layer_idx, 0, :, :, :t1], self.kv[layer_idx, 1, :, :, :t1]
