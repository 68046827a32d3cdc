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
from gpt.recorder import Tap, no_tap


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
    x: str  # the residual before the block's lambdas mix: where the stream starts (layer 0), else block layer-1's output
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


def run_from(model: GPT, layer: int, x: torch.Tensor, idx: torch.Tensor, x0: torch.Tensor | None = None,
             kept: torch.Tensor | None = None, tap: Tap = no_tap) -> torch.Tensor:
    """Blocks `layer` .. n_layer-1 of the model on the stream (x, x0, kept) of the token ids idx [B, T], then its head
    at the last position: softcapped logits [B, V]."""
    factors = model.rotary_at(idx.size(1), None, tap)
    x, kept = model.run_blocks(x, factors, None, tap, start=layer, idx=idx, x0=x0, x_backout=kept)
    return last_logits(model, x, kept, tap)


def forward_last(model: GPT, idx: torch.Tensor, tap: Tap = no_tap) -> torch.Tensor:
    """The model's whole forward of idx [B, T] with the head at the last position only: softcapped logits [B, V]."""
    return run_from(model, 0, model.embed(idx, None, tap), idx, tap=tap)
