"""`gpu(fn)`: on Hugging Face ZeroGPU Spaces, `spaces.GPU` attaches a GPU for the duration of each call of `fn`.

Everywhere else (no `spaces` package) it returns `fn` unchanged, so the app runs the same on a laptop, a GPU box or a
CPU Space.
"""
from __future__ import annotations

from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)

try:  # pragma: no cover - only on Spaces
    import spaces

    def gpu(fn: F) -> F:
        return spaces.GPU(fn)
except ImportError:
    def gpu(fn: F) -> F:
        return fn
