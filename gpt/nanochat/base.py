"""What every nanochat forward shares, and what any caller may ask a model (instead of asking which version it is).

`GPT` is the base class of every member of the family (gpt/nanochat/tutorial.py, gpt/nanochat/current.py): the
config, the rotary tables, the teaching `generate` loop, inference preparation, and the model's answers about itself
(as nanochat 92d63d4's gpt.py answers `num_matmul_params`, `estimate_decode_flops`, `kv_bytes_per_token`): its window
per layer, its recording points, where its residual stream starts, its backout layer, its FLOPs per token at a
context length, its KV bytes per token, its feature card. A subclass builds `self.transformer` and `self.lm_head`
and defines `forward` and its stages (`embed`: where the residual stream starts; `run_blocks`: the blocks, from any
one of them; `head`), and `init_weights`.

Shapes: B batch, T sequence, C = n_embd, H = n_head, Hkv = n_kv_head, hd = C // H, V = vocab_size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpt.kv_cache import Cache, KVCache
from gpt.nanochat.features import CARD, Features, Member
from gpt.nanochat.ops import norm, rotary_factors, rotary_tables
from gpt.recorder import POINTS, Tap, no_tap

StepCallback = Callable[[torch.Tensor, "torch.Tensor | None", int], None]  # see GPT.generate


@dataclass
class GPTConfig:
    """nanochat's GPTConfig. window_pattern exists in files from fbc1484 on; "L" (every layer sees the whole
    context) is what a file without it computes."""
    sequence_len: int = 1024
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 6  # query heads
    n_kv_head: int = 6  # key/value heads (GQA when fewer than n_head)
    n_embd: int = 768
    window_pattern: str = "L"  # tiled over the layers, the last always L; L = the whole context, S = a short window


def _sum_capped(lo: int, hi: int, cap: int | None) -> int:
    """sum of min(k, cap) for k = lo .. hi (cap None: no cap): the keys read by the queries at those positions."""
    top = hi if cap is None else min(hi, cap)
    below = (lo + top) * (top - lo + 1) // 2 if top >= lo else 0
    return below + (0 if cap is None else cap * max(0, hi - max(cap, lo - 1)))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig, member: Member):
        super().__init__()
        self.config, self.member, self.features = config, member, member.features
        # Rotary tables for 10x the context, as nanochat: cheap, and generation may run past sequence_len.
        # Non-persistent buffers: they are recomputed, never stored in checkpoints.
        self.rotary_seq_len = config.sequence_len * 10
        # Stored as nanochat stores them: bf16 while it rounded them to bf16 (until 1076f97), else float32.
        cos, sin = self.rotary_tables(torch.bfloat16 if member.features.rotary_bf16 else torch.float32)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    # ---- what any caller may ask ----------------------------------------------------------------------------------
    @property
    def padded_vocab(self) -> int:
        """Rows of wte and lm_head: vocab_size rounded up to the member's multiple (logits are cropped back)."""
        return self.features.padded_vocab(self.config.vocab_size)

    @property
    def window_sizes(self) -> list[int | None]:
        """Per layer, how many keys back a query may look besides itself (None: no limit; Features.window_sizes)."""
        c = self.config
        return self.features.window_sizes(c.sequence_len, c.n_layer, c.window_pattern)

    @property
    def backout_layer(self) -> int | None:
        """The block whose output is subtracted (times backout_lambda) before the head, or None."""
        return self.features.backout_layer(self.config.n_layer)

    @property
    def residual_start(self) -> str:
        """The recording point where the residual stream starts (what block 0 reads, before any lambdas)."""
        return "embed_smear" if self.features.smear else "embed_norm"

    @property
    def softcap(self) -> float:
        return self.features.softcap

    @property
    def rotary_base(self) -> float:
        return self.features.rotary_base

    def mix(self, i: int, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """What block i reads of the residual stream x (x0: where the stream started): x itself, unless a member
        mixes x0 back in (gpt/nanochat/current.py). Linear: explain applies it to the weights of the stream's parts."""
        return x

    def has_value_embedding(self, layer: int) -> bool:
        """Whether block `layer` mixes in a value embedding (Features.has_value_embedding)."""
        return self.features.has_value_embedding(layer, self.config.n_layer)

    def recording_points(self) -> list[str]:
        """Every name a forward of this model records, in forward order: gpt/recorder.py's table, keeping the points
        of the features this model has (a value-embedding gate only on the layers with one)."""
        names: list[str] = []
        for p in POINTS:
            if "{i}" not in p.name:
                names += [p.name] if self.has_point(p.feature) else []
            elif p.name.endswith(".input"):  # the first point of a block: every block's points, block by block
                names += [q.name.format(i=i) for i in range(self.config.n_layer) for q in POINTS
                          if "{i}" in q.name and self.has_point(q.feature, i)]
        return names

    def has_point(self, feature: str | None, layer: int | None = None) -> bool:
        """Whether a recording point added by `feature` (None: every member) exists (in block `layer`)."""
        if feature == "value_embeds" and layer is not None:
            return self.has_value_embedding(layer)
        return feature is None or bool(getattr(self.features, feature))

    def num_matmul_params(self) -> int:
        """Weights that take part in a matrix product per token: every Linear (lm_head's padded rows included);
        the embeddings (wte, value embeddings) are lookups, the lambdas scalars."""
        return sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear))

    def flops_per_token(self, context: int) -> int:
        """Forward FLOPs (multiply + add = 2) for ONE token that attends over `context` keys (itself included):
        2 per matmul weight, and per layer 4·C per key read (scores q·k and the weighted sum of v, every head), where
        a layer with a sliding window reads at most window + 1 keys. Norms, rotary, softmax and softcap are
        elementwise: left out."""
        keys = sum(context if w is None else min(context, w + 1) for w in self.window_sizes)
        return 2 * self.num_matmul_params() + 4 * self.config.n_embd * keys

    def forward_flops(self, T: int, T0: int = 0) -> int:
        """FLOPs of one forward of T new tokens after T0 cached ones (causal: token i attends over T0+i+1 keys): the
        sum of flops_per_token over them, in closed form (the work budgets ask this for every step of a generation)."""
        keys = sum(_sum_capped(T0 + 1, T0 + T, None if w is None else w + 1) for w in self.window_sizes)
        return 2 * self.num_matmul_params() * T + 4 * self.config.n_embd * keys

    def kv_bytes_per_token(self, dtype: torch.dtype | None = None) -> int:
        """Bytes of KV cache one position takes: keys and values of every layer (in `dtype`, default the model's)."""
        c = self.config
        itemsize = (dtype or self.lm_head.weight.dtype).itemsize
        return 2 * c.n_layer * c.n_kv_head * (c.n_embd // c.n_head) * itemsize

    def feature_card(self) -> list[tuple[str, str, object]]:
        """(feature, commit that introduced it, this model's value) for each switch this member turns on, in the
        order nanochat added them; text for each: feature.<name> in text/*.toml."""
        changed = self.features.changed()
        return [(name, commit, changed[name]) for name, commit in CARD if name in changed]

    @torch.no_grad()
    def draw_zeros(self, seed: int = 0) -> None:
        """After init_weights: every weight matrix the init left at zero (nanochat starts lm_head and the blocks'
        output projections there, which makes every logit exactly 0 and every block the identity) drawn from
        N(0, 1/fan_in) with its own CPU generator (the same weights on every device). Shapes stay nanochat's; a random
        model that shows something about its input."""
        gen = torch.Generator().manual_seed(seed + 1)
        for p in self.parameters():
            if p.ndim == 2 and not p.any():
                p.copy_(torch.randn(p.shape, generator=gen, device="cpu") / p.shape[-1] ** 0.5)  # (even under a
                # `with torch.device(...)`: the draw is the CPU generator's)

    # ---- shared machinery -----------------------------------------------------------------------------------------
    def rotary_tables(self, dtype: torch.dtype, device: torch.device | str | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """This member's cos/sin tables [1, rotary_seq_len, 1, hd/2] in `dtype` (see ops.rotary_tables)."""
        # None before the buffers exist: the default device (meta inside `with torch.device("meta")`)
        device = self.cos.device if device is None and hasattr(self, "cos") else device
        f = self.features
        return rotary_tables(self.rotary_seq_len, self.config.n_embd // self.config.n_head, f.rotary_base,
                             f.rotary_bf16, device, dtype)

    @torch.inference_mode()
    def carried_embedding(self, token: int) -> torch.Tensor:
        """[1, C]: what a KV cache carries after `token` for the smear of the token that follows it (its normalized
        embedding, as the forward computes it before smearing). It depends on the token alone, so a forward may start
        in the middle of a sequence kept in a cache (a branch, the next turn of a chat) and smear exactly as one run
        from the start: the server sets it from the token before the first new one."""
        idx = torch.tensor([[token]], dtype=torch.long, device=self.get_device())
        return norm(self.transformer.wte(idx))[0]

    def get_device(self) -> torch.device:
        return self.transformer.wte.weight.device

    def fuse_qkv(self) -> None:
        """Inference only: q, k, v of every layer from one matmul (see ops.QKV.fuse_qkv)."""
        for block in self.transformer.h:
            block.attn.fuse_qkv()

    def check_fused(self) -> None:
        """Raise unless every fused layer still computes with its own weights (a weight replaced after fuse_qkv()
        would otherwise be ignored). Called where a model is prepared for serving, not in forward."""
        for block in self.transformer.h:
            attn = block.attn
            if attn.w_qkv is not None and not attn.is_fused():
                raise RuntimeError(f"layer {attn.layer_idx}: q/k/v weights changed since fuse_qkv(); call it again")

    def rotary_at(self, T: int, kv_cache: Cache | None, tap: Tap = no_tap) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage 1: the rotary factors for the T new tokens at their positions (0..T-1 without a cache, else where the
        cache says: [1, T] or, per row, [B, T]), widened once here for every layer."""
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

    @staticmethod
    def loss_or_logits(logits: torch.Tensor, targets: torch.Tensor | None, loss_reduction: str) -> torch.Tensor:
        """Stage 4: training returns the loss (every position is an example), inference returns the logits."""
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1,
                               reduction=loss_reduction)

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
