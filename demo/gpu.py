"""ZeroGPU mode: how the app runs on Hugging Face's ZeroGPU hardware (docs/zerogpu.md), and nowhere else.

On ZeroGPU the app's own process never has a GPU: a GPU exists only inside a call of a function decorated with
`spaces.GPU`, which runs in a fork of the process (the `spaces` package, 0.51; https://huggingface.co/docs/hub/
spaces-zerogpu). What that changes, and what this module does about it:

- Until a GPU call, torch runs in `spaces`' CUDA emulation: a model moved to "cuda" stays in RAM, is packed at launch
  and moved onto the real GPU at the start of every GPU call; any other CUDA work (CUDA graphs, pinned memory, CUDA
  events) raises. So `start()` imports `spaces` before a model is loaded, and models are loaded onto "cuda". There is
  no batched server (gpt/serving.py captures CUDA graphs, pins buffers and decodes on a background thread that a
  fork would not have): each chat reply decodes eagerly, `Engine(batched=False)`, in its own GPU call.
- Each GPU call has a time budget, 60 s unless the decorator asks for another; going past it may abort the call.
  `gpu(fn, duration)` asks for what the request needs (`chat_seconds`, `paced_seconds`, else `VIEW_S`).
- ZeroGPU has no torch.compile (`--compile` is ignored there).
- A call's arguments and results, a generator's items included, cross the fork pickled, and the fork sees nothing
  the app's process does after it started. So a reply's Stop is a file (`FileFlag`), not a threading.Event. (When a
  visitor cancels a streaming call, `spaces` tells the fork too, but the fork only looks when it yields its next
  item.)

- Not every model needs the GPU: one small enough to serve well on the Space's own CPU (`serves_on_cpu`, the
  default model) runs there as on any CPU machine, with no GPU call, so it spends no visitor's daily GPU quota.
- A GPU call can be refused before it starts (a visitor's daily quota spent, a request longer than their quota allows,
  no GPU free in time): `spaces` raises a gr.Error in English, titled with the reason. `refusal_message` turns it
  into a message in the visitor's language that says so and what still works (demo.models.in_users_language).

`on_zerogpu()` reads the environment; everything else here is used only when it is True (`spaces` is not even
imported otherwise).
"""
from __future__ import annotations

import inspect
import math
import os
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch

from rules.inputs import FORWARD_FLOPS, GENERATE_FLOPS
from text import t

F = TypeVar("F", bound=Callable)

ENV = "SPACES_ZERO_GPU"  # what a ZeroGPU Space sets ("true"); `spaces` reads the same variable the same way

# Time budgets of one GPU call, in seconds. Asking for less than needed may abort the call; asking for more costs the
# visitor queue priority (and a call that asks for more than their quota has left is refused at once).
DEFAULT_S = 60  # `spaces`' own default; also what a duration that cannot be computed asks for
MIN_S, MAX_S = 10, 120
BASE_S = 10  # every call's start: the fork, CUDA, the weights onto the GPU, the first kernels (~2-3 s on an H200)
# Eager decoding, one token, twice what was measured on an H200 (bf16, cuDNN attention off, the first reply of a
# fresh process, as every GPU call is): d8 8 ms, d20 12, d32 13, nanochat-2026-07 d20 14, d32 18.
TOKEN_S, TOKEN_LAYER_S = 0.010, 0.0008
# The work budgets (rules/inputs.py) hold one request to a few seconds on a 2-core CPU (83 GFLOP took 3-6 s
# there); a GPU call does that work no slower. x3: the views run a few forwards of that size, then draw figures.
CPU_FLOPS_PER_S = 83e9 / 6
VIEW_S = BASE_S + math.ceil(3 * max(FORWARD_FLOPS, GENERATE_FLOPS) / CPU_FLOPS_PER_S)
STEP_S = 0.5  # a paced loop's step (one Generate step: its figure and table), at most

# The largest model served on the Space's CPU instead of in GPU calls, in matmul weights (what a decode step costs: two
# FLOPs each). A Space has 2 CPU cores (hub-docs docs/hub/spaces-overview.md: "Each Spaces environment is limited to
# 16GB RAM, 2 CPU cores"); there the default model (12.5M matmul weights) decodes one chat at ~130 tokens/s in
# float32 (bench/README.md), so 4x its weights still stream faster than anyone reads (~30 tokens/s). nanochat d20
# has 477M (and a GPU call's start alone costs seconds).
CPU_MAX_MATMUL_PARAMS = 50_000_000

# What `spaces` 0.51.3 raises when ZeroGPU refuses a call before it starts (zero/client.py, schedule(): a gr.Error
# titled with the reason, print_exception off, its message English, e.g. "You have exceeded your free ZeroGPU quota
# (32s requested vs. 10s left). Try again in 0:41:27."). hub-docs docs/hub/spaces-zerogpu.md, "Usage Tiers": a
# daily quota per visitor (2 minutes unauthenticated, 5 with a free account, 40 PRO); a call asks for its whole
# duration up front, so one may be refused while a shorter one still fits.
QUOTA_REFUSALS = frozenset({"ZeroGPU quota exceeded", "ZeroGPU illegal duration", "ZeroGPU pending credits exceeded"})
BUSY_REFUSALS = frozenset({"ZeroGPU queue timeout"})  # "No GPU was available after 60s": the queue, not the quota


def on_zerogpu() -> bool:
    """Whether this process runs on ZeroGPU hardware: the variable the Space sets, read as `spaces` reads it."""
    return os.environ.get(ENV, "").strip().lower() in ("1", "t", "true")


def serves_on_cpu(model: Any) -> bool:
    """Whether a model is small enough to serve on a ZeroGPU Space's own CPU (CPU_MAX_MATMUL_PARAMS): it then never
    takes a GPU call, and so never spends a visitor's quota."""
    return model.num_matmul_params() <= CPU_MAX_MATMUL_PARAMS


def refusal_message(error: Exception, lang: str) -> str | None:
    """The message, in `lang`, for a GPU call ZeroGPU refused before it started (`spaces`' gr.Error, recognised by
    its title): what happened (spaces' own words quoted: they say when to try again) and what still works without a
    GPU. None for any other error."""
    title = getattr(error, "title", None)
    if title in QUOTA_REFUSALS:
        return t("ui.zerogpu.quota", lang, why=getattr(error, "message", str(error)))
    if title in BUSY_REFUSALS:
        return t("ui.zerogpu.busy", lang)
    return None


def start() -> torch.device:
    """Ready this process for ZeroGPU, before any model is loaded; returns the device to load models onto (cuda).

    Imports `spaces` (its CUDA emulation must be in place before a model goes to "cuda"), and turns cuDNN's attention
    off: it builds a plan for every new shape, every GPU call starts in a fresh fork with none, and each decode step
    is a new shape. Measured on an H200 (d20, bf16, the first reply of a process): 56 ms a token with it, 12 without;
    8 either way once a process has seen the shapes."""
    try:
        import spaces  # noqa: F401 - importing it is the point
    except ImportError as e:
        raise RuntimeError(f"{ENV} is set (a ZeroGPU Space) but the `spaces` package is missing: add `spaces` "
                           "to requirements.txt (docs/zerogpu.md)") from e
    torch.backends.cuda.enable_cudnn_sdp(False)  # a process-wide setting: the forks inherit it
    return torch.device("cuda")


def gpu(fn: F, duration: Callable[[dict[str, Any]], float] | None = None) -> F:
    """fn as one ZeroGPU call (`spaces.GPU`), a generator function streaming its items. Its time budget is
    duration(the arguments of the call, by name) seconds, rounded up into [MIN_S, MAX_S]; VIEW_S without a duration;
    DEFAULT_S when duration fails (the call then refuses the request quickly, in the user's language)."""
    import spaces

    signature = inspect.signature(fn)

    def seconds(*args: Any, **kwargs: Any) -> int:
        # spaces calls this in the app's process with the call's own arguments, before the fork
        if duration is None:
            return VIEW_S
        try:
            return min(MAX_S, max(MIN_S, math.ceil(duration(signature.bind_partial(*args, **kwargs).arguments))))
        except Exception:  # noqa: BLE001 - a bad argument (NaN, text) is the call's to refuse, not ours
            return DEFAULT_S

    return spaces.GPU(fn, duration=seconds)


def chat_seconds(max_tokens: float, config: Any) -> float:
    """A chat reply's GPU call: its start, then up to max_tokens (at most the context) eager decode steps of a model
    with `config` (its n_layer and sequence_len)."""
    tokens = min(float(max_tokens), config.sequence_len)
    return BASE_S + tokens * (TOKEN_S + TOKEN_LAYER_S * config.n_layer)


def paced_seconds(steps: float, delay_s: float) -> float:
    """A paced loop's GPU call (the Generate tab's play): up to `steps` steps with a pause of delay_s after each."""
    return BASE_S + float(steps) * (delay_s + STEP_S)


class FileFlag:
    """A flag like threading.Event (set, clear, is_set) that is a file, so that every process sees it: the app's
    process sets it (Stop), a GPU call's fork checks it before each token."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def set(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def is_set(self) -> bool:
        return self.path.exists()
