"""ZeroGPU mode (demo/gpu.py): the switch from the environment, what the app builds in it, the GPU calls' time budgets,
and the decorated handlers run as ZeroGPU runs them, in a forked process, with Stop reaching the fork.

`FakeSpaces` stands in for the `spaces` package on a ZeroGPU Space, minus the GPU: like spaces 0.51 it computes the
call's duration from the call's arguments in this process, pickles the arguments, runs the function in a fork (on a
new thread there) and streams a generator's items back pickled. Its queue holds one item, so the fork runs at most a
couple of items ahead of the reader: a Stop set after the first item must be seen before the reply ends. The real
`spaces`, where installed, is checked off ZeroGPU: there its decorator changes nothing.
"""
from __future__ import annotations

import functools
import inspect
import math
import multiprocessing
import os
import pickle
import sys
import threading
import types
from types import SimpleNamespace

import gradio as gr
import pytest
import torch

from demo import chat, gpu, replies
from demo.gpu import (BASE_S, DEFAULT_S, MAX_S, MIN_S, VIEW_S, FileFlag, chat_seconds, on_zerogpu,
                      paced_seconds)
from demo.models import Models, untrained
from gpt.checkpoint import LoadedModel
from gpt.nanochat import GPTConfig


class FakeSpaces(types.ModuleType):
    def __init__(self):
        super().__init__("spaces")
        self.decorated: list[str] = []  # names of the functions spaces.GPU was applied to
        self.calls: list[tuple[str, int]] = []  # (name, seconds asked) per call
        self.pids: list[int] = []  # the forks that ran them

    def GPU(self, task=None, *, duration=None, size=None):  # noqa: N802 - spaces' name
        if task is None:
            return functools.partial(self.GPU, duration=duration, size=size)
        self.decorated.append(task.__name__)

        def start(args, kwargs):
            seconds = duration(*args, **kwargs) if callable(duration) else duration
            self.calls.append((task.__name__, seconds))
            payload = pickle.dumps((args, kwargs))  # the arguments cross the fork pickled, as in spaces
            ctx = multiprocessing.get_context("fork")
            items = ctx.Queue(maxsize=1)

            def child():
                def work():
                    a, k = pickle.loads(payload)
                    try:
                        if inspect.isgeneratorfunction(task):
                            for item in task(*a, **k):
                                items.put(("item", item))
                            items.put(("end", os.getpid()))
                        else:
                            items.put(("end", (os.getpid(), task(*a, **k))))
                    except Exception as e:  # noqa: BLE001 - the caller raises it
                        items.put(("error", e))
                thread = threading.Thread(target=work)  # spaces runs the task on a new thread of the fork
                thread.start()
                thread.join()

            process = ctx.Process(target=child, daemon=True)
            process.start()
            return items, process

        def receive(items, process):
            kind, value = items.get(timeout=120)
            if kind == "error":
                raise value
            return kind, value

        if inspect.isgeneratorfunction(task):
            @functools.wraps(task)
            def generator(*args, **kwargs):
                items, process = start(args, kwargs)
                try:
                    while (got := receive(items, process))[0] == "item":
                        yield got[1]
                    self.pids.append(got[1])
                finally:
                    process.kill()
                    process.join()
            return generator

        @functools.wraps(task)
        def call(*args, **kwargs):
            items, process = start(args, kwargs)
            try:
                _, (pid, result) = receive(items, process)
            finally:
                process.join(timeout=60)
            self.pids.append(pid)
            return result
        return call


def tiny_served(tokenizer) -> LoadedModel:
    """A random-init model whose lm_head is zero: every logit is 0, so greedy decoding repeats token 0 and never
    writes a stop token (a reply runs to max_tokens unless stopped)."""
    config = GPTConfig(sequence_len=256, vocab_size=tokenizer.vocab_size, n_layer=2, n_head=2, n_kv_head=2, n_embd=64)
    return untrained(config, tokenizer, torch.device("cpu"))


@pytest.fixture(scope="module")
def fake_spaces():
    fake = FakeSpaces()
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "spaces", fake)
        yield fake


@pytest.fixture(scope="module")
def zerogpu_app(fake_spaces, tiny_tokenizer):
    """The app built in ZeroGPU mode (as load() builds it there, on the CPU instead of spaces' emulated cuda)."""
    from demo.app import build_demo

    models = Models(tiny_served(tiny_tokenizer), zerogpu=True)
    demo = build_demo(models)
    fns = {f.name: f.fn for f in demo.fns.values()}
    return models, fns


def chat_request(session: str) -> gr.Request:
    return gr.Request(session_hash=session)


HISTORY = [{"role": "user", "content": "hello"}]


# ---- the switch ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, expected", [("true", True), ("True", True), ("1", True), ("t", True),
                                             ("false", False), ("0", False), ("", False), (None, False)])
def test_on_zerogpu_reads_the_variable_a_zerogpu_space_sets(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    else:
        monkeypatch.setenv("SPACES_ZERO_GPU", value)
    assert on_zerogpu() is expected


def test_load_switches_mode_on_the_environment(monkeypatch, capsys, fake_spaces):
    """On ZeroGPU: spaces is imported before the model loads, no batched server, no compile (with a warning), and
    cuDNN attention is off; elsewhere the batched server as before."""
    from demo import models as models_module

    spec = "n_layer=2,n_head=2,n_embd=64"
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    plain = models_module.load(random_config=spec)
    assert not plain.zerogpu and plain.engine.server is not None

    started = []

    def start():  # the real start (it imports the fake spaces), then the CPU instead of spaces' emulated cuda
        started.append(gpu.start())
        return torch.device("cpu")

    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.setattr(models_module, "zerogpu_start", start)
    monkeypatch.setattr(models_module, "serves_on_cpu", lambda model: False)  # as a Hub-size model (test_zerogpu_hosting)
    cudnn = torch.backends.cuda.cudnn_sdp_enabled()
    try:
        zero = models_module.load(random_config=spec, compile=True, fused=True, device="cpu")
        assert not torch.backends.cuda.cudnn_sdp_enabled()
    finally:
        torch.backends.cuda.enable_cudnn_sdp(cudnn)
    assert started == [torch.device("cuda")]
    assert zero.zerogpu and zero.engine.server is None and not zero.compile and not zero.fused
    out = capsys.readouterr().out
    assert "--compile is ignored" in out and "--device cpu is ignored" in out and "--fused is ignored" in out


def test_start_without_the_spaces_package_says_what_to_add(monkeypatch):
    monkeypatch.setitem(sys.modules, "spaces", None)  # import spaces -> ImportError
    with pytest.raises(RuntimeError, match="add `spaces` to requirements.txt"):
        gpu.start()


def test_zerogpu_app_makes_gpu_calls_of_model_work_only(zerogpu_app, fake_spaces):
    models, fns = zerogpu_app
    assert models.engine.server is None
    for name in ("reply", "compute_views", "open_view", "state_after", "reset_steps", "advance", "autoplay",
                 "cost"):
        assert name in fake_spaces.decorated, name
    # checks before model work, and handlers with no model work (the meta device, a browser drawing PNGs): no GPU call
    # and the handlers that serve a lesson's payload, else call a model handler (demo/payloads.py)
    for name in ("add_user", "drop_reply", "look_inside", "any_config_shapes", "view_png", "export_zip",
                 "show_views", "refresh", "lesson_step", "lesson_cost"):
        assert name not in fake_spaces.decorated, name
        assert name in fns, name


# ---- time budgets ----------------------------------------------------------------------------------------------------
def test_chat_seconds_grow_with_the_reply_and_the_model_and_stop_at_the_context():
    d8 = SimpleNamespace(n_layer=8, sequence_len=512)
    d32 = SimpleNamespace(n_layer=32, sequence_len=2048)
    assert chat_seconds(1, d8) > BASE_S
    assert chat_seconds(256, d8) < chat_seconds(512, d8) == chat_seconds(10**6, d8)  # a reply fits the context
    assert chat_seconds(256, d8) < chat_seconds(256, d32)
    assert chat_seconds(2048, d32) < MAX_S  # the longest reply of nanochat d32 fits a call
    assert paced_seconds(64, 0.35) > paced_seconds(16, 0.35) > BASE_S


def test_gpu_asks_for_whole_seconds_within_bounds(fake_spaces):
    asked = []

    def fn(max_tokens, lang="en"):
        return f"{max_tokens} {lang}"

    for duration, args in ((lambda a: 3.2, (1,)), (lambda a: a["max_tokens"] + 0.1, (30,)),
                           (lambda a: a["max_tokens"], (10**6,)), (lambda a: a["max_tokens"], (float("nan"),)),
                           (lambda a: float(a["max_tokens"]), ("many",)), (None, (5, "zh"))):
        before = len(fake_spaces.calls)
        assert gpu.gpu(fn, duration)(*args) == fn(*args)  # it ran, in a fork, with its arguments
        asked.append(fake_spaces.calls[before][1])
    assert asked == [MIN_S, 31, MAX_S, DEFAULT_S, DEFAULT_S, VIEW_S]
    assert BASE_S < VIEW_S < DEFAULT_S  # the explainer's calls ask for less than spaces' default: better priority


# ---- the decorated paths, in a fork -----------------------------------------------------------------------------------
def read_reply(reply, max_tokens: int, request: gr.Request, stop=None) -> list:
    """Every item of a greedy reply; stop() is called after the first one."""
    items = []
    for item in reply(HISTORY, 0.0, 0, 1.0, max_tokens, "1", "en", request):
        items.append(item)
        if len(items) == 1 and stop is not None:
            stop()
    return items


def test_stop_reaches_a_reply_decoding_in_a_fork(zerogpu_app, fake_spaces, monkeypatch):
    models, fns = zerogpu_app
    monkeypatch.setattr(replies, "UPDATE_EVERY_S", 0.0)  # an item per token (the fork inherits it)
    request, max_tokens = chat_request("zerogpu-stop"), 150
    calls = len(fake_spaces.calls)

    items = read_reply(fns["reply"], max_tokens, request, stop=lambda: fns["stop_now"]("", "en", request))
    assert fake_spaces.pids[-1] != os.getpid()  # it ran in a fork
    assert fake_spaces.calls[calls] == ("reply", math.ceil(chat_seconds(max_tokens, models.main.model.config)))
    stats = items[-1][1]
    assert "stopped by: Stop button" in stats
    assert len(items) < 10  # the fork ran at most a few tokens past the Stop, not to max_tokens

    # The next reply clears the flag and runs to its end
    items = read_reply(fns["reply"], 20, request)
    assert "stopped by: max tokens" in items[-1][1] and len(items) == 21


def test_a_threading_event_would_not_reach_the_fork(zerogpu_app, fake_spaces, monkeypatch):
    """The control: the same Stop, with the flag of a single process, is never seen by the fork."""
    _, fns = zerogpu_app
    monkeypatch.setattr(replies, "UPDATE_EVERY_S", 0.0)
    one_process = replies.stop_flag
    monkeypatch.setattr(chat, "stop_flag", lambda request, across_forks=False: one_process(request))
    request, max_tokens = chat_request("zerogpu-event"), 60

    items = read_reply(fns["reply"], max_tokens, request, stop=lambda: fns["stop_now"]("", "en", request))
    assert "stopped by: max tokens" in items[-1][1] and len(items) == max_tokens + 1


def test_a_refusal_in_the_fork_reaches_the_user_in_their_language(zerogpu_app, fake_spaces):
    _, fns = zerogpu_app
    calls = len(fake_spaces.calls)
    with pytest.raises(gr.Error) as refused:
        list(fns["reply"](HISTORY, 0.8, 50, 1.0, float("nan"), "1", "zh", chat_request("zerogpu-nan")))
    assert len(fake_spaces.calls) == calls  # refused here, before a GPU call: a bad input spends no quota
    assert "Error" not in refused.value.message and refused.value.message.strip()
    assert any("\u4e00" <= ch <= "\u9fff" for ch in refused.value.message)  # in Chinese, as asked


def test_explainer_views_in_a_fork_leave_their_files_to_this_process(zerogpu_app, fake_spaces):
    _, fns = zerogpu_app
    calls = len(fake_spaces.calls)
    out = fns["show_views"]("loaded", "hello there", "", 0, 0, -1, "all", "en", chat_request("zerogpu-views"))
    assert fake_spaces.calls[calls] == ("compute_views", VIEW_S)
    assert fake_spaces.pids[-1] != os.getpid()
    csvs = [v for v in out if isinstance(v, str) and v.endswith(".csv")]
    assert csvs and all(os.path.getsize(path) > 0 for path in csvs)  # written by the fork, readable here
    assert out[-1] and all(hasattr(view, "fig") for view in out[-1])  # the views came back pickled


def test_file_flag_is_seen_by_another_process(tmp_path):
    flag = FileFlag(tmp_path / "session" / "stop")
    ctx = multiprocessing.get_context("fork")
    seen = ctx.Queue()
    waiting = ctx.Event()

    def child():
        waiting.set()
        for _ in range(500):
            if flag.is_set():
                seen.put(True)
                return
            threading.Event().wait(0.01)
        seen.put(False)

    process = ctx.Process(target=child)
    process.start()
    assert waiting.wait(30)
    assert not flag.is_set()
    flag.set()
    assert seen.get(timeout=30) is True
    process.join()
    flag.clear()
    assert not flag.is_set()


# ---- the real spaces package, off ZeroGPU -----------------------------------------------------------------------------
def test_real_spaces_changes_nothing_off_zerogpu(monkeypatch, tiny_tokenizer):
    """Where `spaces` is installed (not on ZeroGPU), the ZeroGPU mode's handlers run as they are, in this process."""
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    if isinstance(sys.modules.get("spaces"), FakeSpaces):
        monkeypatch.delitem(sys.modules, "spaces")
    spaces = pytest.importorskip("spaces")
    assert not isinstance(spaces, FakeSpaces)

    def fn(x):
        return x

    assert spaces.GPU(fn) is fn and spaces.GPU(duration=lambda x: 5)(fn) is fn
    assert gpu.gpu(fn, lambda a: 5) is fn
    models = Models(tiny_served(tiny_tokenizer), zerogpu=True)
    reply = chat.make_reply(models)
    assert inspect.isgeneratorfunction(reply)
    items = list(reply(HISTORY, 0.0, 0, 1.0, 12, "1", "en", chat_request("real-spaces")))
    assert "stopped by: max tokens" in items[-1][1]
