"""Run one forward through the model's own recorder and keep what the views need.

Everything recorded stays on the model's device; views move only small things (top-k ids and values, per-position
scalars, one head's attention window) to the CPU. Full [T, V] logits never leave the device.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from gpt.model import GPT
from gpt.recorder import Recorder


@dataclass
class Trace:
    """One recorded inference forward of `idx` [B, T] (no cache, T0 = 0)."""
    model: GPT
    idx: torch.Tensor          # [B, T] long, on the model's device
    rec: Recorder              # name -> tensor, see gpt/recorder.py
    tokenizer: object | None
    labels: list[list[str]]    # readable token labels, per row and position

    @property
    def B(self) -> int:
        return self.idx.size(0)

    @property
    def T(self) -> int:
        return self.idx.size(1)

    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.idx.device

    @property
    def logits(self) -> torch.Tensor:
        """[B, T, V] float32 softcapped logits, on the device."""
        return self.rec["logits"]

    def ids(self, row: int = 0) -> list[int]:
        return self.idx[row].tolist()


def token_labels(tokenizer, ids: Sequence[int]) -> list[str]:
    """The tokenizer's axis labels, or "#id" when there is no tokenizer (random-init shape lessons)."""
    if tokenizer is None:
        return [f"#{i}" for i in ids]
    return list(tokenizer.token_labels(list(ids)))


def to_idx(text_or_ids, tokenizer, model: GPT) -> torch.Tensor:
    """str | list[int] | list[list[int]] | tensor [T] or [B, T] -> validated [B, T] long tensor on the device."""
    if isinstance(text_or_ids, str):
        if tokenizer is None:
            raise ValueError("a text prompt needs a tokenizer; pass token ids instead")
        idx = torch.tensor([tokenizer.encode(text_or_ids)], dtype=torch.long)
    else:
        idx = torch.as_tensor(text_or_ids, dtype=torch.long)
        if idx.ndim == 1:
            idx = idx[None]
    if idx.ndim != 2 or idx.size(1) == 0:
        raise ValueError("the prompt is empty: need at least one token")
    cfg = model.config
    if idx.size(1) > cfg.sequence_len:
        raise ValueError(f"the prompt has {idx.size(1)} tokens; this model's context is {cfg.sequence_len}")
    if idx.min() < 0 or idx.max() >= cfg.vocab_size:
        raise ValueError(f"token ids must be in 0..{cfg.vocab_size - 1}")
    return idx.to(model.get_device())


@torch.inference_mode()
def trace_forward(model: GPT, text_or_ids, tokenizer=None) -> Trace:
    """Record every named point of one forward of the prompt (see gpt/recorder.py for the names)."""
    idx = to_idx(text_or_ids, tokenizer, model)
    rec = Recorder()
    model(idx, recorder=rec)
    labels = [token_labels(tokenizer, row) for row in idx.tolist()]
    return Trace(model=model, idx=idx, rec=rec, tokenizer=tokenizer, labels=labels)
