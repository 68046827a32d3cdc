"""The GPT of nanochat (late-November-2025 architecture), in one readable file.

Same parameters, same state_dict names and the same function as nanochat's `gpt.py`, so a nanochat checkpoint loads
unchanged and produces the same logits. Differences, all opt-in or cosmetic:
- `forward(..., recorder=...)` calls a recorder at named points (see gpt/recorder.py): every point is one `tap(name,
  tensor)` call, and with no recorder the tap does nothing. (MLP takes its layer index, for its points' names.)
- A KV cache is driven through one small interface (gpt/kv_cache.py): it gives the new tokens' positions and, when
  rows sit at different positions, the attention mask. nanochat reads `kv_cache.get_pos()` instead.
- `generate` treats top_k 0/None as "no top-k" instead of failing.
- nanochat asserts the rotary tables are bf16 (it always runs in bf16 on CUDA). Our tables always hold the same
  bf16-rounded cos/sin values, stored in bf16 by default; a loaded model (gpt/checkpoint.py) stores them in its own
  dtype (exact: every bf16 value is a float32 value), so an fp32 run multiplies by nanochat's values without a
  conversion in every layer.
- Rotary and QK norm run once on q and k together (they act on each head alone, so the result is the same), and
  `GPT.fuse_qkv()` (called once, where a model is prepared for inference) makes q, k and v one matmul. Both cut the
  number of small operations per decoded token, which is what a batch-1 step pays for on a CPU or a GPU.

Shapes: B batch, T sequence, C = n_embd, H = n_head, Hkv = n_kv_head, hd = C // H, V = vocab_size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpt.kv_cache import Cache, KVCache
from gpt.recorder import Tap, block_names, no_tap

ARCH = "nanochat-2025-11"
SOFTCAP = 15.0  # logits are squashed smoothly into (-SOFTCAP, SOFTCAP)
ROTARY_BASE = 10000

StepCallback = Callable[[torch.Tensor, "torch.Tensor | None", int], None]  # see GPT.generate


@dataclass
class GPTConfig:
    sequence_len: int = 1024
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 6  # query heads
    n_kv_head: int = 6  # key/value heads (GQA when fewer than n_head)
    n_embd: int = 768


def norm(x: torch.Tensor) -> torch.Tensor:
    """RMS norm over the last dim, no learnable weight (nanochat uses it everywhere, QK norm included)."""
    return F.rms_norm(x, (x.size(-1),))


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
    own, nanochat 2026) also hides the keys further back than that.
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


class CausalSelfAttention(nn.Module):
    window: int | None = None  # every query sees all keys before it (nanochat 2026 adds sliding windows)

    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head = config.n_head
        self.n_kv_head = config.n_kv_head
        self.n_embd = config.n_embd
        self.head_dim = self.n_embd // self.n_head
        assert self.n_embd % self.n_head == 0
        assert self.n_kv_head <= self.n_head and self.n_head % self.n_kv_head == 0
        self.c_q = nn.Linear(self.n_embd, self.n_head * self.head_dim, bias=False)
        self.c_k = nn.Linear(self.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_v = nn.Linear(self.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_proj = nn.Linear(self.n_embd, self.n_embd, bias=False)
        self.w_qkv: torch.Tensor | None = None  # set by fuse_qkv(): c_q, c_k, c_v weights stacked, shared storage
        self.names = block_names(layer_idx)  # recording points

    def fuse_qkv(self) -> None:
        """Inference only: one [(H + 2·Hkv)·hd, C] matrix whose row blocks become the c_q, c_k, c_v weights (views,
        so memory is not doubled and the state_dict is unchanged), and q, k, v come from one matmul. Done once, where
        a model is prepared for inference; replacing one of the three weights afterwards needs fuse_qkv() again
        (`GPT.check_fused` tells)."""
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

    def forward(self, x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor], kv_cache: Cache | None = None,
                tap: Tap = no_tap) -> torch.Tensor:
        qk, v = self.project(x)
        # Rotary first (position enters q and k as a rotation), then QK norm (keeps attention logits bounded); both
        # act on each head alone, so q and k go through them together.
        qk = norm(apply_rotary_emb(qk, *cos_sin))
        return self.attend_and_project(qk, v, kv_cache, tap)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q and k side by side [B, T, H + Hkv, hd] and v [B, T, Hkv, hd]: one matmul when fused, else three."""
        B, T, C = x.size()
        H, Hkv, hd = self.n_head, self.n_kv_head, self.head_dim
        if self.w_qkv is not None:
            qkv = F.linear(x, self.w_qkv).view(B, T, H + 2 * Hkv, hd)
            return qkv[:, :, : H + Hkv], qkv[:, :, H + Hkv:]
        qk = torch.cat([self.c_q(x).view(B, T, H, hd), self.c_k(x).view(B, T, Hkv, hd)], 2)
        return qk, self.c_v(x).view(B, T, Hkv, hd)

    def attend_and_project(self, qk: torch.Tensor, v: torch.Tensor, kv_cache: Cache | None, tap: Tap) -> torch.Tensor:
        """Attention of the new queries over every key this layer may see (the cache's, then this call's), the heads
        joined again and projected back to the residual stream's width."""
        B, T = v.shape[:2]
        q, k = qk[:, :, : self.n_head], qk[:, :, self.n_head:]
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # -> [B, H, T, hd]
        mask = None
        if kv_cache is not None:
            k, v = kv_cache.insert_kv(self.layer_idx, k, v)  # -> all keys/values so far, [B, Hkv, Tk, hd]
            mask = kv_cache.attn_mask(q.size(2), k.size(2), self.window)
        names = self.names
        tap(names["attn.q"], q)
        tap(names["attn.k"], k)
        tap(names["attn.v"], v)
        y = attend(q, k, v, mask, self.window)
        tap(names["attn.y"], y)

        y = y.transpose(1, 2).contiguous().view(B, T, -1)
        y = self.c_proj(y)
        tap(names["attn.out"], y)
        return y


class MLP(nn.Module):
    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)
        self.names = block_names(layer_idx)  # recording points

    def forward(self, x: torch.Tensor, tap: Tap = no_tap) -> torch.Tensor:
        h = F.relu(self.c_fc(x)).square()  # relu^2: cheap and, in nanochat's runs, better than GELU
        tap(self.names["mlp.hidden"], h)
        out = self.c_proj(h)
        tap(self.names["mlp.out"], out)
        return out


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.attn = CausalSelfAttention(config, layer_idx)
        self.mlp = MLP(config, layer_idx)
        self.names = block_names(layer_idx)  # recording points

    def forward(self, x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor], kv_cache: Cache | None = None,
                tap: Tap = no_tap) -> torch.Tensor:
        tap(self.names["input"], x)
        x = x + self.attn(norm(x), cos_sin, kv_cache, tap)  # pre-norm residual
        tap(self.names["resid_mid"], x)
        x = x + self.mlp(norm(x), tap)
        tap(self.names["output"], x)
        return x


class GPT(nn.Module):
    arch = ARCH

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(config.vocab_size, config.n_embd),
            "h": nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
        })
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)  # untied from wte
        # Rotary tables for 10x the context, as nanochat: cheap, and generation may run past sequence_len.
        # Non-persistent buffers: they are recomputed, never stored in checkpoints.
        self.rotary_seq_len = config.sequence_len * 10
        cos, sin = self._precompute_rotary_embeddings(self.rotary_seq_len, config.n_embd // config.n_head)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def init_weights(self) -> None:
        """nanochat's init: scaled normal Linear, N(0,1) embedding, zero lm_head and zero output projections."""
        self.apply(self._init_weights)
        torch.nn.init.zeros_(self.lm_head.weight)
        for block in self.transformer.h:
            torch.nn.init.zeros_(block.mlp.c_proj.weight)
            torch.nn.init.zeros_(block.attn.c_proj.weight)
        cos, sin = self._precompute_rotary_embeddings(self.rotary_seq_len, self.config.n_embd // self.config.n_head)
        self.cos, self.sin = cos, sin

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            fan_out, fan_in = module.weight.shape
            std = 1.0 / math.sqrt(fan_in) * min(1.0, math.sqrt(fan_out / fan_in))
            torch.nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=1.0)

    def _precompute_rotary_embeddings(self, seq_len: int, head_dim: int, base: int = ROTARY_BASE, device=None,
                                      dtype: torch.dtype = torch.bfloat16):
        """cos/sin [1, seq_len, 1, hd/2] rounded to bf16 (nanochat's values), stored in `dtype`."""
        if device is None:
            device = self.transformer.wte.weight.device
        channel_range = torch.arange(0, head_dim, 2, dtype=torch.float32, device=device)
        inv_freq = 1.0 / (base ** (channel_range / head_dim))
        t = torch.arange(seq_len, dtype=torch.float32, device=device)
        freqs = torch.outer(t, inv_freq)  # [seq_len, hd/2]: angle of position t in channel pair i
        cos, sin = freqs.cos().bfloat16().to(dtype), freqs.sin().bfloat16().to(dtype)
        return cos[None, :, None, :], sin[None, :, None, :]  # [1, seq_len, 1, hd/2] broadcasts over B and H

    def fuse_qkv(self) -> None:
        """Inference only: q, k, v of every layer from one matmul (see CausalSelfAttention.fuse_qkv)."""
        for block in self.transformer.h:
            block.attn.fuse_qkv()

    def check_fused(self) -> None:
        """Raise unless every fused layer still computes with its own weights (a weight replaced after fuse_qkv()
        would otherwise be ignored). Called where a model is prepared for serving, not in forward."""
        for block in self.transformer.h:
            attn = block.attn
            if attn.w_qkv is not None and not attn.is_fused():
                raise RuntimeError(f"layer {attn.layer_idx}: q/k/v weights changed since fuse_qkv(); call it again")

    def get_device(self) -> torch.device:
        return self.transformer.wte.weight.device

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, kv_cache: Cache | None = None,
                loss_reduction: str = "mean", recorder: Tap | None = None) -> torch.Tensor:
        """idx [B, T] -> logits [B, T, V] (float32, softcapped), or the cross-entropy loss when targets are given.

        With a kv_cache, the new tokens sit at the positions the cache gives (T0 = what it already holds, onwards),
        so the rotary angles are taken there and attention also sees the cached keys.
        """
        tap = no_tap if recorder is None else recorder
        # Stage 1: the rotary angles at exactly these positions.
        factors = self.rotary_at(idx.size(1), kv_cache, tap)

        # Stage 2: the trunk.
        x = self.transformer.wte(idx)
        tap("embed", x)
        x = norm(x)
        tap("embed_norm", x)
        for block in self.transformer.h:
            x = block(x, factors, kv_cache, tap)

        # Stage 3: logits, in float32, softcapped.
        logits = self.head(x, tap)

        # Stage 4: training returns the loss (every position is an example), inference returns the logits.
        if targets is not None:
            return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1,
                                   reduction=loss_reduction)
        return logits

    def rotary_at(self, T: int, kv_cache: Cache | None, tap: Tap = no_tap) -> tuple[torch.Tensor, torch.Tensor]:
        """The rotary factors for the T new tokens at their positions (0..T-1 without a cache, else where the cache
        says: [1, T] or, per row, [B, T]), widened once here for every layer."""
        if kv_cache is None:
            if T > self.cos.size(1):
                raise ValueError(f"sequence of {T} positions exceeds the rotary table ({self.cos.size(1)})")
            pos = torch.arange(T, device=self.cos.device)[None]
        else:
            pos = kv_cache.positions(T)
        cos_sin = self.cos[0, pos], self.sin[0, pos]  # [1 or B, T, 1, hd/2]
        tap("rotary.cos", cos_sin[0])
        tap("rotary.sin", cos_sin[1])
        return rotary_factors(*cos_sin)

    def head(self, x: torch.Tensor, tap: Tap = no_tap) -> torch.Tensor:
        """The output head (stage 3) on any residual stream x [..., C]: final norm, lm_head in float32, softcap. The
        logit lens reads earlier layers through this same function."""
        x = norm(x)
        tap("final_norm", x)
        logits = self.lm_head(x).float()
        tap("logits_raw", logits)
        logits = SOFTCAP * torch.tanh(logits / SOFTCAP)
        tap("logits", logits)
        return logits

    @torch.inference_mode()
    def generate(self, tokens: list[int], max_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 seed: int = 42, on_step: StepCallback | None = None, use_cache: bool = False) -> Iterator[int]:
        """The teaching loop, batch 1, yields token ids. Naive by default: no cache, it re-runs the whole prefix every
        step. use_cache=True runs the same loop through a KV cache: the prompt once, then one new position per step
        (the same tokens, up to float rounding, for a cost linear instead of quadratic in the length).

        on_step(logits, probs, token), if given, sees each step's decision before the token is yielded: the last
        position's logits [1, V] after the top-k filter, the distribution drawn from [1, V] (None at temperature 0,
        where argmax picks) and the token (the explainer's step-by-step view watches the loop through it)."""
        assert isinstance(tokens, list)
        device = self.get_device()
        rng = None
        if temperature > 0:
            rng = torch.Generator(device=device)
            rng.manual_seed(seed)
        ids = torch.tensor([tokens], dtype=torch.long, device=device)
        cache = KVCache.for_model(self, 1, len(tokens) + max_tokens) if use_cache else None
        new = ids  # what the next forward reads: everything (naive), or only what the cache lacks
        for _ in range(max_tokens):
            logits = self.forward(new, kv_cache=cache)[:, -1, :]  # only the last position predicts the next token
            if top_k:  # 0 or None: off
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("inf")
            probs = None
            if temperature > 0:
                probs = F.softmax(logits / temperature, dim=-1)
                next_ids = torch.multinomial(probs, num_samples=1, generator=rng)
            else:
                next_ids = torch.argmax(logits, dim=-1, keepdim=True)
            ids = torch.cat((ids, next_ids), dim=1)
            new = ids if cache is None else next_ids
            token = next_ids.item()
            if on_step is not None:
                on_step(logits, probs, token)
            yield token
