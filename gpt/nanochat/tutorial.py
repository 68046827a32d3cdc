"""The GPT of the tutorial: nanochat at commit 4a87a0d (November 2025), in one readable file.

Same parameters, same state_dict names and the same function as nanochat's `gpt.py` at that commit, so its
checkpoints load unchanged and produce the same logits. Differences, all opt-in or cosmetic:
- `forward(..., recorder=...)` calls a recorder at named points (gpt/recorder.py): every point is one `tap(name,
  tensor)` call, and with no recorder the tap does nothing.
- A KV cache is driven through one small interface (gpt/kv_cache.py): it gives the new tokens' positions and, when
  rows sit at different positions, the attention mask. nanochat reads `kv_cache.get_pos()` instead.
- Rotary and QK norm run once on q and k together (they act on each head alone, so the result is the same), and
  `fuse_qkv()` makes q, k and v one matmul: fewer small operations per decoded token.
- The rotary tables hold nanochat's bf16-rounded values, stored in the model's dtype (exact: every bf16 value is a
  float32 value), so a float32 run multiplies by nanochat's values without a conversion in every layer.
The shared pieces (norm, rotary, attention with its three causal regimes, the relu² MLP, the q/k/v matrices) are in
gpt/nanochat/ops.py; what every member shares (generate, the model's answers about itself) in gpt/nanochat/base.py.

Shapes: B batch, T sequence, C = n_embd, H = n_head, Hkv = n_kv_head, hd = C // H, V = vocab_size.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from gpt.kv_cache import Cache
import gpt.nanochat.base as base
from gpt.nanochat.ops import MLP, QKV, apply_rotary_emb, norm
from gpt.recorder import Tap, block_names, no_tap


class CausalSelfAttention(QKV):
    def forward(self, x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor], kv_cache: Cache | None = None,
                tap: Tap = no_tap, last_only: bool = False) -> torch.Tensor:
        qk, v = self.project(x)
        # Rotary first (position enters q and k as a rotation), then QK norm (keeps attention logits bounded); both
        # act on each head alone, so q and k go through them together.
        qk = norm(apply_rotary_emb(qk, *cos_sin))
        return self.attend_and_project(qk, v, kv_cache, tap, last_only=last_only)


class Block(nn.Module):
    def __init__(self, config: base.GPTConfig, layer_idx: int):
        super().__init__()
        self.attn = CausalSelfAttention(config.n_embd, config.n_head, config.n_kv_head, layer_idx)
        self.mlp = MLP(config.n_embd, layer_idx)
        self.names = block_names(layer_idx)  # recording points

    def forward(self, x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor], kv_cache: Cache | None = None,
                tap: Tap = no_tap, last_only: bool = False) -> torch.Tensor:
        tap(self.names["input"], x)
        y = self.attn(norm(x), cos_sin, kv_cache, tap, last_only)
        x = (x[:, -1:] if last_only else x) + y  # pre-norm residual (last_only: the last position's alone)
        tap(self.names["resid_mid"], x)
        x = x + self.mlp(norm(x), tap)
        tap(self.names["output"], x)
        return x


class GPT(base.GPT):
    def __init__(self, config: base.GPTConfig, member: base.Member):
        if member.features != base.Features():
            raise ValueError(f"the tutorial's forward has none of the later features, got {member.features.changed()}")
        super().__init__(config, member)
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(config.vocab_size, config.n_embd),
            "h": nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
        })
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)  # untied from wte

    @torch.no_grad()
    def init_weights(self) -> None:
        """nanochat's init: scaled normal Linear, N(0,1) embedding, zero lm_head and zero output projections."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                fan_out, fan_in = module.weight.shape
                std = 1.0 / math.sqrt(fan_in) * min(1.0, math.sqrt(fan_out / fan_in))
                torch.nn.init.normal_(module.weight, mean=0.0, std=std)
            elif isinstance(module, nn.Embedding):
                torch.nn.init.normal_(module.weight, mean=0.0, std=1.0)
        torch.nn.init.zeros_(self.lm_head.weight)
        for block in self.transformer.h:
            torch.nn.init.zeros_(block.mlp.c_proj.weight)
            torch.nn.init.zeros_(block.attn.c_proj.weight)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, kv_cache: Cache | None = None,
                loss_reduction: str = "mean", recorder: Tap | None = None) -> torch.Tensor:
        """idx [B, T] -> logits [B, T, V] (softcapped, float32), or the cross-entropy loss when targets are given.

        With a kv_cache, the new tokens sit at the positions the cache gives (T0 = what it already holds, onwards),
        so the rotary angles are taken there and attention also sees the cached keys.
        """
        tap = no_tap if recorder is None else recorder
        # Stage 1: the rotary angles at exactly these positions.
        factors = self.rotary_at(idx.size(1), kv_cache, tap)

        # Stage 2: the trunk: the embedding, normalized, then the blocks.
        x = self.embed(idx, kv_cache, tap)
        x, _ = self.run_blocks(x, factors, kv_cache, tap)

        # Stage 3: logits, softcapped.
        logits = self.head(x, tap)

        # Stage 4: training returns the loss (every position is an example), inference returns the logits.
        return self.loss_or_logits(logits, targets, loss_reduction)

    def embed(self, idx: torch.Tensor, kv_cache: Cache | None = None, tap: Tap = no_tap) -> torch.Tensor:
        """Where the residual stream starts: the token embedding, normalized [B, T, C] (kv_cache: unused here, a
        later forward's smear reads it)."""
        x = self.transformer.wte(idx)
        tap("embed", x)
        x = norm(x)
        tap("embed_norm", x)
        return x

    def run_blocks(self, x: torch.Tensor, factors: tuple[torch.Tensor, torch.Tensor], kv_cache: Cache | None = None,
                   tap: Tap = no_tap, *, start: int = 0, idx: torch.Tensor | None = None,
                   x0: torch.Tensor | None = None, x_backout: torch.Tensor | None = None, last_only: bool = False
                   ) -> tuple[torch.Tensor, None]:
        """Blocks start..n_layer-1 on the residual stream x (what block `start` reads) -> (the last residual, None).
        forward runs them all; starting later resumes a forward from a residual stream (explain's activation
        patching). idx, x0 and x_backout are what later forwards also read (value embeddings, lambdas, backout):
        this one has none of them. last_only: the last block works out the last position alone (its keys still at
        every position), for a caller that reads only the last position's logits: the residual comes back [B, 1, C]."""
        L = self.config.n_layer
        for i in range(start, L):
            x = self.transformer.h[i](x, factors, kv_cache, tap, last_only and i == L - 1)
        return x, None

    def head(self, x: torch.Tensor, tap: Tap = no_tap) -> torch.Tensor:
        """The output head (stage 3) on any residual stream x [..., C]: final norm, lm_head, softcap 15, then
        float32 (at this commit the softcap runs in the compute dtype: bf16 on a GPU). The logit lens reads earlier
        layers through this same function."""
        x = norm(x)
        tap("final_norm", x)
        logits = self.lm_head(x)
        tap("logits_raw", logits)
        softcap = self.features.softcap
        logits = (softcap * torch.tanh(logits / softcap)).float()
        tap("logits", logits)
        return logits
