"""Named recording points for one forward pass (opt-in, TransformerLens-style).

`GPT.forward(..., recorder=rec)` calls `rec(name, tensor)` once at each point of `POINTS`. The model calls a *tap*
at every point; with no recorder the tap is `no_tap`, which does nothing, so the forward reads the same with
recording on or off and there is no second copy of the model. Recorded tensors are detached and stay on the model's
device: the caller decides what (if anything) leaves it.

`POINTS` is the one list of names, what produces them and their shapes (B batch, T new tokens, Tk = T0 + T keys incl.
cached ones, C width, H query heads, Hkv kv heads, hd head dim, V vocab). Block points exist once per block i. Both
architectures (gpt/model.py, nanochat 2025-11; gpt/model_2026.py, nanochat 2026-07) record the shared points under the
same names; a point with `arch` set exists only in that one (ve_gate only on its value-embedding layers).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch

Tap = Callable[[str, torch.Tensor], None]


NEW = "nanochat-2026-07"


class Point(NamedTuple):
    name: str  # "blocks.{i}.…" for a point inside every block
    made_by: str  # the code that produces it
    shape: str  # symbolic shape
    arch: str | None = None  # the one architecture that has it (None: both)


POINTS: tuple[Point, ...] = (
    Point("rotary.cos", "cos at the new tokens' positions", "[1, T, 1, hd/2]"),
    Point("rotary.sin", "sin at the new tokens' positions", "[1, T, 1, hd/2]"),
    Point("embed", "wte(idx)", "[B, T, C]"),
    Point("embed_norm", "norm(wte(idx)), the residual stream start", "[B, T, C]"),
    Point("embed_smear", "embed_norm + gated share of the previous token's (x0)", "[B, T, C]", NEW),
    Point("blocks.{i}.input", "residual stream entering block i (2026: resid/x0 mix)", "[B, T, C]"),
    Point("blocks.{i}.attn.ve_gate", "3·sigmoid(ve_gate(x[..., :12])), value-embedding layers", "[B, T, Hkv]", NEW),
    Point("blocks.{i}.attn.q", "queries after rotary and QK norm", "[B, H, T, hd]"),
    Point("blocks.{i}.attn.k", "keys attended over (cache + new), same", "[B, Hkv, Tk, hd]"),
    Point("blocks.{i}.attn.v", "values attended over (cache + new)", "[B, Hkv, Tk, hd]"),
    Point("blocks.{i}.attn.y", "attention output per head, before c_proj", "[B, H, T, hd]"),
    Point("blocks.{i}.attn.out", "after c_proj (what is added to the residual)", "[B, T, C]"),
    Point("blocks.{i}.resid_mid", "residual after the attention add", "[B, T, C]"),
    Point("blocks.{i}.mlp.hidden", "relu(c_fc(x))^2", "[B, T, 4C]"),
    Point("blocks.{i}.mlp.out", "after c_proj", "[B, T, C]"),
    Point("blocks.{i}.output", "residual leaving block i", "[B, T, C]"),
    Point("backout", "last residual − backout_lambda · residual after block n_layer // 2", "[B, T, C]", NEW),
    Point("final_norm", "norm of the last residual", "[B, T, C]"),
    Point("logits_raw", "lm_head output, float32, before softcap", "[B, T, V]"),
    Point("logits", "15 * tanh(logits_raw / 15)", "[B, T, V]"),
)
_BLOCK = "blocks.{i}."
BLOCK_POINTS = tuple(p.name.removeprefix(_BLOCK) for p in POINTS if p.name.startswith(_BLOCK))


def block_names(i: int) -> dict[str, str]:
    """The full names of block i's points, e.g. {"attn.q": "blocks.3.attn.q", ...} (built once per block)."""
    return {point: f"blocks.{i}.{point}" for point in BLOCK_POINTS}


def point_names(model: torch.nn.Module) -> list[str]:
    """Every name a forward of `model` (either architecture) records, in forward order."""
    arch = model.arch
    names, blocks_done = [], False
    for p in POINTS:
        if p.arch not in (None, arch):
            continue
        if not p.name.startswith(_BLOCK):
            names.append(p.name)
        elif not blocks_done:
            blocks_done = True
            for i, block in enumerate(model.transformer.h):
                names += [name for point, name in block_names(i).items() if point_arch(point) in (None, arch)
                          and (point != "attn.ve_gate" or block.attn.ve_gate is not None)]
    return names


def point_arch(block_point: str) -> str | None:
    """The architecture that has a block point (e.g. "attn.ve_gate"), or None when both do."""
    return next(p.arch for p in POINTS if p.name == _BLOCK + block_point)


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
