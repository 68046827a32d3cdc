"""The GPT of nanochat from f1bf69d (December 2025) to today (92d63d4, July 2026): one forward, each later feature a
switch of `Features` (gpt/nanochat/features.py) read in one place below.

Same parameters, state_dict names and function as nanochat's `gpt.py` at each commit of gpt/nanochat/registry.py, so
their checkpoints load unchanged. What the switches add to the tutorial's forward, stage by stage:
- pad_vocab_to: wte, lm_head and the value embeddings have the vocab padded up to a multiple of 64; the logits are
  cut back to vocab_size before the softcap (softcap_fp32: in float32).
- smear: each token's normalized embedding takes in a gated share of the previous token's
  (x[t] += smear_lambda · sigmoid(smear_gate(x[t, :24])) · x[t-1]): cheap bigram information. With a KV cache the
  previous token's embedding is carried in the cache.
- lambdas: before block i the residual is re-mixed with the (smeared) embedding x0: x = resid[i]·x + x0[i]·x0.
- value_embeds (ResFormer): on alternating layers, the last included, v += s·sigmoid(ve_gate(x[:c])) ·
  value_embeds[i](idx), one gate per kv head (c, s = 32, 2 until 6ed7d1d, then 12, 3).
- qk_scale: q and k scaled after QK norm (1.15 at 6ed7d1d, 1.2 from a825e63); rotary_base 100000 from 6ed7d1d.
- windows: the layers follow window_pattern ("SSSL" tiled, the last layer always L); L = the whole context, S = the
  member's short window (`Features.short_window_of`).
- backout: the residual after block n_layer // 2 is kept, and backout_lambda times it is subtracted before the final
  norm.
Differences from nanochat's code, none in the function: recording taps and the cache interface are the tutorial's;
a chunk fed after a cached prefix smears its first token with the carried embedding, as a full forward does
(nanochat's cached path smears only single tokens with it, and its engine never feeds such chunks).

Shapes: B batch, T sequence, C = n_embd, H = n_head, Hkv = n_kv_head, hd = C // H, V = vocab_size, Vp = padded.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from gpt.kv_cache import Cache
import gpt.nanochat.base as base
from gpt.nanochat.ops import MLP, QKV, apply_rotary_emb, norm
from gpt.recorder import Tap, block_names, no_tap

SMEAR_CHANNELS = 24  # the smear gate reads the first 24 channels of the embedding


class CausalSelfAttention(QKV):
    """The tutorial's attention (same q/k/v/proj weights, fused the same way) plus, by feature, a value-embedding
    gate on some layers, a q/k scale and a sliding window."""

    def __init__(self, config: base.GPTConfig, features: base.Features, layer_idx: int, window: int | None,
                 has_ve: bool):
        super().__init__(config.n_embd, config.n_head, config.n_kv_head, layer_idx)
        self.window, self.qk_scale = window, features.qk_scale
        self.ve_gate_scale, self.ve_gate_channels = features.ve_gate_scale, features.ve_gate_channels
        self.ve_gate = nn.Linear(self.ve_gate_channels, self.n_kv_head, bias=False) if has_ve else None

    def forward(self, x: torch.Tensor, ve: torch.Tensor | None, cos_sin: tuple[torch.Tensor, torch.Tensor],
                kv_cache: Cache | None = None, tap: Tap = no_tap, last_only: bool = False) -> torch.Tensor:
        B, T = x.shape[:2]
        qk, v = self.project(x)
        # Value residual (ResFormer): mix in this layer's embedding of the token ids, one gate in (0, s) per kv head.
        if ve is not None:
            tap(self.names["attn.ve"], ve)
            gate = self.ve_gate_scale * torch.sigmoid(self.ve_gate(x[..., : self.ve_gate_channels]))  # [B, T, Hkv]
            tap(self.names["attn.ve_gate"], gate)
            v = v + gate.unsqueeze(-1) * ve.view(B, T, self.n_kv_head, self.head_dim)
        # Rotary, then QK norm, then the scale: each acts on every head alone, so q and k go together.
        qk = norm(apply_rotary_emb(qk, *cos_sin))
        if self.qk_scale != 1.0:
            qk = qk * self.qk_scale
        return self.attend_and_project(qk, v, kv_cache, tap, self.window, last_only)


class Block(nn.Module):
    def __init__(self, config: base.GPTConfig, features: base.Features, layer_idx: int, window: int | None,
                 has_ve: bool):
        super().__init__()
        self.attn = CausalSelfAttention(config, features, layer_idx, window, has_ve)
        self.mlp = MLP(config.n_embd, layer_idx)
        self.names = block_names(layer_idx)  # recording points

    def forward(self, x: torch.Tensor, ve: torch.Tensor | None, cos_sin: tuple[torch.Tensor, torch.Tensor],
                kv_cache: Cache | None = None, tap: Tap = no_tap, last_only: bool = False) -> torch.Tensor:
        tap(self.names["input"], x)
        y = self.attn(norm(x), ve, cos_sin, kv_cache, tap, last_only)
        x = (x[:, -1:] if last_only else x) + y  # pre-norm residual (last_only: the last position's alone)
        tap(self.names["resid_mid"], x)
        x = x + self.mlp(norm(x), tap)
        tap(self.names["output"], x)
        return x


class GPT(base.GPT):
    def __init__(self, config: base.GPTConfig, member: base.Member):
        super().__init__(config, member)
        f, C, L, Vp = member.features, config.n_embd, config.n_layer, self.padded_vocab
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(Vp, C),
            "h": nn.ModuleList([Block(config, f, i, w, self.has_value_embedding(i))
                                for i, w in enumerate(self.window_sizes)]),
        })
        self.lm_head = nn.Linear(C, Vp, bias=False)  # untied from wte
        if f.lambdas:
            self.resid_lambdas = nn.Parameter(torch.ones(L))  # scales the residual before each block
            self.x0_lambdas = nn.Parameter(torch.zeros(L))  # mixes the embedding back in before each block
        if f.smear:
            self.smear_gate = nn.Linear(SMEAR_CHANNELS, 1, bias=False)
            self.smear_lambda = nn.Parameter(torch.zeros(1))
        if f.backout:
            self.backout_lambda = nn.Parameter(0.2 * torch.ones(1))
        if f.value_embeds:
            kv_dim = config.n_kv_head * (C // config.n_head)
            self.value_embeds = nn.ModuleDict({str(i): nn.Embedding(Vp, kv_dim) for i in range(L)
                                               if self.has_value_embedding(i)})

    @torch.no_grad()
    def init_weights(self) -> None:
        """nanochat's init at 92d63d4, for the parameters this member has: uniform q/k/v/c_fc (c_fc at 0.4x), zero
        output projections, N(0, 0.8) embedding, N(0, 0.001) lm_head, per-layer lambdas decaying with depth, small
        positive gates."""
        C, L = self.config.n_embd, self.config.n_layer
        torch.nn.init.normal_(self.transformer.wte.weight, mean=0.0, std=0.8)
        torch.nn.init.normal_(self.lm_head.weight, mean=0.0, std=0.001)
        s = 3**0.5 * C**-0.5  # uniform with the standard deviation of N(0, 1/C)
        for block in self.transformer.h:
            for linear in (block.attn.c_q, block.attn.c_k, block.attn.c_v):
                torch.nn.init.uniform_(linear.weight, -s, s)
            torch.nn.init.zeros_(block.attn.c_proj.weight)
            torch.nn.init.uniform_(block.mlp.c_fc.weight, -s * 0.4, s * 0.4)
            torch.nn.init.zeros_(block.mlp.c_proj.weight)
            if block.attn.ve_gate is not None:
                torch.nn.init.uniform_(block.attn.ve_gate.weight, 0.0, 0.02)
        if self.features.lambdas:
            for i in range(L):
                self.resid_lambdas[i] = 1.15 - 0.10 * i / max(L - 1, 1)
                self.x0_lambdas[i] = 0.20 - 0.15 * i / max(L - 1, 1)
        if self.features.smear:
            torch.nn.init.zeros_(self.smear_lambda)
            torch.nn.init.uniform_(self.smear_gate.weight, 0.0, 0.02)
        if self.features.backout:
            torch.nn.init.constant_(self.backout_lambda, 0.2)
        for ve in getattr(self, "value_embeds", {}).values():
            torch.nn.init.uniform_(ve.weight, -s, s)

    def smear(self, x: torch.Tensor, before: torch.Tensor | None) -> torch.Tensor:
        """x[t] += smear_lambda · sigmoid(smear_gate(x[t, :24])) · x[t-1], on the normalized embedding [B, T, C];
        `before` [B, 1, C] is the embedding of the token before x[0] (None at the start of a sequence)."""
        before = torch.zeros_like(x[:, :1]) if before is None else before
        gate = self.smear_lambda * torch.sigmoid(self.smear_gate(x[..., :SMEAR_CHANNELS]))  # [B, T, 1]
        return x + gate * torch.cat([before, x[:, :-1]], 1)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, kv_cache: Cache | None = None,
                loss_reduction: str = "mean", recorder: Tap | None = None) -> torch.Tensor:
        """idx [B, T] -> logits [B, T, V] (float32, softcapped), or the cross-entropy loss when targets are given."""
        tap = no_tap if recorder is None else recorder
        # Stage 1: the rotary angles at exactly these positions.
        factors = self.rotary_at(idx.size(1), kv_cache, tap)

        # Stage 2: the trunk. The embedding, normalized (then smeared with the previous token's), then the blocks.
        x = self.embed(idx, kv_cache, tap)
        x, x_backout = self.run_blocks(x, factors, kv_cache, tap, idx=idx)

        # Stage 3: logits, softcapped (backout first).
        logits = self.head(x, tap, x_backout)

        # Stage 4: training returns the loss (every position is an example), inference returns the logits.
        return self.loss_or_logits(logits, targets, loss_reduction)

    def embed(self, idx: torch.Tensor, kv_cache: Cache | None = None, tap: Tap = no_tap) -> torch.Tensor:
        """Where the residual stream starts (x0) [B, T, C]: the token embedding, normalized, then smeared with the
        previous token's (the cache carries the one before idx's first)."""
        x = self.transformer.wte(idx)
        tap("embed", x)
        x = norm(x)
        tap("embed_norm", x)
        if self.features.smear:
            x = self.smear(x, None if kv_cache is None else kv_cache.carry_embedding(x))
            tap("embed_smear", x)
        return x

    def run_blocks(self, x: torch.Tensor, factors: tuple[torch.Tensor, torch.Tensor], kv_cache: Cache | None = None,
                   tap: Tap = no_tap, *, start: int = 0, idx: torch.Tensor | None = None,
                   x0: torch.Tensor | None = None, x_backout: torch.Tensor | None = None, last_only: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Blocks start..n_layer-1 -> (the last residual, the residual kept after block backout_layer, or None).

        x: the residual stream before block `start`'s lambdas mix it (where the stream starts for block 0, else block
        start-1's output); idx: the token ids (the value embeddings read them); x0: where the stream started (default
        x); x_backout: the residual kept after block backout_layer, when starting past it. forward runs them all;
        starting later resumes a forward from a residual stream (explain's activation patching). last_only: the last
        block works out the last position alone (its keys still at every position), for a caller that reads only the
        last position's logits: the residual comes back [B, 1, C]."""
        x0 = x if x0 is None else x0
        L = self.config.n_layer
        for i in range(start, L):
            x = self.mix(i, x, x0)
            ve = self.value_embeds[str(i)](idx) if self.has_value_embedding(i) else None
            x = self.transformer.h[i](x, ve, factors, kv_cache, tap, last_only and i == L - 1)
            if i == self.backout_layer:
                x_backout = x
        return x, x_backout

    def mix(self, i: int, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """What block i reads: the residual x scaled and the stream's start x0 mixed back in, λr[i]·x + λ0[i]·x0
        (without lambdas, x). Linear, so explain applies it to the weights of the stream's parts too."""
        if not self.features.lambdas:
            return x
        return self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0

    def apply_backout(self, x: torch.Tensor, x_backout: torch.Tensor) -> torch.Tensor:
        """The residual the final norm reads: x − backout_lambda · (the residual kept after block backout_layer)."""
        return x - self.backout_lambda * x_backout

    def head(self, x: torch.Tensor, tap: Tap = no_tap, x_backout: torch.Tensor | None = None) -> torch.Tensor:
        """The output head on a residual stream x [..., C]: subtract backout_lambda times the residual kept after
        block n_layer // 2 (when given), final norm, lm_head, cut the padded vocab, float32, softcap."""
        if x_backout is not None:
            x = self.apply_backout(x, x_backout)
            tap("backout", x)
        x = norm(x)
        tap("final_norm", x)
        logits = self.lm_head(x)[..., : self.config.vocab_size]
        if self.features.softcap_fp32:
            logits = logits.float()
        tap("logits_raw", logits)
        softcap = self.features.softcap
        logits = (softcap * torch.tanh(logits / softcap)).float()
        tap("logits", logits)
        return logits
