"""Named recording points for one forward pass (opt-in, TransformerLens-style).

`GPT.forward(..., recorder=rec)` calls `rec(name, tensor)` once at each point of `POINTS`. The model calls a *tap*
at every point; with no recorder the tap is `no_tap`, which does nothing, so the forward reads the same with
recording on or off and there is no second copy of the model. Recorded tensors are detached and stay on the model's
device: the caller decides what (if anything) leaves it.

`POINTS` is the one table of names, what produces them, their shapes (B batch, T new tokens, Tk = T0 + T keys incl.
cached ones, C width, H query heads, Hkv kv heads, hd head dim, V vocab) and the feature that adds them (a field of
gpt/nanochat/features.py; None: every nanochat forward records it). Block points exist once per block i. A model says
which points it records: `GPT.recording_points()` (ve and ve_gate only on its value-embedding layers).

A tap may also write into the tensor it is given, in place: the forward taps every point before it reads that tensor
again, so what the tap wrote is what the rest of that forward computes with. Like a recorder, such a tap belongs to
the one forward it is passed to, never to the model (explain's activation patching writes a clean run's attention or
MLP output into a corrupt run this way, and its saliency the embeddings along a path).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch

Tap = Callable[[str, torch.Tensor], None]



class Point(NamedTuple):
    name: str  # "blocks.{i}.…" for a point inside every block
    made_by: str  # the code that produces it
    shape: str  # symbolic shape
    feature: str | None = None  # the feature (gpt/nanochat/features.py) that adds it; None: every member has it


POINTS: tuple[Point, ...] = (
    Point("rotary.cos", "cos at the new tokens' positions", "[1, T, 1, hd/2]"),
    Point("rotary.sin", "sin at the new tokens' positions", "[1, T, 1, hd/2]"),
    Point("embed", "wte(idx)", "[B, T, C]"),
    Point("embed_norm", "norm(wte(idx)), the residual stream start", "[B, T, C]"),
    Point("embed_smear", "embed_norm + gated share of the previous token's", "[B, T, C]", "smear"),
    Point("blocks.{i}.input", "residual stream entering block i (after the resid/x0 mix, with lambdas)", "[B, T, C]"),
    Point("blocks.{i}.attn.ve", "value_embeds[i](idx), value-embedding layers", "[B, T, Hkv·hd]", "value_embeds"),
    Point("blocks.{i}.attn.ve_gate", "s·sigmoid(ve_gate(x[..., :c])), value-embedding layers", "[B, T, Hkv]",
          "value_embeds"),
    Point("blocks.{i}.attn.q", "queries after rotary and QK norm", "[B, H, T, hd]"),
    Point("blocks.{i}.attn.k", "keys attended over (cache + new), same", "[B, Hkv, Tk, hd]"),
    Point("blocks.{i}.attn.v", "values attended over (cache + new)", "[B, Hkv, Tk, hd]"),
    Point("blocks.{i}.attn.y", "attention output per head, before c_proj", "[B, H, T, hd]"),
    Point("blocks.{i}.attn.out", "after c_proj (what is added to the residual)", "[B, T, C]"),
    Point("blocks.{i}.resid_mid", "residual after the attention add", "[B, T, C]"),
    Point("blocks.{i}.mlp.hidden", "relu(c_fc(x))^2", "[B, T, 4C]"),
    Point("blocks.{i}.mlp.out", "after c_proj", "[B, T, C]"),
    Point("blocks.{i}.output", "residual leaving block i", "[B, T, C]"),
    Point("backout", "last residual − backout_lambda · residual after block n_layer // 2", "[B, T, C]", "backout"),
    Point("final_norm", "norm of the last residual", "[B, T, C]"),
    Point("logits_raw", "lm_head output cropped to V, before the softcap", "[B, T, V]"),
    Point("logits", "softcap · tanh(logits_raw / softcap), float32", "[B, T, V]"),
)
_BLOCK = "blocks.{i}."
BLOCK_POINTS = tuple(p.name.removeprefix(_BLOCK) for p in POINTS if p.name.startswith(_BLOCK))


def block_names(i: int) -> dict[str, str]:
    """The full names of block i's points, e.g. {"attn.q": "blocks.3.attn.q", ...} (built once per block)."""
    return {point: f"blocks.{i}.{point}" for point in BLOCK_POINTS}


def residual_points(n_layer: int) -> list[str]:
    """The residual stream as it grows: after the embedding (normalized), then after each block."""
    return ["embed_norm"] + [block_names(i)["output"] for i in range(n_layer)]


def no_tap(name: str, tensor: torch.Tensor) -> None:
    """The tap when nothing records: does nothing (and compiles away under torch.compile)."""


class Recorder(dict):
    """A dict of name -> detached tensor that the model fills during forward.

    `names` (optional) restricts what is kept, e.g. {"logits"} to avoid holding every activation.
    """

    def __init__(self, names: set[str] | None = None):
        super().__init__()
        self.names = names

    def __call__(self, name: str, tensor: torch.Tensor) -> None:
        if self.names is None or name in self.names:
            self[name] = tensor.detach()
