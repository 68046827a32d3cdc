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


class RowKVCache:
    """A static KV cache where every row has its own position: what a server of unrelated chat sessions needs.

    Row b's next token goes to position pos[b] (a LongTensor [B] on the device). Shapes never change and nothing
    reads a position on the host, so a forward through it can be captured as a CUDA graph and replayed at any
    positions. Per layer, k/v are [B, Hkv, seq_len, hd] (separate tensors, so writes stay in place under
    torch.compile). Two settings, chosen by the caller before a forward:
    - rows: None runs the first `batch` rows (views: the server admits sessions into the lowest free rows and runs
      the smallest batch bucket that holds the highest busy row); a LongTensor [R] runs only those rows (e.g.
      prefilling one joining session).
    - span: attention looks at the first `span` positions only (a bucket >= every running row's pos + T), so a
      short chat does not pay for reading seq_len positions of keys.
    GPT.forward sees get_pos() as a tensor (per-row rotary angles) and uses `attn_mask`, built at layer 0:
    query t of row b sees key j iff j <= pos[b] + t (the causal rule in absolute positions; stale keys beyond a
    row's position are never visible).
    - mask_free: the caller guarantees one row whose keys all lie in the span (span = pos + T), so attention needs
      no mask (GPT.forward then uses plain causal / full attention, as with KVCache), and with rows None the new
      keys are written at [span - T, span) of row 0 without index arithmetic.
    """

    def __init__(self, batch_size: int, num_heads: int, seq_len: int, head_dim: int, num_layers: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        shape = (batch_size, num_heads, seq_len, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)]
        self.pos = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.seq_len = seq_len
        self.rows: torch.Tensor | None = None
        self.batch = batch_size
        self.span = seq_len
        self.attn_mask: torch.Tensor | None = None
        self.mask_free = False
        self._write_pos: torch.Tensor | None = None

    def get_pos(self) -> torch.Tensor:
        return self.pos[: self.batch] if self.rows is None else self.pos[self.rows]

    def insert_kv(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        T = k.size(2)
        last = layer_idx == len(self.k) - 1
        if self.rows is None and self.mask_free:
            # One row whose keys are exactly [0, span): the new ones go to [span - T, span), a plain slice write.
            self.attn_mask = None
            self.k[layer_idx][0, :, self.span - T: self.span] = k[0]
            self.v[layer_idx][0, :, self.span - T: self.span] = v[0]
            if last:
                self.pos[:1].add_(T).clamp_(max=self.seq_len - 1)  # (a step launched after the row's end: see below)
            return self.k[layer_idx][:1, :, : self.span], self.v[layer_idx][:1, :, : self.span]
        if layer_idx == 0:  # the same positions and mask serve every layer of this forward
            self._write_pos = self.get_pos()[:, None] + torch.arange(T, device=k.device)  # [R, T]
            self.attn_mask = None
            if not self.mask_free:
                visible = torch.arange(self.span, device=k.device) <= self._write_pos[:, None, :, None]  # [R,1,T,span]
                self.attn_mask = torch.zeros(visible.shape, dtype=k.dtype, device=k.device).masked_fill(
                    ~visible, float("-inf"))
        if self.rows is None:
            b = self.batch
            k_all, v_all, pos = self.k[layer_idx][:b], self.v[layer_idx][:b], self.pos[:b]
            at = torch.arange(k.size(0), device=k.device)[:, None]
            # advanced indices [R,1] and [R,T] around a slice: the written block is [R, T, Hkv, hd]
            k_all[at, :, self._write_pos] = k.transpose(1, 2)
            v_all[at, :, self._write_pos] = v.transpose(1, 2)
            if last:
                # Idle rows of a static batch keep stepping on garbage; the clamp keeps their writes in bounds.
                # Running rows never get there: their owner stops them at seq_len.
                pos.add_(T).clamp_(max=self.seq_len - 1)
            return k_all[:, :, : self.span], v_all[:, :, : self.span]
        rows = self.rows[:, None]
        self.k[layer_idx][rows, :, self._write_pos] = k.transpose(1, 2)
        self.v[layer_idx][rows, :, self._write_pos] = v.transpose(1, 2)
        if last:
            self.pos[self.rows] = (self.pos[self.rows] + T).clamp(max=self.seq_len - 1)
        return self.k[layer_idx][self.rows, :, : self.span], self.v[layer_idx][self.rows, :, : self.span]
