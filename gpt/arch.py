"""The two nanochat architectures this project runs, and how a checkpoint says which one it is.

- "nanochat-2025-11" (gpt/model.py): the tutorial's, nanochat commit 4a87a0d.
- "nanochat-2026-07" (gpt/model_2026.py): nanochat commit 92d63d4 (sliding windows, value embeddings, smear, backout,
  per-layer lambdas, padded vocab).
A checkpoint is recognised by what it carries, never guessed: its model config's keys and its state_dict's keys.
Checkpoints from between the two (December 2025 - June 2026) carry some of the new keys and not others; their forward
is not pinned down by either file, so they are refused, naming what does not fit.
"""
from __future__ import annotations

import dataclasses

import torch.nn as nn

from gpt import model, model_2026

ARCHS: dict[str, tuple[type[nn.Module], type]] = {
    model.ARCH: (model.GPT, model.GPTConfig),
    model_2026.ARCH: (model_2026.GPT, model_2026.GPTConfig),
}
OLD, NEW = model.ARCH, model_2026.ARCH
# state_dict keys that only the 2026 architecture has, and their meaning (for the error that names what is missing)
NEW_KEYS = {"resid_lambdas": "per-layer residual scale", "x0_lambdas": "per-layer embedding mix",
            "smear_gate.weight": "smear gate", "smear_lambda": "smear", "backout_lambda": "backout"}


class ArchError(ValueError):
    """A checkpoint that fits neither architecture (or not the one asked for): the message names what does not fit."""


def config_class(arch: str) -> type:
    return ARCHS[check_arch(arch)][1]


def check_arch(arch: str) -> str:
    if arch not in ARCHS:
        raise ArchError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")
    return arch


def arch_of(config: object) -> str:
    """The architecture a config object belongs to."""
    return next(name for name, (_, cls) in ARCHS.items() if type(config) is cls)


def new_model(config: object) -> nn.Module:
    """The GPT of `config`'s architecture (built on the current device, e.g. inside `with torch.device("meta")`)."""
    return ARCHS[arch_of(config)][0](config)


def config_keys(arch: str) -> set[str]:
    return {f.name for f in dataclasses.fields(config_class(arch))}


def detect(config: dict, keys: set[str] | None = None) -> str:
    """The architecture of a checkpoint, from its model config (and its state_dict keys when known).

    2026-07: the config has window_pattern and the weights have every one of NEW_KEYS. 2025-11: neither. Anything
    in between raises ArchError naming what is there and what is missing."""
    has_window = "window_pattern" in config
    if keys is None:
        return NEW if has_window else OLD
    keys = {k.removeprefix("_orig_mod.") for k in keys}
    present = sorted(k for k in NEW_KEYS if k in keys)
    has_ve = any(k.startswith("value_embeds.") for k in keys)
    if has_window and len(present) == len(NEW_KEYS) and has_ve:
        return NEW
    if not has_window and not present and not has_ve:
        return OLD
    missing = [f"{k} ({NEW_KEYS[k]})" for k in NEW_KEYS if k not in keys] + ([] if has_ve else ["value_embeds.*"])
    found = (["window_pattern in the config"] if has_window else []) + present + (["value_embeds.*"] if has_ve else [])
    raise ArchError(f"this checkpoint is neither {OLD} nor {NEW}: it has {', '.join(found)} but lacks "
                    f"{', '.join(missing) or 'window_pattern in the config'} (a nanochat version from between the two "
                    f"is not supported; pass --arch to force one)")
