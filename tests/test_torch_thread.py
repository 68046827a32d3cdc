"""gpt/torch_thread.py: one thread runs every call, results and errors come back, streams stay lazy and closable."""
from __future__ import annotations

import contextvars
import inspect
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from gpt.torch_thread import TorchThread

REQUEST = contextvars.ContextVar("request", default=None)


def test_calls_from_many_threads_all_run_on_one_other_thread():
    worker = TorchThread()
    with ThreadPoolExecutor(8) as pool:
        idents = list(pool.map(lambda i: worker.run(lambda: (threading.get_ident(), i * i)), range(64)))
    assert [sq for _, sq in idents] == [i * i for i in range(64)]
    ran_on = {ident for ident, _ in idents}
    assert len(ran_on) == 1 and threading.get_ident() not in ran_on


def test_errors_reach_the_caller_and_the_thread_keeps_serving():
    worker = TorchThread()
    with pytest.raises(ZeroDivisionError):
        worker.run(lambda: 1 / 0)
    assert worker.run(sum, [1, 2, 3]) == 6


def test_a_call_made_on_the_thread_runs_inline_instead_of_deadlocking():
    worker = TorchThread()
    outer = worker.run(lambda: (threading.get_ident(), worker.run(threading.get_ident)))
    assert outer[0] == outer[1]


def test_the_callers_context_variables_are_visible():
    worker = TorchThread()
    REQUEST.set("request-1")
    assert worker.run(REQUEST.get) == "request-1"
    assert worker.run(lambda: threading.get_ident()) != threading.get_ident()


def test_iterate_produces_each_item_on_the_thread_lazily_and_closes_there():
    worker = TorchThread()
    log = []

    def items():
        try:
            for i in range(10):
                log.append(("item", i, threading.get_ident()))
                yield i
        finally:
            log.append(("closed", None, threading.get_ident()))

    stream = worker.iterate(items())
    assert next(stream) == 0 and next(stream) == 1
    assert len(log) == 2  # lazy: nothing is produced ahead of the reader
    stream.close()
    assert [kind for kind, _, _ in log] == ["item", "item", "closed"]
    assert len({ident for _, _, ident in log}) == 1 and log[0][2] != threading.get_ident()
    assert list(worker.iterate(iter([]))) == []


def test_wrap_keeps_generator_functions_and_signatures():
    worker = TorchThread()

    def handler(history: list, lang: str = "en"):
        for ch in lang:
            yield ch, threading.get_ident()

    def plain(x: int) -> int:
        return x + 1

    wrapped = worker.wrap(handler)
    assert inspect.isgeneratorfunction(wrapped)  # a web framework streams generator functions' items
    assert inspect.signature(wrapped) == inspect.signature(handler)
    out = list(wrapped([], lang="zh"))
    assert [ch for ch, _ in out] == ["z", "h"] and threading.get_ident() not in {i for _, i in out}
    assert worker.wrap(plain)(1) == 2 and not inspect.isgeneratorfunction(worker.wrap(plain))


def test_disabled_runs_in_the_callers_thread_and_wrap_is_the_identity():
    worker = TorchThread(enabled=False)
    assert worker.run(threading.get_ident) == threading.get_ident()
    assert [i for i in worker.iterate(range(3))] == [0, 1, 2]
    fn = lambda: 1  # noqa: E731
    assert worker.wrap(fn) is fn


# ---- urgent work: a chat's decode steps go ahead of a long explainer job ---------------------------------------------
def _submit_when_started(worker: TorchThread, started: threading.Event, fn) -> tuple[threading.Thread, list]:
    """worker.urgent(fn) from another thread, once `started` is set; its result (or error) lands in the list."""
    out: list = []

    def call() -> None:
        started.wait(30)
        try:
            out.append(worker.urgent(fn))
        except Exception as e:  # noqa: BLE001 - the test looks at it
            out.append(e)
    thread = threading.Thread(target=call)
    thread.start()
    return thread, out


def test_urgent_work_runs_inside_a_long_job_at_its_pause_points_on_the_same_thread():
    from gpt.torch_thread import pause_point

    worker = TorchThread()
    started, urgent_ran = threading.Event(), threading.Event()

    def long_job():
        started.set()
        for _ in range(3000):  # up to 30 s: far longer than the slice; ends as soon as the urgent job has run
            if urgent_ran.is_set():
                return "urgent ran while I was running", threading.get_ident()
            pause_point()
            threading.Event().wait(0.01)
        return "never", threading.get_ident()

    thread, out = _submit_when_started(worker, started, lambda: (urgent_ran.set(), threading.get_ident())[1])
    said, ident = worker.run(long_job)
    thread.join()
    assert said == "urgent ran while I was running"
    assert out == [ident]  # on the one thread, nested in the long job


def test_every_torch_call_is_a_pause_point():
    import torch

    worker = TorchThread()
    started, urgent_ran = threading.Event(), threading.Event()
    model = torch.nn.Linear(8, 8)

    def long_tensor_math():  # no pause_point() call of its own: a module, and plain ops
        started.set()
        for _ in range(200_000):
            if urgent_ran.is_set():
                return True
            (model(torch.ones(1, 8)) * 2).sum()
        return False

    thread, out = _submit_when_started(worker, started, urgent_ran.set)
    assert worker.run(long_tensor_math)
    thread.join()
    assert out == [None]


def test_an_urgent_failure_reaches_its_caller_and_the_long_job_goes_on():
    from gpt.torch_thread import pause_point

    worker = TorchThread()
    started, urgent_done = threading.Event(), threading.Event()

    def long_job():
        started.set()
        for _ in range(3000):
            pause_point()
            if urgent_done.is_set():
                return "finished"
            threading.Event().wait(0.01)
        return "never"

    def failing():
        urgent_done.set()
        raise ZeroDivisionError("urgent")

    thread, out = _submit_when_started(worker, started, failing)
    assert worker.run(long_job) == "finished"
    thread.join()
    assert isinstance(out[0], ZeroDivisionError)
    assert worker.run(sum, [1, 2]) == 3  # the thread still serves


def test_work_clock_does_not_count_the_time_paused_for_urgent_work():
    import time

    from gpt.torch_thread import pause_point, work_clock

    worker = TorchThread()
    started, urgent_done = threading.Event(), threading.Event()

    def timed_job():
        started.set()
        wall, work = time.perf_counter(), work_clock()
        while not urgent_done.is_set():
            pause_point()
            threading.Event().wait(0.01)
        return time.perf_counter() - wall, work_clock() - work

    def slow_urgent():
        threading.Event().wait(0.5)
        urgent_done.set()

    thread, _ = _submit_when_started(worker, started, slow_urgent)
    wall, work = worker.run(timed_job)
    thread.join()
    assert wall >= 0.5 and wall - work >= 0.5  # the urgent job's half second is not the timed job's



def test_module_pause_points_swap_the_per_op_ones_for_module_forwards_and_back():
    """Inside module_pause_points(), a plain op is no pause point but a module's forward is; after it, ops are again."""
    import torch

    from gpt.torch_thread import module_pause_points

    worker = TorchThread()
    layer = torch.nn.Linear(4, 4)
    stops: list[str] = []

    def job():
        worker.pause = lambda: stops.append(where)  # count the pause points reached (not an urgent job's effect)
        nonlocal where
        where = "op, coarse"
        with module_pause_points():
            torch.ones(3) + 1
            where = "module, coarse"
            layer(torch.ones(1, 4))
        where = "op, after"
        torch.ones(3) * 2
        return stops

    where = ""
    seen = worker.run(job)
    assert "op, coarse" not in seen and "module, coarse" in seen and "op, after" in seen
