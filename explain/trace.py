"""Run one forward through the model's own recorder and keep what the views need.

Everything recorded stays on the model's device; views move only small things (top-k ids and values, per-position
scalars, one head's attention window) to the CPU. Full [T, V] logits never leave the device.
"""
from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import Sequence

import torch

from gpt.nanochat import GPT
from gpt.recorder import Recorder


@dataclass
class Trace:
    """One recorded inference forward of `idx` [B, T] (no cache, T0 = 0)."""
    model: GPT
    idx: torch.Tensor          # [B, T] long, on the model's device
    rec: Recorder              # name -> tensor, see gpt/recorder.py
    tokenizer: object | None
    labels: list[list[str]]    # readable token labels, per row and position (sequence_labels: characters, not bytes)
    raw_labels: list[list[str]] | None = None  # the same as each token alone shows (token_labels: its bytes)
    derived: dict = field(default_factory=dict, repr=False, compare=False)  # what a view computed from the
    # recording once and others (or the same view at another layer, head or position) read again: see commitment

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


def _utf8_length(lead: int) -> int:
    """How many bytes the UTF-8 sequence that starts with byte `lead` has (0: not a lead byte)."""
    return 1 if lead < 0x80 else 2 if 0xC2 <= lead < 0xE0 else 3 if 0xE0 <= lead < 0xF0 else \
        4 if 0xF0 <= lead < 0xF5 else 0


def _shown(char: str) -> str:
    """A character as a token label shows it (space as ·, a control character escaped), as gpt.tokenizer does."""
    return {" ": "·", "\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char) or (
        f"\\x{ord(char):02x}" if ord(char) < 0x20 or ord(char) == 0x7F else char)


def _token_bytes(tokenizer, token_id: int) -> bytes | None:
    """The bytes of an ordinary token; None for a special token or an id the tokenizer does not have."""
    try:
        return None if tokenizer.is_special(token_id) else tokenizer.token_bytes(token_id)
    except KeyError:
        return None


def _merge_run(pieces: list[bytes], labels: list[str], first: int) -> None:
    """Relabel the tokens of one run of ordinary tokens (labels[first + k] is pieces[k]'s) where a character's UTF-8
    bytes are split over two or more of them: a token that is only part of one character shows it as "今(1/2)" (the
    first of the 2 tokens that make 今); a token that also holds other text shows the split character as "‹今›"."""
    data = b"".join(pieces)
    owner = [k for k, piece in enumerate(pieces) for _ in piece]  # byte -> its token
    chars: list[tuple[int, int, str]] = []  # (start, end, char) of every character split over tokens
    p = 0
    while p < len(data):
        n = _utf8_length(data[p])
        try:
            char = data[p:p + n].decode("utf-8") if n > 1 and p + n <= len(data) else None
        except UnicodeDecodeError:
            char = None
        if char is None:
            p += 1
            continue
        if owner[p] != owner[p + n - 1]:
            chars.append((p, p + n, char))
        p += n
    if not chars:
        return
    offsets = [sum(map(len, pieces[:k])) for k in range(len(pieces) + 1)]
    touched = sorted({k for s, e, _ in chars for k in range(owner[s], owner[e - 1] + 1)})
    for k in touched:
        lo, hi = offsets[k], offsets[k + 1]
        split = [(s, e, c) for s, e, c in chars if s < hi and e > lo]
        if len(split) == 1 and split[0][0] <= lo and split[0][1] >= hi:  # only part of one character
            s, e, c = split[0]
            labels[first + k] = f"{c}({k - owner[s] + 1}/{owner[e - 1] - owner[s] + 1})"
            continue
        out, q = [], lo  # the token's own text around the split characters, shown as token_labels shows it

        def text(start: int, end: int) -> str:
            return "".join(_shown(ch) for ch in pieces[k][start - lo:end - lo].decode("utf-8", "backslashreplace"))

        for s, e, c in split:
            out.append(text(q, max(s, lo)) + f"‹{c}›")
            q = min(e, hi)
        labels[first + k] = "".join(out) + text(q, hi)


def sequence_labels(tokenizer, ids: Sequence[int]) -> list[str]:
    """Labels of consecutive tokens (a prompt, a generated text): token_labels, except where byte tokens together
    form a character: then each of them shows that character ("今(1/2)", "今(2/2)") instead of its bytes
    ("\\xe4\\xbb", "\\x8a"); raw_labels keeps the bytes."""
    ids = [int(i) for i in ids]
    labels = token_labels(tokenizer, ids)
    if tokenizer is None:
        return labels
    raw = [_token_bytes(tokenizer, i) for i in ids]
    k = 0
    while k < len(ids):
        if raw[k] is None:
            k += 1
            continue
        end = k
        while end < len(ids) and raw[end] is not None:
            end += 1
        _merge_run(raw[k:end], labels, k)
        k = end
    return labels


def next_labels(tokenizer, context: Sequence[int], candidates: Sequence[int]) -> list[str]:
    """Labels of candidate next tokens after `context`: a candidate that completes a character the context's last
    tokens began shows that character ("今(2/2)"); any other shows its token_labels label."""
    labels = token_labels(tokenizer, candidates)
    if tokenizer is None or not context:
        return labels
    tail = [int(i) for i in context[-3:]]  # a character has at most 4 bytes: at most 3 earlier tokens hold its start
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    decoder.decode(b"".join(_token_bytes(tokenizer, i) or b"" for i in tail))
    if not decoder.getstate()[0]:
        return labels  # the context ends on a whole character: nothing to complete
    return [sequence_labels(tokenizer, [*tail, int(c)])[-1] for c in candidates]


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
    rows = idx.tolist()
    return Trace(model=model, idx=idx, rec=rec, tokenizer=tokenizer, labels=[sequence_labels(tokenizer, r) for r in rows],
                 raw_labels=[token_labels(tokenizer, r) for r in rows])
