"""Token shards: the compact form in which the data travels to the GPU, and the batches cut from it.

One `.npz.xz` per source and split (numpy's zip of arrays, xz-compressed: about 1.0 byte per token where the zip's own
deflate gives 1.4; read back with allow_pickle=False):
- `ids`     uint16 [N]  every document or conversation, each starting with <|bos|>, back to back
- `starts`  int64  [D]  where each document/conversation begins in `ids`
- `mask`    uint8  [N]  chats only: 1 where the assistant speaks (nanochat's render_conversation mask)
Pretraining reads `ids` as one stream (every token is a target); SFT cuts each conversation into windows of whole
user/assistant exchanges and trains only where mask is 1.
"""
from __future__ import annotations

import io
import lzma
from pathlib import Path

import numpy as np
import torch

from gpt.tokenizer import Tokenizer


def encode_items(tok: Tokenizer, items: list) -> dict[str, np.ndarray]:
    """Documents (str) -> bos + text ids; conversations (message lists) -> rendered ids + assistant mask."""
    assert tok.vocab_size <= 65536, "uint16 shards"
    is_chat = bool(items) and isinstance(items[0], list)
    if is_chat:
        rendered = [tok.render_conversation(m) for m in items]
        seqs, masks = [r[0] for r in rendered], [r[1] for r in rendered]
    else:
        bos = tok.bos_token_id
        seqs = [[bos] + ids for ids in tok.encoding.encode_ordinary_batch(items, num_threads=4)]
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    out = {"ids": np.fromiter((t for s in seqs for t in s), dtype=np.uint16, count=int(lengths.sum())),
           "starts": np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)}
    if is_chat:
        out["mask"] = np.fromiter((m for s in masks for m in s), dtype=np.uint8, count=int(lengths.sum()))
    return out


def save(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(lzma.compress(buf.getvalue(), preset=6))


def load(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(lzma.decompress(Path(path).read_bytes())), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def sft_windows(shard: dict[str, np.ndarray], user_start: int, max_len: int) -> list[tuple[int, int]]:
    """Cut each conversation into (start, end) slices of `ids` that begin at a <|user_start|> and end after an
    assistant turn, at most max_len - 1 tokens (a <|bos|> is put in front at batch time, as in a fresh render).
    Exchanges longer than that on their own are truncated to fit."""
    ids, starts = shard["ids"], shard["starts"]
    ends = np.append(starts[1:], ids.size)
    windows = []
    for s, e in zip(starts.tolist(), ends.tolist()):
        turn_starts = (np.nonzero(ids[s:e] == user_start)[0] + s).tolist()  # each exchange begins with a user turn
        bounds = turn_starts + [e]
        i = 0
        while i < len(turn_starts):
            j = i + 1
            while j < len(turn_starts) and bounds[j + 1] - bounds[i] <= max_len - 1:
                j += 1
            windows.append((bounds[i], min(bounds[j], bounds[i] + max_len - 1)))
            i = j
    return windows


class PretrainStream:
    """Random windows of seq_len + 1 tokens from a weighted mixture of token streams."""

    def __init__(self, streams: dict[str, np.ndarray], weights: dict[str, float], seq_len: int, seed: int):
        self.names = list(streams)
        self.streams = [torch.from_numpy(streams[n].astype(np.int64)) for n in self.names]
        p = np.array([weights[n] for n in self.names], dtype=np.float64)
        self.p = p / p.sum()
        self.seq_len = seq_len
        self.rng = np.random.default_rng(seed)

    def batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        which = self.rng.choice(len(self.names), size=batch_size, p=self.p)
        rows = []
        for k in which:
            s = self.streams[k]
            i = int(self.rng.integers(0, s.numel() - self.seq_len - 1))
            rows.append(s[i:i + self.seq_len + 1])
        x = torch.stack(rows)
        return x[:, :-1].contiguous(), x[:, 1:].contiguous()


class SFTBatches:
    """Batches of chat windows: inputs start with <|bos|>, targets are -1 except on assistant tokens, padded with
    -1 targets to seq_len."""

    def __init__(self, shards: dict[str, dict[str, np.ndarray]], weights: dict[str, float], bos: int,
                 user_start: int, seq_len: int, seed: int):
        self.items = []  # (ids, mask) per window, as int64 arrays with the bos in front
        self.source = []
        for name, shard in shards.items():
            for a, b in sft_windows(shard, user_start, seq_len + 1):
                self.items.append((np.concatenate([[bos], shard["ids"][a:b].astype(np.int64)]),
                                   np.concatenate([[0], shard["mask"][a:b].astype(np.int64)])))
                self.source.append(name)
        names = sorted(shards)
        src = np.array([names.index(s) for s in self.source])
        counts = np.bincount(src, minlength=len(names))
        w = np.array([weights[n] for n in names]) / counts  # each source gets its weight, split over its windows
        self.p = w[src] / w[src].sum()
        self.rng = np.random.default_rng(seed)

        self.seq_len = seq_len

    def batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Always seq_len wide (fixed shapes: a compiled model is not recompiled for every batch)."""
        picks = self.rng.choice(len(self.items), size=batch_size, p=self.p)
        return collate_chat([self.items[i] for i in picks], self.seq_len)


def collate_chat(items: list[tuple[np.ndarray, np.ndarray]], width: int | None = None,
                 pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) rows -> inputs [B, T], targets [B, T] with target = next id where the next token's mask is 1,
    else -1 (nanochat's SFT: only the assistant's tokens are learned). T = width, or the longest row - 1."""
    T = width or max(len(ids) for ids, _ in items) - 1
    x = torch.full((len(items), T), pad, dtype=torch.long)
    y = torch.full((len(items), T), -1, dtype=torch.long)
    for r, (ids, mask) in enumerate(items):
        n = len(ids) - 1
        x[r, :n] = torch.from_numpy(ids[:-1])
        tgt = torch.from_numpy(ids[1:].copy())
        tgt[torch.from_numpy(mask[1:]) == 0] = -1
        y[r, :n] = tgt
    return x, y
