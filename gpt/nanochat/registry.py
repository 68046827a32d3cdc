"""The nanochat family: every forward nanochat/gpt.py had from the tutorial's (4a87a0d) to today's (92d63d4), and how
a checkpoint says which one wrote it. The only place that lists versions.

A checkpoint's member is read off what its files carry, never from a date or a guess: the model config's keys and the
state_dict's keys and shapes must be exactly those the member's model has. Some members write identical files (their
change is in the computation only, tests/fixtures/nanochat/HISTORY.md): `detect` then picks the first of them below
and names the others, and `--arch` picks one explicitly. A checkpoint that fits no member is refused, naming what
does not fit the closest one.
"""
from __future__ import annotations

import dataclasses

import torch

import gpt.nanochat.current as current
import gpt.nanochat.tutorial as tutorial
from gpt.nanochat.base import GPT, GPTConfig
from gpt.nanochat.features import Features, Member

_PADDED = Features(pad_vocab_to=64, softcap_fp32=True)
_LAMBDAS = dataclasses.replace(_PADDED, lambdas=True)
_WINDOWS = dataclasses.replace(_LAMBDAS, windows=True)
_VE = dataclasses.replace(_WINDOWS, value_embeds=True)
_AUTORESEARCH = dataclasses.replace(_VE, rotary_bf16=False, ve_gate_channels=12, ve_gate_scale=3.0, qk_scale=1.15,
                                    rotary_base=100000.0, short_window=(3, 128))
# In the order nanochat made them. Where several write identical files, the first of them is the default.
MEMBERS: tuple[Member, ...] = (
    Member("4a87a0d", "2025-11-17", Features(), "the tutorial's GPT"),
    Member("f1bf69d", "2025-12-09", _PADDED, "vocab padded to a multiple of 64, logits cropped; softcap in float32"),
    Member("aa530cd", "2026-01-11", _LAMBDAS, "per-layer resid/x0 lambdas"),
    Member("fbc1484", "2026-01-11", _WINDOWS, "window_pattern: sliding windows, short = L // 2"),
    Member("e85db6b", "2026-01-16", _VE, "value embeddings on alternating layers, gate 2·sigmoid over 32 channels"),
    Member("aba30cb", "2026-03-02", dataclasses.replace(_VE, softcap=20.0), "softcap 20"),
    Member("1076f97", "2026-03-04", dataclasses.replace(_VE, softcap=20.0, rotary_bf16=False),
           "no autocast: rotary tables in the compute dtype"),
    Member("6ed7d1d", "2026-03-09", _AUTORESEARCH,
           "gate 3·sigmoid over 12 channels, q/k x 1.15, rotary base 100000, short window ceil(L/3/128)·128"),
    Member("a825e63", "2026-03-14", dataclasses.replace(_AUTORESEARCH, smear=True, backout=True, qk_scale=1.2,
                                                        short_window=(4, 128)),
           "smear, backout, q/k x 1.2, short window ceil(L/4/128)·128 (92d63d4, today, computes the same)"),
)
BY_NAME = {m.name: m for m in MEMBERS}
TUTORIAL, TODAY = BY_NAME["4a87a0d"], BY_NAME["a825e63"]
# Other names a user may type: the two this app knew before the family, and today's commit.
ALIASES = {"nanochat-2025-11": TUTORIAL.name, "nanochat-2026-07": TODAY.name, "92d63d4": TODAY.name}
COMPILE_PREFIX = "_orig_mod."  # torch.compile wraps the model; nanochat saves some state_dicts with this prefix


class FamilyError(ValueError):
    """A checkpoint that fits no member (or not the one asked for): the message names what does not fit."""


def member(name: str) -> Member:
    """The member called `name` (a commit of MEMBERS, or one of ALIASES)."""
    found = BY_NAME.get(ALIASES.get(name, name))
    if found is None:
        raise FamilyError(f"unknown nanochat version {name!r}; known: {', '.join([*BY_NAME, *ALIASES])}")
    return found


def new_model(config: GPTConfig, which: Member = TUTORIAL) -> GPT:
    """The GPT of `which` for `config`, built on the current device (e.g. inside `with torch.device("meta")`)."""
    cls = tutorial.GPT if which.features == Features() else current.GPT
    return cls(config, which)


@dataclasses.dataclass(frozen=True)
class Detected:
    member: Member
    same_files: tuple[str, ...]  # other members whose files look exactly the same (they compute differently)


def _fits(which: Member, config: dict, shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """What in these files does not fit `which` (empty: they could have been written by it)."""
    known = {f.name for f in dataclasses.fields(GPTConfig)} - ({"window_pattern"} if not which.features.windows
                                                                 else set())
    problems = [f"config key {k!r}" for k in sorted(set(config) - known)]
    problems += [f"no config key {k!r}" for k in sorted(known - set(config))]
    # The weights are compared even when config keys differ: otherwise a member whose config keys alone differ would
    # count one problem and pass for the closest, and the message would not name the weight that is wrong.
    try:
        with torch.device("meta"):
            model = new_model(GPTConfig(**{k: v for k, v in config.items() if k in known}), which)
    except Exception:  # values no model can be built from (config_from_dict names them)
        return problems or ["a config no model can be built from"]
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems += [f"no {k}" for k in sorted(set(expected) - set(shapes))]
    problems += [f"unexpected {k}" for k in sorted(set(shapes) - set(expected))]
    problems += [f"{k} is {list(shapes[k])}, not {list(s)}" for k, s in expected.items()
                 if k in shapes and shapes[k] != s]
    return problems


def detect(config: dict, shapes: dict[str, tuple[int, ...]]) -> Detected:
    """The member that wrote a checkpoint, from its model config and its state_dict's key -> shape (any
    torch.compile prefix already removed). FamilyError names what does not fit the closest member."""
    misfits = {m.name: _fits(m, config, shapes) for m in MEMBERS}
    matches = [m for m in MEMBERS if not misfits[m.name]]
    if matches:
        return Detected(matches[0], tuple(m.name for m in matches[1:]))
    closest = min(MEMBERS, key=lambda m: len(misfits[m.name]))
    raise FamilyError(f"this checkpoint fits no forward nanochat had; closest is {closest.name} ({closest.date}: "
                      f"{closest.title}), but it has {'; '.join(misfits[closest.name][:8])}")


def patch_like_nanochat(which: Member, config: dict, state_dict: dict[str, torch.Tensor]) -> None:
    """What nanochat 92d63d4's loader does to a checkpoint that lacks newer entries, done when --arch forces a member
    that has them: window_pattern "L" (full context), resid_lambdas 1 and x0_lambdas 0 (no change)."""
    if which.features.windows:
        config.setdefault("window_pattern", "L")
    if which.features.lambdas:
        n_layer = config.get("n_layer", 0)
        state_dict.setdefault("resid_lambdas", torch.ones(n_layer))
        state_dict.setdefault("x0_lambdas", torch.zeros(n_layer))
