"""The math every nanochat forward shares: RMS norm, rotary tables and rotation, the causal mask with an optional
sliding window, attention over a cache, relu² MLP and the q/k/v projection (fusable into one matmul).

Shapes: B batch, T sequence, C = n_embd, H = n_head, Hkv = n_kv_head, hd = C // H.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpt.kv_cache import Cache
from gpt.recorder import Tap, block_names, no_tap


def norm(x: torch.Tensor) -> torch.Tensor:
    """RMS norm over the last dim, no learnable weight (nanochat uses it everywhere, QK norm included)."""
    return F.rms_norm(x, (x.size(-1),))


def rotary_tables(seq_len: int, head_dim: int, base: float, round_to_bf16: bool, device: torch.device | str,
                  dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [1, seq_len, 1, hd/2] of the angle t / base^(2i/hd), computed in float32, rounded to bf16 first when
    `round_to_bf16` (nanochat did until 1076f97, on every device), stored in `dtype`."""
    channel_range = torch.arange(0, head_dim, 2, dtype=torch.float32, device=device)
    inv_freq = 1.0 / (base ** (channel_range / head_dim))
    t = torch.arange(seq_len, dtype=torch.float32, device=device)
    freqs = torch.outer(t, inv_freq)  # [seq_len, hd/2]: angle of position t in channel pair i
    cos, sin = freqs.cos(), freqs.sin()
    if round_to_bf16:
        cos, sin = cos.bfloat16(), sin.bfloat16()
    return cos.to(dtype)[None, :, None, :], sin.to(dtype)[None, :, None, :]  # broadcast over B and H


def rotary_factors(cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The tables widened to the whole head dim, once per forward: ([cos, cos], [sin, -sin]) on the last dim."""
    return torch.cat([cos, cos], -1), torch.cat([sin, -sin], -1)


def apply_rotary_emb(x: torch.Tensor, cos2: torch.Tensor, sin2: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x1[i], x2[i]) taken from the two halves of the head dim (half-split, not interleaved):
    y1 = x1·cos + x2·sin, y2 = x2·cos − x1·sin, written as x·[cos, cos] + [x2, x1]·[sin, −sin] with the factors of
    `rotary_factors` (the same products and sums, so the same result, in 4 operations instead of 8)."""
    assert x.ndim == 4  # [B, T, H, hd]
    d = x.shape[3] // 2
    swapped = torch.cat([x[..., d:], x[..., :d]], 3)
    return (x * cos2 + swapped * sin2).to(x.dtype)


def causal_mask_for(Tq: int, Tk: int, device: torch.device | str = "cpu", window: int | None = None
                    ) -> torch.Tensor:
    """The boolean mask (True = may attend) for Tq new queries over Tk keys whose last Tq are the new tokens.

    Covers all three regimes: Tq == Tk is the plain causal triangle; Tq == 1 sees every key; otherwise the cached
    prefix is fully visible and the new chunk is lower-triangular. A sliding `window` (keys back besides the query's
    own, as FlashAttention's window_size=(window, 0)) also hides the keys further back than that.
    """
    mask = torch.ones((Tq, Tk), dtype=torch.bool, device=device)
    causal = mask.tril(diagonal=Tk - Tq)
    if window is None:
        return causal
    return causal & ~mask.tril(diagonal=Tk - Tq - window - 1)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
           window: int | None = None) -> torch.Tensor:
    """Attention of the Tq new queries [B, H, Tq, hd] over Tk keys/values [B, Hkv, Tk, hd] -> [B, H, Tq, hd].

    `mask` comes from a cache that knows which keys each row sees; None means the keys are one sequence whose last
    Tq are the new tokens, and the causal rule takes one of three forms (nanochat's three calls), or, when a sliding
    `window` hides some keys (it reaches back less than Tk - 1), an explicit mask."""
    Tq, Tk = q.size(2), k.size(2)
    gqa = q.size(1) != k.size(1)
    if mask is None and window is not None and window < Tk - 1:
        mask = causal_mask_for(Tq, Tk, q.device, window)
    if mask is not None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
    if Tq == Tk:
        # Training, or a prefill into an empty cache: plain causal attention.
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    if Tq == 1:
        # One new token during decoding: it may look at every cached key (they are all in its past).
        return F.scaled_dot_product_attention(q, k, v, is_causal=False, enable_gqa=gqa)
    # A chunk after a cached prefix: the prefix is fully visible, the chunk is causal within itself.
    mask = causal_mask_for(Tq, Tk, device=q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)


class QKV(nn.Module):
    """The attention's four matrices (c_q, c_k, c_v, c_proj, nanochat's names) and the q/k/v projection, which
    `fuse_qkv` turns into one matmul for inference. Every version's attention is one of these plus its own forward."""

    def __init__(self, n_embd: int, n_head: int, n_kv_head: int, layer_idx: int):
        super().__init__()
        assert n_embd % n_head == 0
        assert n_kv_head <= n_head and n_head % n_kv_head == 0
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head, self.head_dim = n_head, n_kv_head, n_embd // n_head
        self.c_q = nn.Linear(n_embd, n_head * self.head_dim, bias=False)
        self.c_k = nn.Linear(n_embd, n_kv_head * self.head_dim, bias=False)
        self.c_v = nn.Linear(n_embd, n_kv_head * self.head_dim, bias=False)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=False)
        self.w_qkv: torch.Tensor | None = None  # set by fuse_qkv(): c_q, c_k, c_v weights stacked, shared storage
        self.names = block_names(layer_idx)  # recording points

    def fuse_qkv(self) -> None:
        """Inference only: one [(H + 2·Hkv)·hd, C] matrix whose row blocks become the c_q, c_k, c_v weights (views,
        so memory is not doubled and the state_dict is unchanged), and q, k, v come from one matmul. Replacing one of
        the three weights afterwards needs fuse_qkv() again (`is_fused` tells)."""
        w = torch.cat([self.c_q.weight, self.c_k.weight, self.c_v.weight]).detach()
        nq, nkv = self.c_q.weight.size(0), self.c_k.weight.size(0)
        for linear, part in zip((self.c_q, self.c_k, self.c_v), w.split([nq, nkv, nkv])):
            linear.weight = nn.Parameter(part, requires_grad=False)
        self.w_qkv = w

    def is_fused(self) -> bool:
        """True when q/k/v come from one matrix that the three weights are still views of."""
        w = self.w_qkv
        if w is None:
            return False
        ptr, step = w.data_ptr(), w.element_size() * w.size(1)
        nq = self.c_q.weight.size(0)
        return (self.c_q.weight.data_ptr() == ptr and self.c_k.weight.data_ptr() == ptr + nq * step
                and self.c_v.weight.data_ptr() == ptr + (nq + self.c_k.weight.size(0)) * step)

    def _apply(self, fn, recurse: bool = True):
        # .to()/.cuda()/.half() convert the three weights one by one, which ends the sharing: fuse them again.
        super()._apply(fn, recurse)
        if self.w_qkv is not None:
            self.fuse_qkv()
        return self

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q and k side by side [B, T, H + Hkv, hd] and v [B, T, Hkv, hd]: one matmul when fused, else three."""
        B, T, C = x.size()
        H, Hkv, hd = self.n_head, self.n_kv_head, self.head_dim
        if self.w_qkv is not None:
            qkv = F.linear(x, self.w_qkv).view(B, T, H + 2 * Hkv, hd)
            return qkv[:, :, : H + Hkv], qkv[:, :, H + Hkv:]
        qk = torch.cat([self.c_q(x).view(B, T, H, hd), self.c_k(x).view(B, T, Hkv, hd)], 2)
        return qk, self.c_v(x).view(B, T, Hkv, hd)

    def attend_and_project(self, qk: torch.Tensor, v: torch.Tensor, kv_cache: Cache | None, tap: Tap,
                           window: int | None = None, last_only: bool = False) -> torch.Tensor:
        """Attention of the new queries over every key this layer may see (the cache's, then this call's; a sliding
        `window` hides keys further back), the heads joined again and projected back to the residual's width.
        last_only: the last query alone ([B, 1, C] back), over the same keys (every position's key is still made)."""
        q, k = qk[:, :, : self.n_head], qk[:, :, self.n_head:]
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # -> [B, H, T, hd]
        mask = None
        if kv_cache is not None:
            k, v = kv_cache.insert_kv(self.layer_idx, k, v)  # -> all keys/values so far, [B, Hkv, Tk, hd]
            mask = kv_cache.attn_mask(q.size(2), k.size(2), window)
        if last_only:  # the last query sees every key of this call and the cache's (or its window of them)
            q, mask = q[:, :, -1:], None if mask is None else mask[..., -1:, :]
        B, T = q.size(0), q.size(2)
        names = self.names
        tap(names["attn.q"], q)
        tap(names["attn.k"], k)
        tap(names["attn.v"], v)
        y = attend(q, k, v, mask, window)
        tap(names["attn.y"], y)
        y = y.transpose(1, 2).contiguous().view(B, T, -1)
        y = self.c_proj(y)
        tap(names["attn.out"], y)
        return y


class MLP(nn.Module):
    def __init__(self, n_embd: int, layer_idx: int):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=False)
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=False)
        self.names = block_names(layer_idx)  # recording points

    def forward(self, x: torch.Tensor, tap: Tap = no_tap) -> torch.Tensor:
        h = F.relu(self.c_fc(x)).square()  # relu^2: cheap and, in nanochat's runs, better than GELU
        tap(self.names["mlp.hidden"], h)
        out = self.c_proj(h)
        tap(self.names["mlp.out"], out)
        return out
