"""Issue 23, ZeroGPU first: on a ZeroGPU Space the default model serves on the Space's CPU (no GPU call, so no
visitor's quota), a model too large for it runs each model handler as one GPU call sized from its request, a GPU call
ZeroGPU refuses reaches the visitor as a message in their language that says what still works, and a lesson's own
views come from its payload with no model call (demo/payloads.py).

The stand-in for `spaces` is test_zerogpu's FakeSpaces; `RefusingSpaces` refuses calls as spaces 0.51.3 does
(zero/client.py: schedule() raises, in the app's process, before any fork), with spaces' own error() where installed.
"""
from __future__ import annotations

import functools
import html
import inspect
import math
import sys

import gradio as gr
import pytest
import torch

from demo import gpu
from demo import models as models_module
from demo.app import build_app
from demo.gpu import VIEW_S, chat_seconds, serves_on_cpu
from demo.models import Models
from gpt.checkpoint import load_default
from gpt.nanochat import TODAY, GPTConfig, new_model
from test_zerogpu import HISTORY, FakeSpaces, chat_request, tiny_served
from text import t

QUOTA = ("ZeroGPU quota exceeded",
         "You have exceeded your free ZeroGPU quota (32s requested vs. 10s left). Try again in 0:41:27.")


def spaces_refusal(title: str, message: str) -> gr.Error:
    """What spaces raises for a refused call: its own zero.gradio.error where installed (CI installs it)."""
    try:
        from spaces.zero.gradio import error
    except ImportError:
        return gr.Error(message, title=title, print_exception=False)
    return error(title, message)


class RefusingSpaces(FakeSpaces):
    """FakeSpaces that, while `refusal` is (title, message), refuses every call before it starts: the duration asked
    is computed and recorded (as spaces does to ask for the GPU), then the refusal raised here."""

    def __init__(self):
        super().__init__()
        self.refusal: tuple[str, str] | None = None

    def GPU(self, task=None, *, duration=None, size=None):  # noqa: N802 - spaces' name
        if task is None:
            return functools.partial(self.GPU, duration=duration, size=size)
        run = super().GPU(task, duration=duration, size=size)

        def refuse(args, kwargs):
            if self.refusal is not None:
                self.calls.append((task.__name__, duration(*args, **kwargs)))
                raise spaces_refusal(*self.refusal)

        if inspect.isgeneratorfunction(task):
            @functools.wraps(task)
            def generator(*args, **kwargs):
                refuse(args, kwargs)
                yield from run(*args, **kwargs)
            return generator

        @functools.wraps(task)
        def call(*args, **kwargs):
            refuse(args, kwargs)
            return run(*args, **kwargs)
        return call


@pytest.fixture
def on_zerogpu(monkeypatch):
    """This process as a ZeroGPU Space's (the variable it sets, `spaces` a stand-in), its GPU device the CPU."""
    fake = RefusingSpaces()
    monkeypatch.setitem(sys.modules, "spaces", fake)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    cudnn = torch.backends.cuda.cudnn_sdp_enabled()

    def start():
        gpu.start()  # the real one: imports the stand-in, turns cuDNN attention off
        return torch.device("cpu")

    monkeypatch.setattr(models_module, "zerogpu_start", start)
    yield fake
    torch.backends.cuda.enable_cudnn_sdp(cudnn)


LANG_AT = 7  # the Inside tab's inputs: model, prompt, ids, layer, head, position, focus, lang, then the why-views'


def as_sent(args: tuple, request: gr.Request) -> tuple:
    """The Inside tab's inputs as Gradio passes them to show_views: the request after the language."""
    return (*args[:LANG_AT + 1], request, *args[LANG_AT + 1:])


def handlers(demo: gr.Blocks) -> dict:
    return {f.name: f.fn for f in demo.fns.values()}


def linear_weights(model: torch.nn.Module) -> int:
    """The model's matmul weights counted here: every Linear's weight (the lm_head included)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def test_the_default_model_fits_the_spaces_cpu_and_a_hub_model_does_not():
    default = load_default(device="cpu").model
    assert linear_weights(default) <= gpu.CPU_MAX_MATMUL_PARAMS and serves_on_cpu(default)
    with torch.device("meta"):  # nanochat d20 as karpathy's run has it: no memory, no init
        d20 = new_model(GPTConfig(sequence_len=2048, vocab_size=65536, n_layer=20, n_head=10, n_kv_head=10,
                                  n_embd=1280), TODAY)
    assert linear_weights(d20) > gpu.CPU_MAX_MATMUL_PARAMS and not serves_on_cpu(d20)


def test_on_zerogpu_the_default_model_makes_no_gpu_call(on_zerogpu):
    """The shipped model on a ZeroGPU Space: served on the CPU as anywhere else (the batched server, float32), and its
    chat, views, lessons and Generate steps run with no GPU call at all."""
    models = models_module.load()
    assert not models.zerogpu and models.main.device.type == "cpu" and models.main.dtype == torch.float32
    assert models.engine.server is not None  # the batched CPU server, not one eager GPU call per reply
    demo, payloads = build_app(models)
    fns = handlers(demo)
    items = list(fns["reply"](HISTORY, 0.0, 0, 1.0, 4, "1", "en", chat_request("cpu-reply")))
    assert items and "stopped by" in items[-1][1]  # a whole reply
    out = fns["show_views"]("loaded", "hello there", "", 0, 0, -1, "next_token", "zh", chat_request("cpu-views"))
    assert out[-1] and out[-1][0].name == "next_token"
    assert fns["advance"]("Once upon a time", 0.0, 0, 1, 4, 0, "en")[0] == 1
    assert on_zerogpu.decorated == [] and on_zerogpu.calls == []  # not one handler is even a GPU function


def test_on_zerogpu_a_model_too_large_for_the_cpu_runs_in_gpu_calls_sized_from_the_request(on_zerogpu,
                                                                                          monkeypatch):
    """A model over the CPU limit (the limit lowered under a tiny model, which stands in for a Hub one): every model
    handler is one GPU call, a reply's seconds grow with the tokens it asks for."""
    monkeypatch.setattr(gpu, "CPU_MAX_MATMUL_PARAMS", 0)
    models = models_module.load(random_config="n_layer=2,n_head=2,n_embd=64")
    assert models.zerogpu and models.engine.server is None
    fns = handlers(build_app(models)[0])
    config = models.main.model.config
    for max_tokens in (3, 200):
        list(fns["reply"](HISTORY, 0.0, 0, 1.0, max_tokens, "1", "en", chat_request(f"gpu-reply-{max_tokens}")))
        assert on_zerogpu.calls[-1] == ("reply", math.ceil(chat_seconds(max_tokens, config)))
    assert on_zerogpu.calls[-2][1] < on_zerogpu.calls[-1][1]
    fns["show_views"]("loaded", "hello there", "", 0, 0, -1, "shapes", "en", chat_request("gpu-views"))
    assert on_zerogpu.calls[-1] == ("compute_views", VIEW_S)
    fns["advance"]("Once upon a time", 0.0, 0, 1, 4, 0, "en")
    assert on_zerogpu.calls[-1] == ("advance", VIEW_S)


def test_a_quota_refusal_reaches_the_visitor_as_a_message_and_lessons_still_work(on_zerogpu, tiny_tokenizer):
    """ZeroGPU refuses every call: the views and a chat reply say so in the visitor's language, quoting spaces' own
    words (when to try again); a lesson's views, computed earlier for anyone, and the shapes of any config still
    come."""
    models = Models(tiny_served(tiny_tokenizer), zerogpu=True)
    demo, payloads = build_app(models)
    fns = handlers(demo)
    lesson = next(e for e in payloads.events if e.kind == "views" and e.lang == "zh")
    first = fns["show_views"](*as_sent(lesson.args, chat_request("before")))  # computed in a GPU call, kept for everyone
    on_zerogpu.refusal = QUOTA
    calls = len(on_zerogpu.calls)
    changed = (*lesson.args[:3], 1, *lesson.args[4:])  # the visitor moved the layer slider
    for lang in ("zh", "en"):
        asked = (*changed[:LANG_AT], lang, *changed[LANG_AT + 1:])
        with pytest.raises(gr.Error) as refused:
            fns["show_views"](*as_sent(asked, chat_request("after")))
        assert refused.value.message == html.escape(t("ui.zerogpu.quota", lang, why=QUOTA[1]), quote=False)
    assert "Try again in 0:41:27" in refused.value.message
    with pytest.raises(gr.Error) as refused:
        list(fns["reply"](HISTORY, 0.8, 50, 1.0, 8, "1", "zh", chat_request("after-reply")))
    assert refused.value.message == html.escape(t("ui.zerogpu.quota", "zh", why=QUOTA[1]), quote=False)
    assert [name for name, _ in on_zerogpu.calls[calls:]] == ["compute_views", "compute_views", "reply"]

    again = fns["show_views"](*as_sent(lesson.args, chat_request("lesson-after")))  # the lesson: from its payload
    assert len(on_zerogpu.calls) == calls + 3 and again[-1] is first[-1]
    shapes = fns["any_config_shapes"]("n_layer=2,n_head=2,n_embd=64", 1, 5, 0, "zh")
    assert shapes[0] is not None

    on_zerogpu.refusal = ("ZeroGPU queue timeout", "No GPU was available after 60s")
    with pytest.raises(gr.Error) as refused:
        fns["show_views"](*as_sent(changed, chat_request("busy")))
    assert refused.value.message == html.escape(t("ui.zerogpu.busy", "zh"), quote=False)


def test_lessons_are_served_from_their_payloads_with_no_model_call(tiny_tokenizer, monkeypatch):
    """warm() computes every lesson's event once (both languages); then every lesson's handler answers with no model
    call at all (any module called raises), and a changed request is computed as before."""
    models = Models(tiny_served(tiny_tokenizer))
    demo, payloads = build_app(models)
    fns = handlers(demo)
    assert {(e.lesson.id, e.lang) for e in payloads.events} == {
        (lesson.id, lang) for lesson in __import__("demo.lessons").lessons.LESSONS for lang in ("en", "zh")}
    assert payloads.warm() == len(payloads.events) and payloads.warm() == 0

    def no_model(*args, **kwargs):
        raise AssertionError("a model ran")

    handler_of = {"views": "show_views", "step": "lesson_step", "cost": "lesson_cost"}
    with monkeypatch.context() as m:
        m.setattr(torch.nn.Module, "__call__", no_model)
        for event in payloads.events:
            args = as_sent(event.args, chat_request("lesson")) if event.kind == "views" else event.args
            out = fns[handler_of[event.kind]](*args)
            assert out is not None, event.lesson.id
        with pytest.raises(gr.Error):  # not a lesson's: computed, so the model runs
            fns["show_views"]("loaded", "another prompt", "", 0, 0, -1, "next_token", "en", chat_request("x"))
