"""The GPT of nanochat as of July 2026 (commit 92d63d4), beside the tutorial's (gpt/model.py, November 2025).

Same parameters, state_dict names and function as nanochat's `gpt.py` at that commit, so its checkpoints load
unchanged. What is new since the tutorial, stage by stage:
- Vocab padded up to a multiple of 64 for wte, lm_head and the value embeddings; the logits are cut back to
  vocab_size before the softcap.
- Smear: each token's normalized embedding takes in a gated share of the previous token's
  (x[t] += smear_lambda · sigmoid(smear_gate(x[t, :24])) · x[t-1]): cheap bigram information. With a KV cache the
  previous token's embedding is carried in the cache.
- Before block i the residual is re-mixed with the (smeared) embedding x0: x = resid_lambdas[i]·x + x0_lambdas[i]·x0.
- Attention: value embeddings (ResFormer) on alternating layers, the last included: v += 3·sigmoid(ve_gate(x[:12]))
  · value_embeds[i](idx), one gate per kv head; q and k are scaled by 1.2 after QK norm; rotary base 100000; and
  sliding windows: the layers follow window_pattern ("SSSL" tiled, the last layer always L), L = the whole context,
  S = sequence_len/4 rounded up to 128 keys back.
- Backout: the residual after block n_layer // 2 is kept, and backout_lambda times it is subtracted before the final
  norm.
Differences from nanochat's code, none in the function: the rotary tables are computed in float32 and stored in the
model's dtype (nanochat: its compute dtype, the same values); a chunk fed after a cached prefix smears its first token
with the carried embedding, as a full forward does (nanochat's cached path smears only single tokens with it, and
its engine never feeds such chunks); recording taps and the cache interface are the tutorial model's.

Shapes: B batch, T sequence, C = n_embd, H = n_head, Hkv = n_kv_head, hd = C // H, V = vocab_size, Vp = padded.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpt import model as tutorial
from gpt.kv_cache import Cache
from gpt.model import MLP, apply_rotary_emb, norm
from gpt.recorder import Tap, block_names, no_tap

ARCH = "nanochat-2026-07"
SOFTCAP = tutorial.SOFTCAP
ROTARY_BASE = 100000
PAD_VOCAB_TO = 64
QK_SCALE = 1.2  # q and k each, after QK norm: sharper attention
VE_GATE_CHANNELS = 12  # the value-embedding gate reads the first 12 channels of the block's input
SMEAR_CHANNELS = 24  # the smear gate reads the first 24 channels of the embedding


@dataclass
class GPTConfig(tutorial.GPTConfig):
    window_pattern: str = "SSSL"  # tiled over the layers; L = the whole context, S = a quarter of it


def padded_vocab(vocab_size: int) -> int:
    return -(-vocab_size // PAD_VOCAB_TO) * PAD_VOCAB_TO


def has_value_embedding(layer_idx: int, n_layer: int) -> bool:
    """Alternating layers, the last one always included."""
    return layer_idx % 2 == (n_layer - 1) % 2


def window_sizes(config: GPTConfig) -> list[int]:
    """Per layer, how many keys back a query may look (besides itself): window_pattern tiled over the layers, the
    last layer always L. L = sequence_len (the whole context), S = sequence_len / 4 rounded up to a multiple of 128."""
    pattern = config.window_pattern.upper()
    if not pattern or set(pattern) - set("SL"):
        raise ValueError(f"window_pattern must be made of S and L, got {config.window_pattern!r}")
    long, short = config.sequence_len, -(-config.sequence_len // 4 // 128) * 128
    sizes = [long if pattern[i % len(pattern)] == "L" else short for i in range(config.n_layer)]
    sizes[-1] = long
    return sizes


class CausalSelfAttention(tutorial.CausalSelfAttention):
    """The tutorial's attention (same q/k/v/proj weights, fused the same way) plus a value-embedding gate on some
    layers, the 1.2 q/k scale and a sliding window."""

    def __init__(self, config: GPTConfig, layer_idx: int, window: int):
        super().__init__(config, layer_idx)
        self.window = window
        self.ve_gate = (nn.Linear(VE_GATE_CHANNELS, self.n_kv_head, bias=False)
                        if has_value_embedding(layer_idx, config.n_layer) else None)

    def forward(self, x: torch.Tensor, ve: torch.Tensor | None, cos_sin: tuple[torch.Tensor, torch.Tensor],
                kv_cache: Cache | None = None, tap: Tap = no_tap) -> torch.Tensor:
        B, T = x.shape[:2]
        qk, v = self.project(x)
        # Value residual (ResFormer): mix in this layer's embedding of the token ids, one gate in (0, 3) per kv head.
        if ve is not None:
            gate = 3 * torch.sigmoid(self.ve_gate(x[..., :VE_GATE_CHANNELS]))  # [B, T, Hkv]
            tap(self.names["attn.ve_gate"], gate)
            v = v + gate.unsqueeze(-1) * ve.view(B, T, self.n_kv_head, self.head_dim)
        # Rotary, then QK norm, then the 1.2 scale: each acts on every head alone, so q and k go together.
        qk = norm(apply_rotary_emb(qk, *cos_sin)) * QK_SCALE
        return self.attend_and_project(qk, v, kv_cache, tap)


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer_idx: int, window: int):
        super().__init__()
        self.attn = CausalSelfAttention(config, layer_idx, window)
        self.mlp = MLP(config, layer_idx)
        self.names = block_names(layer_idx)  # recording points

    def forward(self, x: torch.Tensor, ve: torch.Tensor | None, cos_sin: tuple[torch.Tensor, torch.Tensor],
                kv_cache: Cache | None = None, tap: Tap = no_tap) -> torch.Tensor:
        tap(self.names["input"], x)
        x = x + self.attn(norm(x), ve, cos_sin, kv_cache, tap)  # pre-norm residual
        tap(self.names["resid_mid"], x)
        x = x + self.mlp(norm(x), tap)
        tap(self.names["output"], x)
        return x


class GPT(nn.Module):
    arch = ARCH

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.window_sizes = window_sizes(config)
        Vp, C = padded_vocab(config.vocab_size), config.n_embd
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(Vp, C),
            "h": nn.ModuleList([Block(config, i, w) for i, w in enumerate(self.window_sizes)]),
        })
        self.lm_head = nn.Linear(C, Vp, bias=False)  # untied from wte
        self.resid_lambdas = nn.Parameter(torch.ones(config.n_layer))  # scales the residual before each block
        self.x0_lambdas = nn.Parameter(torch.zeros(config.n_layer))  # mixes the embedding back in before each block
        self.smear_gate = nn.Linear(SMEAR_CHANNELS, 1, bias=False)
        self.smear_lambda = nn.Parameter(torch.zeros(1))
        self.backout_lambda = nn.Parameter(0.2 * torch.ones(1))
        kv_dim = config.n_kv_head * (C // config.n_head)
        self.value_embeds = nn.ModuleDict({str(i): nn.Embedding(Vp, kv_dim) for i in range(config.n_layer)
                                           if has_value_embedding(i, config.n_layer)})
        # Rotary tables for 10x the context, as nanochat; non-persistent (recomputed, never in checkpoints).
        self.rotary_seq_len = config.sequence_len * 10
        cos, sin = self._precompute_rotary_embeddings(self.rotary_seq_len, C // config.n_head)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    @torch.no_grad()
    def init_weights(self) -> None:
        """nanochat's init at 92d63d4: uniform q/k/v/c_fc (c_fc at 0.4x), zero output projections, N(0, 0.8)
        embedding, N(0, 0.001) lm_head, per-layer lambdas decaying with depth, small positive gates."""
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
        for i in range(L):
            self.resid_lambdas[i] = 1.15 - 0.10 * i / max(L - 1, 1)
            self.x0_lambdas[i] = 0.20 - 0.15 * i / max(L - 1, 1)
        torch.nn.init.zeros_(self.smear_lambda)
        torch.nn.init.constant_(self.backout_lambda, 0.2)
        torch.nn.init.uniform_(self.smear_gate.weight, 0.0, 0.02)
        for ve in self.value_embeds.values():
            torch.nn.init.uniform_(ve.weight, -s, s)
        self.cos, self.sin = self._precompute_rotary_embeddings(self.rotary_seq_len, C // self.config.n_head)

    def _precompute_rotary_embeddings(self, seq_len: int, head_dim: int, base: int = ROTARY_BASE, device=None,
                                      dtype: torch.dtype = torch.float32):
        """cos/sin [1, seq_len, 1, hd/2], computed in float32 and stored in `dtype` (nanochat: its compute dtype)."""
        if device is None:
            device = self.transformer.wte.weight.device
        channel_range = torch.arange(0, head_dim, 2, dtype=torch.float32, device=device)
        inv_freq = 1.0 / (base ** (channel_range / head_dim))
        freqs = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), inv_freq)
        return freqs.cos().to(dtype)[None, :, None, :], freqs.sin().to(dtype)[None, :, None, :]

    # The same as the tutorial's model: inference preparation, the device, and the teaching loop (it only calls
    # forward, which is this model's).
    fuse_qkv = tutorial.GPT.fuse_qkv
    check_fused = tutorial.GPT.check_fused
    get_device = tutorial.GPT.get_device
    generate = tutorial.GPT.generate
    rotary_at = tutorial.GPT.rotary_at

    @property
    def backout_layer(self) -> int:
        return self.config.n_layer // 2

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

        # Stage 2: the trunk. The embedding, normalized, then smeared with the previous token's.
        x = self.transformer.wte(idx)
        tap("embed", x)
        x = norm(x)
        tap("embed_norm", x)
        x = self.smear(x, None if kv_cache is None else kv_cache.carry_embedding(x))
        tap("embed_smear", x)
        x0, x_backout = x, None
        for i, block in enumerate(self.transformer.h):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            ve = self.value_embeds[str(i)](idx) if str(i) in self.value_embeds else None
            x = block(x, ve, factors, kv_cache, tap)
            if i == self.backout_layer:
                x_backout = x

        # Stage 3: logits, in float32, softcapped (backout first).
        logits = self.head(x, tap, x_backout)

        # Stage 4: training returns the loss (every position is an example), inference returns the logits.
        if targets is not None:
            return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1,
                                   reduction=loss_reduction)
        return logits

    def head(self, x: torch.Tensor, tap: Tap = no_tap, x_backout: torch.Tensor | None = None) -> torch.Tensor:
        """The output head on a residual stream x [..., C]: subtract backout_lambda times the residual kept after
        block n_layer // 2 (when given), final norm, lm_head, cut the padded vocab, float32, softcap."""
        if x_backout is not None:
            x = x - self.backout_lambda * x_backout
            tap("backout", x)
        x = norm(x)
        tap("final_norm", x)
        logits = self.lm_head(x)[..., : self.config.vocab_size].float()
        tap("logits_raw", logits)
        logits = SOFTCAP * torch.tanh(logits / SOFTCAP)
        tap("logits", logits)
        return logits
