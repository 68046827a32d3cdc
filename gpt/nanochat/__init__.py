"""gpt/nanochat/: the nanochat family, every forward nanochat had, as one model type.

    ops.py       the shared math (norm, rotary, causal mask and windows, attention, MLP, q/k/v)
    base.py      GPT, the base class: what every member shares and what any caller may ask a model
    features.py  Features, one switch per change since the tutorial, and Member (a commit and its switches)
    tutorial.py  the tutorial's forward (nanochat 4a87a0d), read as the tutorial reads it
    current.py   every later forward (f1bf69d .. 92d63d4), each feature a switch read in one place
    registry.py  the members, and which one wrote a checkpoint (the only place that lists versions)

Outside this package only the loaders, training and the then-and-now view name a member; everything else asks the
model (tests/test_architecture.py checks it).
"""
from gpt.nanochat.base import GPT, GPTConfig
from gpt.nanochat.features import CARD, Features, Member
from gpt.nanochat.ops import causal_mask_for, norm
from gpt.nanochat.registry import (ALIASES, MEMBERS, TODAY, TUTORIAL, Detected, FamilyError, detect, member,
                                   new_model, patch_like_nanochat)

__all__ = ["ALIASES", "CARD", "GPT", "GPTConfig", "MEMBERS", "TODAY", "TUTORIAL", "Detected", "FamilyError", "Features",
           "Member", "causal_mask_for", "detect", "member", "new_model", "norm", "patch_like_nanochat"]
