"""What a nanochat forward can do besides the tutorial's, one switch per feature, and the commit that added it.

`Features` is data: the tutorial's forward (nanochat 4a87a0d) is `Features()`, every later member of the family is
the tutorial plus some switches (gpt/nanochat/registry.py lists them by commit). `gpt/nanochat/current.py` reads each
switch in one place. A new nanochat change is one field here, its reading there, and its text entry
(`feature.<name>` in text/*.toml).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Features:
    # --- seen in the files (meta config, state_dict keys and shapes) ---
    pad_vocab_to: int = 1  # wte/lm_head rows rounded up to a multiple of this; logits cropped back (f1bf69d: 64)
    lambdas: bool = False  # resid_lambdas / x0_lambdas: x = λr[i]·x + λ0[i]·x0 before block i (aa530cd)
    windows: bool = False  # window_pattern: S layers attend to a short window (fbc1484)
    value_embeds: bool = False  # value embeddings on alternating layers, the last included (e85db6b)
    ve_gate_channels: int = 32  # the gate reads x[..., :c] (e85db6b: 32; 6ed7d1d: 12)
    smear: bool = False  # the previous token's embedding, gated, added to each token's (a825e63)
    backout: bool = False  # the residual after block n_layer // 2, times a lambda, subtracted before the head (a825e63)
    # --- not in the files: fixed by the member (the commit) that wrote them ---
    softcap: float = 15.0  # logits = softcap·tanh(raw / softcap) (aba30cb: 20; 6ed7d1d: 15 again)
    softcap_fp32: bool = False  # raw logits cast to float32 before the softcap (bffdb2e/f1bf69d); before: compute dtype
    rotary_base: float = 10000.0  # (6ed7d1d: 100000)
    rotary_bf16: bool = True  # tables rounded to bf16 even in float32 runs (until 1076f97)
    qk_scale: float = 1.0  # q and k multiplied by this after QK norm (6ed7d1d: 1.15; a825e63: 1.2)
    ve_gate_scale: float = 2.0  # gate = scale·sigmoid(...) (6ed7d1d: 3)
    short_window: tuple[int, int] = (2, 1)  # S = ceil(L / d / r)·r for (d, r): L/2 (fbc1484), (3, 128), (4, 128)

    def short_window_of(self, sequence_len: int) -> int:
        """An S layer's window for a context of `sequence_len`: L // 2 at fbc1484 (r = 1); from 6ed7d1d L / d
        rounded up to a whole number of FlashAttention-3 tiles of r = 128 keys."""
        d, r = self.short_window
        if r == 1:
            return sequence_len // d
        return -(-sequence_len // d // r) * r  # ceil(ceil(L / d) / r) · r

    def padded_vocab(self, vocab_size: int) -> int:
        """Rows of wte and lm_head: vocab_size rounded up to the member's multiple (logits are cropped back)."""
        return -(-vocab_size // self.pad_vocab_to) * self.pad_vocab_to

    def window_sizes(self, sequence_len: int, n_layer: int, window_pattern: str) -> list[int | None]:
        """Per layer, how many keys back a query may look besides itself: None (no limit) without windows; with
        windows, the short window on S layers and sequence_len on L layers (FlashAttention-3's window_size=(w, 0)
        limits L layers too, once a generation runs past the context), the last layer always L."""
        if not self.windows:
            return [None] * n_layer
        pattern, short = window_pattern.upper(), self.short_window_of(sequence_len)
        sizes: list[int | None] = [sequence_len if pattern[i % len(pattern)] == "L" else short for i in range(n_layer)]
        sizes[-1] = sequence_len
        return sizes

    def backout_layer(self, n_layer: int) -> int | None:
        """The block whose output is subtracted (times backout_lambda) before the head, or None."""
        return n_layer // 2 if self.backout else None

    def has_value_embedding(self, layer: int, n_layer: int) -> bool:
        """Alternating layers, the last one always included (when the member has value embeddings)."""
        return self.value_embeds and layer % 2 == (n_layer - 1) % 2

    def changed(self) -> dict[str, object]:
        """The switches that differ from the tutorial's forward, by name."""
        base = Features()
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(base, f.name)}


# The switches a model card lists, each with the commit that introduced it (text: feature.<name> in text/*.toml).
CARD = (("pad_vocab_to", "f1bf69d"), ("softcap_fp32", "bffdb2e"), ("lambdas", "aa530cd"), ("windows", "fbc1484"),
        ("value_embeds", "e85db6b"), ("softcap", "aba30cb"), ("rotary_bf16", "1076f97"), ("rotary_base", "6ed7d1d"),
        ("qk_scale", "6ed7d1d"), ("ve_gate_channels", "6ed7d1d"), ("smear", "a825e63"), ("backout", "a825e63"))


@dataclass(frozen=True)
class Member:
    """One forward nanochat had: the commit that introduced it, its date and its switches."""
    name: str  # the commit's short hash, what --arch and saved files name
    date: str
    features: Features
    title: str  # what changed at this commit, for programmers (users read text/*.toml's member.<name>)
