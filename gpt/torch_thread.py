"""One thread for all of a process's model work on a CPU: `TorchThread`, where a chat's decode steps go ahead of
long explainer work.

Why one thread. PyTorch runs a CPU operation on an OpenMP team that belongs to the calling thread, and libgomp (the
OpenMP of PyTorch's CPU wheels) keeps one team for every thread that has run a parallel operation, until that thread
exits. When the live teams hold more threads than the machine has CPUs, libgomp stops letting idle team members spin:
they sleep after every parallel operation and must be woken for the next one, which costs more than the small
operations of a decode step. A web server runs requests on a pool of threads, so without care every pool thread grows
a team. Measured on a 2-core machine with the default model, batch 1, bfloat16 (bench/decode_bench.py): 173 tokens/s
when one thread does all torch work, 131 when the same stream runs while two other threads that have run torch are
alive (and ~110 in a bare two-thread test). So on a CPU the app loads its models and runs every forward, chat stream
and explainer on this one thread; a request thread hands over the work and waits.

Why urgent work. A chat streams a few tokens per hand-over; an explainer request (every view of a long prompt) may
take seconds. Taking turns, a chat would wait for all of it. So jobs come in two kinds: `run` (ordinary: an
explainer, the Generate tab) and `urgent` (the chat's decode steps). While an ordinary job runs, the thread stops at
*pause points* and runs the urgent jobs waiting there, once the ordinary job has had its slice (PAUSE_SLICE_S) since
the last stop: a chat waits about one slice (plus the op in progress) per hand-over, and the explainer still gets
most of the time. Pause points are every torch function an ordinary job calls (a TorchFunctionMode while it runs: the
model's ops and explain/'s own tensor math, so no op of an admitted request runs much past ~0.15 s on 2 cores, see
bench/serve_bench.py) and the `pause_point()` calls explain/ makes between views. The two kinds of job share nothing: a
recorder is passed to its own forward, and the decode steps sample from counter-based noise (gpt/sampling.py), not a
global generator. Code that times its own work uses `work_clock()`, which does not advance while a job is paused,
and `module_pause_points()`, cheaper pause points (at every module's forward) for timing small ops.

On a GPU (`enabled=False`) calls run in the caller's thread as before: there the batched server owns decoding, and
Hugging Face ZeroGPU runs handlers in a forked process, where a thread started before the fork would not exist.
"""
from __future__ import annotations

import contextlib
import contextvars
import ctypes
import functools
import inspect
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Any, Callable, Iterable, Iterator, TypeVar

import torch
from torch.overrides import TorchFunctionMode

F = TypeVar("F", bound=Callable)
T = TypeVar("T")
_END = object()
PAUSE_SLICE_S = 0.02  # an ordinary job runs at least this long between two stops for urgent work

_current = threading.local()  # .worker: the TorchThread whose thread this is


class _Job:
    def __init__(self, fn: Callable, args: tuple, kwargs: dict):
        # in the caller's context variables (a web framework finds the current request through them)
        self.context = contextvars.copy_context()
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.future: Future = Future()

    def execute(self) -> None:
        try:
            self.future.set_result(self.context.run(self.fn, *self.args, **self.kwargs))
        except BaseException as e:  # noqa: BLE001 - the caller gets it
            self.future.set_exception(e)


class TorchThread:
    """`run(fn, ...)` calls fn on the one thread and returns (or raises) its result; `urgent(fn, ...)` does the same
    ahead of ordinary work (see the module docstring); `iterate(it)` advances an iterator there one item per
    hand-over; `wrap(fn)` does either for a function or a generator function."""

    def __init__(self, enabled: bool = True, name: str = "torch"):
        self.enabled, self.name = enabled, name
        self._ordinary: deque[_Job] = deque()
        self._urgent: deque[_Job] = deque()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._ident: int | None = None
        self._mode: _PauseAtEveryOp | None = None  # the running ordinary job's pause points (None: none runs)
        self._pausing = False  # urgent jobs are running at a pause point (no pausing inside them)
        self._slice_start = 0.0  # when the running ordinary job last started or resumed
        self.paused_s = 0.0  # total time ordinary jobs spent stopped for urgent work (work_clock subtracts it)

    # ---- handing work over ----------------------------------------------------------------------------------------
    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self._submit(self._ordinary, fn, args, kwargs)

    def urgent(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """fn(*args, **kwargs) on the thread, ahead of ordinary work: at the running job's next pause point."""
        return self._submit(self._urgent, fn, args, kwargs)

    def _submit(self, queue: deque, fn: Callable, args: tuple, kwargs: dict):
        if not self.enabled or threading.get_ident() == self._ident:  # a nested call would deadlock: run it inline
            return fn(*args, **kwargs)
        job = _Job(fn, args, kwargs)
        with self._changed:
            queue.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
            self._changed.notify()
        return job.future.result()

    def _loop(self) -> None:
        self._ident = threading.get_ident()
        _current.worker = self
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._urgent or self._ordinary)
                urgent = bool(self._urgent)
                job = (self._urgent if urgent else self._ordinary).popleft()
            if urgent:
                job.execute()
                continue
            self._slice_start, self._mode = time.perf_counter(), _PauseAtEveryOp(self)
            try:
                with self._mode:
                    job.execute()
            finally:
                self._mode = None
                _return_freed_memory()

    # ---- pause points ---------------------------------------------------------------------------------------------
    def pause(self) -> None:
        """On the thread, inside an ordinary job: run the urgent jobs waiting now, if the job's slice is over."""
        if self._mode is None or self._pausing or not self._urgent or threading.get_ident() != self._ident:
            return
        start = time.perf_counter()
        if start - self._slice_start < PAUSE_SLICE_S:
            return
        self._pausing = True
        try:
            with self._changed:
                waiting = list(self._urgent)
                self._urgent.clear()
            for job in waiting:
                job.execute()
        finally:
            self._pausing = False
            self._slice_start = time.perf_counter()
            self.paused_s += self._slice_start - start

    # ---- streams and handlers -------------------------------------------------------------------------------------
    def iterate(self, iterable: Iterable[T], urgent: bool = False) -> Iterator[T]:
        """The items of `iterable`, each produced on the thread (as ordinary work, or urgent work: a decode stream);
        closing this closes it there too."""
        if not self.enabled:
            yield from iterable
            return
        run = self.urgent if urgent else self.run
        it = run(iter, iterable)
        try:
            while (item := run(next, it, _END)) is not _END:
                yield item
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                run(close)

    def wrap(self, fn: F) -> F:
        """fn, running on the thread as ordinary work (a generator function stays one: its items are produced
        there)."""
        if not self.enabled:
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


class _PauseAtEveryOp(TorchFunctionMode):
    """While an ordinary job runs: every torch function it calls (the model's and explain/'s own tensor math) is a
    pause point first. A few microseconds per call, against ops of ~0.1-100 ms in explainer work."""

    def __init__(self, worker: TorchThread):
        super().__init__()
        self.worker = worker

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.worker.pause()
        return func(*args, **(kwargs or {}))


def _glibc_malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        return None


_MALLOC_TRIM = _glibc_malloc_trim()


def _return_freed_memory() -> None:
    """Give the memory a finished job freed back to the system. glibc keeps freed heap for reuse, and an explainer
    job frees hundreds of MB in pieces of many sizes: without this, the server's RSS stays near its highest and creeps
    up as those pieces fragment (bench/serve_bench.py measures RSS over 500 mixed requests). A few ms."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


@contextlib.contextmanager
def module_pause_points() -> Iterator[None]:
    """Within an ordinary job, pause points at every module's forward instead of every torch call, for code that
    times small ops (explain's cost comparison times a decode loop): a call through the TorchFunctionMode costs a few
    microseconds, ~15% of a small model's decode step; a global module forward hook, called ~3x less often, ~3%."""
    worker = getattr(_current, "worker", None)
    mode = worker._mode if worker is not None else None
    if mode is None:
        yield
        return
    mode.__exit__(None, None, None)  # the innermost mode (no job pushes another): out for the block
    hook = torch.nn.modules.module.register_module_forward_hook(lambda module, inputs, output: worker.pause())
    try:
        yield
    finally:
        hook.remove()
        mode.__enter__()


def pause_point() -> None:
    """Where long work on a TorchThread may stop for urgent work (a chat's next tokens); anywhere else, nothing."""
    worker = getattr(_current, "worker", None)
    if worker is not None:
        worker.pause()


def work_clock() -> float:
    """time.perf_counter(), less the time this thread's jobs spent paused for urgent work: for timing one's own
    work (explain's cost comparison) while chats stream."""
    worker = getattr(_current, "worker", None)
    return time.perf_counter() - (worker.paused_s if worker is not None else 0.0)
