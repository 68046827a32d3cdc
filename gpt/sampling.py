"""Choosing the next token from logits: temperature, top-k, top-p and a seed per row, all as tensor ops.

Every row of a batch has its own settings, given as tensors of shape [B], so a batch of unrelated chat sessions is
sampled in one call, and the whole step can stay on the GPU (inside a CUDA graph: no host syncs, no Python branches
on values).

Randomness is counter-based instead of a stateful torch.Generator: the noise for row b is a hash of
(seed[b], counter[b], token id). Sampling uses the Gumbel-max trick: argmax(logits/T + Gumbel noise) over the kept
tokens is a sample from softmax(logits/T) restricted to them, exactly as torch.multinomial would draw. Because the noise
depends on nothing but the row's own seed and position, a row's sample is the same whether it runs alone or in a
batch, on CPU or GPU, and replaying a captured graph needs no generator state.

Order of the filters (as Hugging Face's and nanochat's): temperature scales the logits, top-k keeps the k largest,
top-p then keeps the smallest set of those whose probability mass (renormalised over the top-k) reaches p.
Temperature 0 means greedy: argmax of the raw logits, first index on ties (as `GPT.generate`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_M32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (Wellons' "lowbias32") on int64 tensors holding values in [0, 2^32).

    Multiplying two 32-bit values can overflow int64; the wrap keeps the low 32 bits right, and the mask keeps them.
    """
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def gumbel_noise(seed: torch.Tensor, counter: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise [B, K] (float32), a pure function of (seed[b], counter[b], token_ids[b, k])."""
    key = _mix32(_mix32((seed & _M32) ^ _mix32((seed >> 32) & _M32)) ^ (counter & _M32))  # [B]
    h = _mix32(key[:, None] ^ _mix32(token_ids & _M32))
    u = ((h >> 8).float() + 0.5) * (1.0 / (1 << 24))  # 24 bits: uniform in (0, 1), never 0 or 1
    return -torch.log(-torch.log(u))


def filter_logits(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
                  candidates: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The kept tokens of each row, as (scaled logits [B, K] with -inf where dropped, their token ids [B, K]).

    logits [B, V]; temperature, top_p float [B]; top_k int64 [B] with 0 = off. The K columns are sorted by logit,
    largest first. `candidates` limits the search to the K largest logits (torch.topk instead of a full sort);
    it is exact when every row has 0 < top_k <= candidates.
    """
    V = logits.size(-1)
    if candidates is None or candidates >= V:
        values, ids = logits.sort(dim=-1, descending=True)
    else:
        values, ids = logits.topk(candidates, dim=-1)
    K = values.size(-1)
    scaled = values / temperature.clamp_min(1e-5)[:, None]  # temperature-0 rows are answered by argmax instead
    rank = torch.arange(K, device=logits.device)
    k = torch.where(top_k > 0, top_k, K)
    keep = rank[None, :] < k[:, None]
    scaled = scaled.masked_fill(~keep, float("-inf"))
    probs = F.softmax(scaled, dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above this one
    # the top token always stays (mass_before = 0); top_p >= 1 is off (float32 mass may reach 1 before the tail)
    keep = keep & ((mass_before < top_p[:, None]) | (top_p[:, None] >= 1))
    return scaled.masked_fill(~keep, float("-inf")), ids


def sample(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
           seed: torch.Tensor, counter: torch.Tensor, candidates: int | None = None) -> torch.Tensor:
    """Next token id per row, int64 [B]. seed, counter: int64 [B] (counter = the sampled token's position)."""
    scaled, ids = filter_logits(logits, temperature, top_k, top_p, candidates)
    choice = (scaled + gumbel_noise(seed, counter, ids)).argmax(dim=-1, keepdim=True)
    sampled = ids.gather(-1, choice).squeeze(-1)
    greedy = logits.argmax(dim=-1)
    return torch.where(temperature > 0, sampled, greedy)


def sampling_tensors(params: list, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row (temperature, top_k, top_p) tensors [B] for `sample`, from objects with .temperature, .top_k, .top_p
    (gpt.stream.SamplingParams); top_k None becomes 0 (off)."""
    temperature = torch.tensor([p.temperature for p in params], dtype=torch.float32, device=device)
    top_k = torch.tensor([p.top_k or 0 for p in params], dtype=torch.long, device=device)
    top_p = torch.tensor([p.top_p for p in params], dtype=torch.float32, device=device)
    return temperature, top_k, top_p


def candidate_width(rows: list) -> int | None:
    """How many of the largest logits `sample` must look at for these rows (objects with .temperature, .top_k):
    the largest top_k among sampling rows, or None (the whole vocab) if one of them has top-k off. Greedy rows
    (temperature 0) need none: they take the argmax of the raw logits."""
    sampling = [r.top_k for r in rows if r.temperature > 0]
    if any(not k for k in sampling):
        return None
    return max(sampling, default=1)
