"""Validation loss and bits per byte on each source's held-out split, for a model and for a unigram baseline.

Both are computed the same way, over the same target tokens:
- the held-out token stream is cut into consecutive windows of sequence_len tokens (the model sees only the window);
- a target counts if it is a text token (special tokens have no bytes and are left out) and, for the "assistant"
  variant of chat sources, only if the assistant says it;
- loss = mean negative log-likelihood in nats per counted token; bits per byte = total nats / ln 2 / total UTF-8
  bytes of the counted tokens (as nanochat's bpb: independent of the tokenizer, comparable across vocabularies).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from gpt.nanochat import GPT
from gpt.tokenizer import Tokenizer


def token_byte_lengths(tok: Tokenizer) -> torch.Tensor:
    """UTF-8 length of each token id; 0 for the special tokens (left out of loss and bits per byte)."""
    return torch.tensor([0 if tok.is_special(i) else len(tok.token_bytes(i)) for i in range(tok.vocab_size)])


def windows(ids: np.ndarray, seq_len: int, mask: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Consecutive (input, target) windows covering every target once; the last one is padded with -1 targets.
    With a mask, targets whose mask is 0 become -1."""
    ids_t = torch.from_numpy(ids.astype(np.int64))
    tgt = ids_t[1:].clone()
    if mask is not None:
        tgt[torch.from_numpy(mask[1:].astype(np.int64)) == 0] = -1
    n = math.ceil(tgt.numel() / seq_len)
    x = torch.zeros(n * seq_len, dtype=torch.long)
    y = torch.full((n * seq_len,), -1, dtype=torch.long)
    x[:tgt.numel()] = ids_t[:-1]
    y[:tgt.numel()] = tgt
    return x.view(n, seq_len), y.view(n, seq_len)


def _summary(nats: float, n_tokens: int, n_bytes: int) -> dict:
    return {"loss": nats / max(n_tokens, 1), "bpb": nats / math.log(2) / max(n_bytes, 1), "tokens": n_tokens,
            "bytes": n_bytes}


@torch.no_grad()
def model_nll(model: GPT, x: torch.Tensor, y: torch.Tensor, token_bytes: torch.Tensor, batch_size: int = 32) -> dict:
    """Sum of per-token losses (forward with loss_reduction='none') over the counted targets."""
    device = model.get_device()
    nats, n_tok, n_bytes = 0.0, 0, 0
    for i in range(0, x.size(0), batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            losses = model(xb, yb, loss_reduction="none").float().view(-1)
        yb = yb.view(-1)
        b = token_bytes.to(device)[yb.clamp_min(0)] * (yb >= 0)
        counted = b > 0
        nats += float(losses[counted].double().sum())
        n_tok += int(counted.sum())
        n_bytes += int(b.sum())
    return _summary(nats, n_tok, n_bytes)


def unigram_logprobs(train_ids: list[np.ndarray], vocab_size: int) -> torch.Tensor:
    """log p(token) from training-token counts with add-one smoothing (every id keeps some probability)."""
    counts = np.ones(vocab_size, dtype=np.float64)
    for ids in train_ids:
        counts += np.bincount(ids, minlength=vocab_size)[:vocab_size]
    return torch.from_numpy(np.log(counts / counts.sum()))


def unigram_nll(logp: torch.Tensor, y: torch.Tensor, token_bytes: torch.Tensor) -> dict:
    y = y.reshape(-1)
    b = token_bytes[y.clamp_min(0)] * (y >= 0)
    counted = b > 0
    return _summary(float(-logp[y[counted]].sum()), int(counted.sum()), int(b.sum()))


def evaluate_sources(val: dict[str, dict[str, np.ndarray]], seq_len: int, token_bytes: torch.Tensor,
                     models: dict[str, GPT], unigram: torch.Tensor | None) -> dict:
    """{source: {variant: {model name: {loss, bpb, tokens, bytes}}}}; variant "all" (every text token) for every
    source, plus "assistant" (only what the assistant says) for chat sources."""
    out = {}
    for name, shard in val.items():
        variants = {"all": None}
        if "mask" in shard:
            variants["assistant"] = shard["mask"]
        out[name] = {}
        for variant, mask in variants.items():
            x, y = windows(shard["ids"], seq_len, mask)
            res = {m: model_nll(model, x, y, token_bytes) for m, model in models.items()}
            if unigram is not None:
                res["unigram"] = unigram_nll(unigram, y, token_bytes)
            out[name][variant] = res
    return out
