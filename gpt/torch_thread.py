"""One thread for all of a process's model work on a CPU: `TorchThread`.

Why. PyTorch runs a CPU operation on an OpenMP team that belongs to the calling thread, and libgomp (the OpenMP of
PyTorch's CPU wheels) keeps one team for every thread that has run a parallel operation, until that thread exits.
When the live teams hold more threads than the machine has CPUs, libgomp stops letting idle team members spin: they
sleep after every parallel operation and must be woken for the next one, which costs more than the small operations
of a decode step. A web server runs requests on a pool of threads, so without care every pool thread grows a team.
Measured on a 2-core machine with the default model, batch 1, bfloat16 (bench/decode_bench.py): 173 tokens/s when one
thread does all torch work, 131 when the same stream runs while two other threads that have run torch are alive (and
~110 in a bare two-thread test).

So on a CPU the app loads its models and runs every forward, chat stream and explainer on this one thread; a request
thread hands over the work and waits. Requests take turns (a chat reply one screen update at a time, so two chats
interleave), which on a few cores is also the fastest order. On a GPU (`enabled=False`) calls run in the caller's
thread as before: there the batched server owns decoding, and Hugging Face ZeroGPU runs handlers in a forked
process, where a thread started before the fork would not exist.
"""
from __future__ import annotations

import contextvars
import functools
import inspect
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, TypeVar

F = TypeVar("F", bound=Callable)
T = TypeVar("T")
_END = object()


class TorchThread:
    """`run(fn, ...)` calls fn on the one thread and returns (or raises) its result; `iterate(it)` advances an
    iterator there one item per hand-over; `wrap(fn)` does either for a function or a generator function."""

    def __init__(self, enabled: bool = True, name: str = "torch"):
        self.enabled = enabled
        self._ident: int | None = None  # the thread's, once it has started
        self._pool = (ThreadPoolExecutor(max_workers=1, thread_name_prefix=name, initializer=self._started)
                      if enabled else None)

    def _started(self) -> None:
        self._ident = threading.get_ident()

    def _on_thread(self) -> bool:
        return threading.get_ident() == self._ident

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._pool is None or self._on_thread():  # disabled, or already on it (a nested call would deadlock)
            return fn(*args, **kwargs)
        # in the caller's context variables (a web framework finds the current request through them)
        context = contextvars.copy_context()
        return self._pool.submit(context.run, fn, *args, **kwargs).result()

    def iterate(self, iterable: Iterable[T]) -> Iterator[T]:
        """The items of `iterable`, each produced on the thread; closing this closes it there too."""
        if self._pool is None:
            yield from iterable
            return
        it = self.run(iter, iterable)
        try:
            while (item := self.run(next, it, _END)) is not _END:
                yield item
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                self.run(close)

    def wrap(self, fn: F) -> F:
        """fn, running on the thread (a generator function stays one: its items are produced there)."""
        if self._pool is None:
            return fn
        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def generator(*args, **kwargs):
                yield from self.iterate(fn(*args, **kwargs))
            return generator  # type: ignore[return-value]

        @functools.wraps(fn)
        def call(*args, **kwargs):
            return self.run(fn, *args, **kwargs)
        return call  # type: ignore[return-value]
