"""Named recording points for one forward pass (opt-in, TransformerLens-style).

`GPT.forward(..., recorder=rec)` calls `rec(name, tensor)` at each point below. With no recorder the model does a
single `is None` check per point, so recording costs nothing when it is off. Recorded tensors are detached and stay
on the model's device: the caller decides what (if anything) leaves it.

Names (B batch, T new tokens, Tk = T0 + T keys incl. cached ones, C width, H query heads, Hkv kv heads, hd head dim):
    embed                      wte(idx)                                  [B, T, C]
    embed_norm                 norm(wte(idx)), the residual stream start [B, T, C]
    rotary.cos / rotary.sin    the rotary slice [T0:T0+T] this call used [1, T, 1, hd/2]
    blocks.{i}.input           residual stream entering block i          [B, T, C]
    blocks.{i}.attn.q          queries after rotary and QK norm          [B, H, T, hd]
    blocks.{i}.attn.k          keys attended over (cache + new), same    [B, Hkv, Tk, hd]
    blocks.{i}.attn.v          values attended over (cache + new)        [B, Hkv, Tk, hd]
    blocks.{i}.attn.y          attention output per head, before c_proj  [B, H, T, hd]
    blocks.{i}.attn.out        after c_proj (what is added to residual)  [B, T, C]
    blocks.{i}.resid_mid       residual after the attention add          [B, T, C]
    blocks.{i}.mlp.hidden      relu(c_fc(x))^2                           [B, T, 4C]
    blocks.{i}.mlp.out         after c_proj                              [B, T, C]
    blocks.{i}.output          residual leaving block i                  [B, T, C]
    final_norm                 norm of the last residual                 [B, T, C]
    logits_raw                 lm_head output, float32, before softcap   [B, T, V]
    logits                     15 * tanh(logits_raw / 15)                [B, T, V]
"""
from __future__ import annotations

import torch


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
