"""What the three "why did it say that?" analyses share: the residual stream as the model's own stages read it.

A forward is the model's stages: `rotary_at`, `embed` (where the residual stream starts, x0), `run_blocks` (blocks
`start` .. n_layer-1, resumable from any block given the stream before it) and `head` (with the backout, in a model
that has one). Patching resumes `run_blocks` from a recorded stream; saliency and patching read logits at one position
only, through `head`. Nothing here computes what the model computes: it names the recorded tensors the stages need
and calls the stages.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from gpt.nanochat import GPT
from gpt.recorder import Recorder, Tap, no_tap


class SameTokens(ValueError):
    """The contrast is the target itself: their logits' difference is 0 whatever the model does."""

    def __init__(self) -> None:
        super().__init__("the contrast is the target itself: the difference of their logits is 0 by definition")


def check_token(model: GPT, token: int | None, what: str) -> None:
    """ValueError unless `token` (a target or a contrast; None passes) is an id of the model's vocabulary."""
    V = model.config.vocab_size
    if token is not None and not (isinstance(token, int) and 0 <= token < V):
        raise ValueError(f"the {what} must be a token id in 0..{V - 1}, got {token!r}")


def final_residual(model: GPT) -> str:
    """The recording point of the residual the final norm reads: after the backout, in a model with one."""
    return "backout" if model.backout_layer is not None else f"blocks.{model.config.n_layer - 1}.output"


class Stream(NamedTuple):
    """The recording points of the residual stream before block `layer` (what run_blocks(start=layer) reads)."""
    x: str  # the residual before the block's lambdas mix: the stream's start (layer 0), else block layer-1's output
    x0: str  # where the stream starts (the lambdas mix it back in)
    kept: str | None  # the residual kept for the backout, once the forward is past it; else None


def stream_before(model: GPT, layer: int) -> Stream:
    """The names of the residual stream before block `layer` (0 .. n_layer - 1)."""
    start = model.residual_start
    mid = model.backout_layer
    kept = f"blocks.{mid}.output" if mid is not None and layer > mid else None
    return Stream(start if layer == 0 else f"blocks.{layer - 1}.output", start, kept)


def last_logits(model: GPT, x: torch.Tensor, kept: torch.Tensor | None, tap: Tap = no_tap) -> torch.Tensor:
    """The model's softcapped logits [B, V] at the last position of the last residual x [B, T, C] (kept: the residual
    kept for the backout, or None), through its own head."""
    if kept is None:
        return model.head(x[:, -1:], tap)[:, 0]
    return model.head(x[:, -1:], tap, kept[:, -1:])[:, 0]


class KeyBuffers:
    """Each layer's keys and values of a recorded run, once per row of a batch, written in place by batches that
    resume the run at ever earlier positions: a batch writes positions start.. and reads 0 .. start-1, which no batch
    before it wrote (they all started later). The recorded keys are copied once per layer for a whole series of
    batches, not once per batch (on a GPU that copy was a fifth of a sweep's time)."""

    def __init__(self, rec: Recorder, rows: int):
        self.rec, self.rows = rec, rows
        self.kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.starts: dict[int, int] = {}

    def insert(self, layer_idx: int, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v [R, Hkv, Tq, hd] at positions start.. of rows 0..R-1; their keys and values 0 .. start+Tq-1."""
        if start > self.starts.get(layer_idx, start):
            raise ValueError("KeyBuffers takes batches in the order of their starts, latest first")
        self.starts[layer_idx] = start
        if layer_idx not in self.kv:
            self.kv[layer_idx] = tuple(self.rec[f"blocks.{layer_idx}.attn.{n}"].expand(self.rows, -1, -1, -1).clone()
                                       for n in ("k", "v"))
        R, end = k.size(0), start + k.size(2)
        keys, values = self.kv[layer_idx]
        keys[:R, :, start:end], values[:R, :, start:end] = k, v
        return keys[:R, :, :end], values[:R, :, :end]


class RecordedPrefix:
    """A KV cache (the model-cache interface of gpt/kv_cache.py) that already holds a recorded run's positions
    0 .. start-1, the same for every row: the keys and values each layer recorded, and the normalized embedding of
    the token before `start` (what the smear reads). A forward of positions start.. through it computes exactly what
    the whole forward computes there, without the prefix: a patch at position p leaves every position before p as
    it was, so a sweep runs only from the patched positions on. The keys and values live in `buffers` (KeyBuffers:
    a series of batches, latest start first)."""

    def __init__(self, rec: Recorder, start: int, buffers: KeyBuffers):
        self.rec, self.start, self.buffers = rec, start, buffers

    def positions(self, T: int) -> torch.Tensor:
        return torch.arange(self.start, self.start + T, device=self.rec["embed"].device)[None]

    def insert_kv(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.buffers.insert(layer_idx, self.start, k, v)

    def attn_mask(self, Tq: int, Tk: int, window: int | None) -> None:
        return None  # one sequence whose last Tq positions are the new ones: the causal rule (and window) applies

    def carry_embedding(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.start == 0:
            return None
        return self.rec["embed_norm"][:, self.start - 1: self.start].expand(x.size(0), -1, -1)


def run_from(model: GPT, layer: int, x: torch.Tensor, idx: torch.Tensor, x0: torch.Tensor | None = None,
             kept: torch.Tensor | None = None, tap: Tap = no_tap, cache: RecordedPrefix | None = None,
             last_only: bool = True) -> torch.Tensor:
    """Blocks `layer` .. n_layer-1 of the model on the stream (x, x0, kept) of the token ids idx [B, T] (positions
    cache.start.. after a recorded prefix, with a cache), then its head at the last position: softcapped logits
    [B, V]. The last block works out only the last position (`run_blocks`' last_only), unless a tap must see or
    write its other positions (last_only=False)."""
    factors = model.rotary_at(idx.size(1), cache, tap)
    x, kept = model.run_blocks(x, factors, cache, tap, start=layer, idx=idx, x0=x0, x_backout=kept,
                               last_only=last_only)
    return last_logits(model, x, kept, tap)


def forward_last(model: GPT, idx: torch.Tensor, tap: Tap = no_tap, cache: RecordedPrefix | None = None
                 ) -> torch.Tensor:
    """The model's whole forward of idx [B, T] (after a recorded prefix, with a cache) with the head at the last
    position only: softcapped logits [B, V]."""
    return run_from(model, 0, model.embed(idx, cache, tap), idx, tap=tap, cache=cache)
