"""KV caches, and the whole interface between the model and a cache.

`GPT.forward(idx, kv_cache=cache)` asks these things of a cache (gpt-fast drives the same from `input_pos`):

    positions(T) -> LongTensor [1, T] or [B, T]
        The absolute positions of the T new tokens: the rotary angles are taken there. Called once per forward,
        before layer 0; a cache prepares its per-forward state (write positions, mask) here.
    insert_kv(layer_idx, k, v) -> (k_all, v_all)
        Store layer `layer_idx`'s new keys/values [B, Hkv, T, hd]; return every key/value attention reads,
        [B, Hkv, Tk, hd]. A cache's positions advance after the last layer.
    attn_mask(Tq, Tk, window) -> Tensor | None
        Which keys each new query may see (bool, True = visible, or additive float), when the cache knows better than
        the causal rule (rows at different positions); None when the keys are one sequence whose last Tq are the new
        tokens, and the model applies the causal rule (the three regimes of gpt.nanochat.ops.attend). window: the layer's
        sliding window (keys back besides the query's own; None = the whole context), from nanochat fbc1484 on.
    carry_embedding(x) -> Tensor [B, 1, C] | None
        nanochat 2026 only (its smear mixes in the previous token's embedding): the normalized embedding of the token
        before x's first one (None or zeros at the start of a sequence); the cache keeps x's last for the next call.

Without a cache the positions are 0..T-1 and attention is causal. `KVCache` is nanochat's cache (every row at the
same position); `RowKVCache` gives every row its own position, for a server of unrelated chats: its
`step(span, batch=... | rows=..., ...)` is the cache of one forward, the per-call settings passed as a value.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


class Cache(Protocol):
    """What GPT.forward asks of a KV cache (see the module docstring)."""

    def positions(self, T: int) -> torch.Tensor: ...

    def insert_kv(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def attn_mask(self, Tq: int, Tk: int, window: int | None) -> torch.Tensor | None: ...

    def carry_embedding(self, x: torch.Tensor) -> torch.Tensor | None: ...


class _ModelSized:
    """`for_model`: a cache with the right layers, kv heads, head dim, device and dtype for a model."""

    @classmethod
    def for_model(cls, model: torch.nn.Module, batch_size: int, seq_len: int | None = None):
        """A cache of `batch_size` rows and `seq_len` positions (default: the model's context) for `model` (a GPT of
        gpt/nanochat/, which imports this module), in the dtype of its weights and on their
        device (and what else that kind of cache needs: `_model_extras`)."""
        c, w = model.config, model.lm_head.weight
        return cls(batch_size, c.n_kv_head, seq_len or c.sequence_len, c.n_embd // c.n_head, c.n_layer, w.device,
                   w.dtype, **cls._model_extras(model))

    @classmethod
    def _model_extras(cls, model: torch.nn.Module) -> dict:
        return {}  # what else this kind of cache needs to know of the model


class KVCache(_ModelSized):
    """Keys and values of every layer for `batch_size` rows, up to `seq_len` positions, every row at position `pos`.

    Storage is [n_layer, 2, B, Hkv, seq_len, hd], allocated once. `insert_kv` writes the new keys/values of one layer
    at [pos, pos + T) and returns views of everything written so far; the position advances after the last layer,
    so every layer of one forward sees the same T0 = pos (this is what offsets the rotary angles in GPT.forward).
    """

    def __init__(self, batch_size: int, num_heads: int, seq_len: int, head_dim: int, num_layers: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.kv = torch.zeros((num_layers, 2, batch_size, num_heads, seq_len, head_dim), device=device, dtype=dtype)
        self.pos = 0
        self.prev_embedding: torch.Tensor | None = None  # [B, 1, C], for carry_embedding

    @property
    def seq_len(self) -> int:
        return self.kv.size(4)

    def get_pos(self) -> int:
        return self.pos

    def positions(self, T: int) -> torch.Tensor:
        if self.pos + T > self.seq_len:
            raise ValueError(f"KV cache full: {self.pos + T} positions needed, {self.seq_len} allocated")
        return torch.arange(self.pos, self.pos + T, device=self.kv.device)[None]

    def insert_kv(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t0, t1 = self.pos, self.pos + k.size(2)
        self.kv[layer_idx, 0, :, :, t0:t1] = k
        self.kv[layer_idx, 1, :, :, t0:t1] = v
        if layer_idx == self.kv.size(0) - 1:
            self.pos = t1
        return self.kv[layer_idx, 0, :, :, :t1], self.kv[layer_idx, 1, :, :, :t1]

    def attn_mask(self, Tq: int, Tk: int, window: int | None) -> None:
        return None  # the keys are positions 0..Tk-1 of every row: the causal rule (and window) applies

    def carry_embedding(self, x: torch.Tensor) -> torch.Tensor | None:
        before, self.prev_embedding = self.prev_embedding, x[:, -1:]
        return before


class RowKVCache(_ModelSized):
    """A static KV cache where every row has its own position: what a server of unrelated chat sessions needs.

    Row b's next token goes to position pos[b] (a LongTensor [B] on the device). Shapes never change and nothing
    reads a position on the host, so a forward through it can be captured as a CUDA graph and replayed at any
    positions. Per layer, k/v are [B, Hkv, seq_len, hd] (separate tensors, so writes stay in place under
    torch.compile). The cache holds storage only: what one forward runs is a value, `RowStep`, given to
    `cache.step(...)`, which returns the Cache that forward reads (as gpt-fast passes `input_pos` to each call), so no
    setting of an earlier call can leak into a later one.
    """

    @classmethod
    def _model_extras(cls, model: torch.nn.Module) -> dict:
        """Its width (for the carried embedding) and its sliding windows (None: the whole context)."""
        return dict(embed_dim=model.config.n_embd, windows=tuple(w for w in model.window_sizes if w is not None))

    def __init__(self, batch_size: int, num_heads: int, seq_len: int, head_dim: int, num_layers: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, embed_dim: int = 0,
                 windows: tuple[int, ...] = ()):
        shape = (batch_size, num_heads, seq_len, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)]
        self.pos = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.seq_len = seq_len
        self.prev = torch.zeros(batch_size, 1, embed_dim, device=device, dtype=dtype)  # each row's last embedding
        # The sliding windows that hide keys (shorter than the context); every other layer sees all its row's keys.
        self.windows = tuple(sorted({w for w in windows if w < seq_len - 1}))

    def step(self, span: int, batch: int | None = None, rows: torch.Tensor | None = None, mask_free: bool = False,
             valid: torch.Tensor | None = None) -> "RowForward":
        """The cache of one forward (see RowStep for the settings; neither batch nor rows: every row)."""
        batch = (batch or self.pos.size(0)) if rows is None else None
        return RowForward(self, RowStep(span, batch, rows, mask_free, valid))


@dataclass(frozen=True)
class RowStep:
    """What one forward through a RowKVCache runs:
    - span: attention looks at the first `span` positions only (a bucket >= every running row's pos + T), so a
      short chat does not pay for reading seq_len positions of keys.
    - batch: the first `batch` rows (the server admits sessions into the lowest free rows and runs the smallest batch
      bucket that holds the highest busy row); or rows: a LongTensor [R] of exactly these rows (e.g. prefilling one
      joining session).
    - mask_free: the caller guarantees one row whose keys are exactly [0, span) (span = pos + T), so attention needs
      no mask (the model's causal rule applies, as with KVCache), and with `batch` the new keys are written at
      [span - T, span) of row 0 as a plain slice.
    - valid: [1], the real tokens of a padded one-row prefill (None: all T are): its last real embedding is carried.
    Otherwise the attention mask is built in `positions`: query t of row b sees key j iff j <= pos[b] + t (the causal
    rule in absolute positions; stale keys beyond a row's position are never visible), and, in a windowed layer,
    j >= pos[b] + t - window."""
    span: int
    batch: int | None = None
    rows: torch.Tensor | None = None
    mask_free: bool = False
    valid: torch.Tensor | None = None


class RowForward:
    """The Cache interface of one forward through a RowKVCache, with that forward's RowStep."""

    def __init__(self, cache: RowKVCache, step: RowStep):
        self.cache, self.s = cache, step
        self._write_pos: torch.Tensor | None = None  # [R, T], set by positions()
        self._masks: dict[int | None, torch.Tensor] = {}  # window -> additive mask [R, 1, T, span]

    def get_pos(self) -> torch.Tensor:
        pos = self.cache.pos
        return pos[: self.s.batch] if self.s.rows is None else pos[self.s.rows]

    def positions(self, T: int) -> torch.Tensor:
        # No bounds check here: it would read the positions on the host (a GPU sync); the owner guards the context.
        c = self.cache
        self._write_pos = self.get_pos()[:, None] + torch.arange(T, device=c.pos.device)  # [R, T]
        if not self.s.mask_free:
            query = self._write_pos[:, None, :, None]  # [R, 1, T, 1]
            behind = query - torch.arange(self.s.span, device=c.pos.device)  # how far back each key is
            for window in (None, *c.windows):
                hidden = (behind < 0) if window is None else (behind < 0) | (behind > window)
                self._masks[window] = torch.zeros(hidden.shape, dtype=c.k[0].dtype,
                                                  device=c.pos.device).masked_fill(hidden, float("-inf"))
        return self._write_pos

    def attn_mask(self, Tq: int, Tk: int, window: int | None) -> torch.Tensor | None:
        if self.s.mask_free:
            return None  # one row whose keys are [0, span): the model's causal rule (and window) applies
        return self._masks[window if window in self.cache.windows else None]

    def carry_embedding(self, x: torch.Tensor) -> torch.Tensor:
        c, rows = self.cache, self.s.rows
        prev = c.prev[: self.s.batch] if rows is None else c.prev[rows]
        before = prev.masked_fill((self.get_pos() == 0)[:, None, None], 0)  # a row at its start has none before
        last = x[:, -1:] if self.s.valid is None else x.index_select(1, self.s.valid - 1)
        if rows is None:
            c.prev[: self.s.batch] = last
        else:
            c.prev[rows] = last
        return before

    def insert_kv(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c, s, T = self.cache, self.s, k.size(2)
        last = layer_idx == len(c.k) - 1
        if s.rows is None and s.mask_free:
            # One row whose keys are exactly [0, span): the new ones go to [span - T, span), a plain slice write.
            c.k[layer_idx][0, :, s.span - T: s.span] = k[0]
            c.v[layer_idx][0, :, s.span - T: s.span] = v[0]
            if last:
                c.pos[:1].add_(T).clamp_(max=c.seq_len - 1)  # (a step launched after the row's end: see below)
            return c.k[layer_idx][:1, :, : s.span], c.v[layer_idx][:1, :, : s.span]
        if s.rows is None:
            b = s.batch
            at = torch.arange(b, device=k.device)[:, None]
            # advanced indices [R,1] and [R,T] around a slice: the written block is [R, T, Hkv, hd]. Written into the
            # whole buffer, not into a view of its first b rows: compiled, a write through a view is copied back
            # into the buffer whole (on a CPU a 2-row cache stepping 1 row lost ~30% of its speed to that copy).
            c.k[layer_idx][at, :, self._write_pos] = k.transpose(1, 2)
            c.v[layer_idx][at, :, self._write_pos] = v.transpose(1, 2)
            if last:
                # Idle rows of a static batch keep stepping on garbage; the clamp keeps their writes in bounds.
                # Running rows never get there: their owner stops them at seq_len.
                c.pos[:b].add_(T).clamp_(max=c.seq_len - 1)
            return c.k[layer_idx][:b, :, : s.span], c.v[layer_idx][:b, :, : s.span]
        rows = s.rows[:, None]
        c.k[layer_idx][rows, :, self._write_pos] = k.transpose(1, 2)
        c.v[layer_idx][rows, :, self._write_pos] = v.transpose(1, 2)
        if last:
            c.pos[s.rows] = (c.pos[s.rows] + T).clamp(max=c.seq_len - 1)
        return c.k[layer_idx][s.rows, :, : s.span], c.v[layer_idx][s.rows, :, : s.span]
