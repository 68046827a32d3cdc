"""demo/ is wiring: every queued event goes through Models.handler, user-input errors arrive in the user's language,
a session's stop flag goes when the session does, and the parsing the UI relies on (rules/inputs.py) behaves."""
from __future__ import annotations

import threading

import gradio as gr
import pytest
import torch

from demo import replies, scratch
from demo.models import Models, load
from rules.inputs import (MAX_GEN_STEPS, MAX_ROWS, SETTINGS, InputError, fit_context, forward_request, parse_config,
                            from_chatbot, generation_prompt, parse_ids, parse_seed, to_chatbot)
from text import t
from gpt.checkpoint import random_model
from gpt.nanochat import TODAY, TUTORIAL, GPTConfig, member


def event_fns(demo: gr.Blocks, name: str) -> list:
    return [f.fn for f in demo.fns.values() if f.name == name]


def test_every_queued_event_is_a_model_handler(demo: gr.Blocks):
    """Queued events are where model work runs; each must go through Models.handler (torch thread, ZeroGPU,
    errors in the user's language). Instant events (queue=False) and the page's unload are the only others."""
    queued = [f for f in demo.fns.values() if f.fn is not None and f.queue and (None, "unload") not in f.targets]
    assert len(queued) > 10
    assert [f.name for f in queued if not getattr(f.fn, "model_handler", False)] == []
    plain = [f for f in demo.fns.values() if f.fn is not None and not f.queue]
    assert all(not getattr(f.fn, "model_handler", False) for f in plain)


def test_bad_input_is_an_error_in_the_users_language(demo: gr.Blocks, models: Models):
    run = event_fns(demo, "show_views")[0]
    for lang in ("zh", "en"):
        with pytest.raises(gr.Error) as caught:
            run("loaded", "", "1, x, 2", 0, 0, -1, "all", lang)
        v = models.main.model.config.vocab_size
        assert caught.value.message == t("ui.bad_ids", lang, v=v, bad="x")
    step = event_fns(demo, "advance")[0]
    with pytest.raises(gr.Error) as caught:
        step("", 0.8, 50, 42, 16, 0, "zh")
    assert caught.value.message == t("ui.empty_prompt", "zh")


def test_a_sessions_stop_flag_goes_with_the_session(demo: gr.Blocks):
    class Request:
        session_hash = "closing-tab"

    flag = replies.stop_flag(Request())
    assert isinstance(flag, threading.Event) and replies._STOP["closing-tab"] is flag
    unload = [f.fn for f in demo.fns.values() if (None, "unload") in f.targets]
    assert unload == [replies.forget_session, scratch.forget_session]  # tests/test_clean.py: the session's files
    unload[0](Request())
    assert "closing-tab" not in replies._STOP


def test_parse_ids():
    req = parse_ids("1, 2, 3 | 4; 5 6 7 | 8", 100)
    assert req.ids == [[1, 2, 3, 4], [5, 6, 7, 8]] and req.prefix == 3
    drawn = torch.randint(0, 50, (2, 4), generator=torch.Generator().manual_seed(0))  # T + 1 a row, as nanochat's loader
    req = parse_ids("random 2x3", 50)
    assert req.ids == drawn[:, :3].tolist() and req.next_ids == drawn[:, 3].tolist()
    for bad, key in (("1, 2; 3", "ui.ragged_ids"), ("1, 100", "ui.bad_ids"), ("²", "ui.bad_ids"),
                     ("9" * 5000, "ui.bad_ids"), ("", "ui.empty_prompt"), ("random 9x2", "ui.too_big"),
                     ("random 0x2", "ui.bad_ids"), ("; ".join(["1"] * (MAX_ROWS + 1)), "ui.too_big")):
        with pytest.raises(InputError) as caught:
            parse_ids(bad, 100)
        assert caught.value.key == key, bad


def test_seed_and_settings():
    assert parse_seed("random") is None and parse_seed(" 7 ") == 7 and parse_seed(3.0) == 3
    for bad in ("1.5", "-1", "abc", str(2**63)):
        with pytest.raises(InputError):
            parse_seed(bad)
    assert all(s.lo <= s.default <= s.hi for s in SETTINGS.values())


def test_fit_context_drops_oldest_turns(tiny_tokenizer):
    msgs = [{"role": r, "content": "word " * 20} for r in ("user", "assistant") * 3] + [{"role": "user",
                                                                                         "content": "hi"}]
    full = len(tiny_tokenizer.render_for_completion(msgs))
    ids, dropped = fit_context(tiny_tokenizer, msgs, full + 10, 10)
    assert dropped == 0 and len(ids) == full
    ids, dropped = fit_context(tiny_tokenizer, msgs, full, 10)
    assert dropped == 2 and ids == tiny_tokenizer.render_for_completion(msgs[2:])
    with pytest.raises(InputError) as caught:
        fit_context(tiny_tokenizer, [{"role": "user", "content": "word " * 200}], 64, 8)
    assert caught.value.key == "ui.message_too_long"


def test_chat_text_is_escaped_and_restored():
    msgs = [{"role": "user", "content": "<img src=x onerror=alert(1)> & *bold*"}]
    shown = to_chatbot(msgs)
    assert "<" not in shown[0]["content"] and "*bold*" in shown[0]["content"]
    assert from_chatbot(shown) == msgs


def test_prompts_are_cut_to_fit(tiny_tokenizer):
    model = random_model(GPTConfig(sequence_len=80, vocab_size=tiny_tokenizer.vocab_size, n_layer=1, n_head=2,
                                   n_kv_head=2, n_embd=16), tiny_tokenizer).model
    text = "word " * 100
    n = len(tiny_tokenizer.encode(text))
    req = forward_request(tiny_tokenizer, model, text, "", "zh")
    assert len(req.ids[0]) == 80 and req.warnings == [t("ui.prompt_too_long", "zh", n=n, ctx=80)]
    ids, warnings = generation_prompt(tiny_tokenizer, text, 80, "en")
    assert len(ids) == 80 - MAX_GEN_STEPS and warnings == [t("ui.prompt_too_long", "en", n=n, ctx=80 - MAX_GEN_STEPS)]


def test_a_config_typed_by_hand():
    c, m = parse_config("arch=nanochat-2026-07,n_layer=20,n_head=10,n_embd=1280,vocab_size=65536,sequence_len=2048")
    assert (m, c.n_layer, c.n_kv_head, c.window_pattern) == (TODAY, 20, 10, "SSSL")
    assert parse_config("n_layer=2").member is TUTORIAL and parse_config("n_layer=2").config.window_pattern == "L"
    spec = parse_config("window_pattern=SL")  # a window pattern implies today's member (a825e63)
    assert spec.config.window_pattern == "SL" and spec.member is TODAY
    assert parse_config("arch=f1bf69d,n_layer=3").member is member("f1bf69d")  # any commit of the family
    for bad in ("n_layer=x", "foo=1", "n_head=3", "window_pattern=SX", "arch=gpt5", "n_layer", "n_layer=0",
                "n_layer=" + "9" * 30, "n_embd=12,n_head=4"):
        with pytest.raises(InputError) as caught:
            parse_config(bad)
        assert caught.value.key == "ui.bad_config", bad


def test_shapes_of_any_config_and_escaped_errors(demo: gr.Blocks):
    draw = event_fns(demo, "any_config_shapes")[0]
    _, text, table = draw("arch=nanochat-2026-07,n_layer=20,n_head=10,n_embd=1280,vocab_size=65536,"
                          "sequence_len=2048", 3, 7, 100, "en")
    concrete = dict(zip(table.iloc[:, 1], table.iloc[:, 4]))  # name -> concrete shape (headers are translated)
    assert concrete["return logits"] == "[3, 7, 65536]" and concrete["blocks.0.attn.k"] == "[3, 10, 107, 128]"
    assert concrete["transformer.wte.weight"] == "[65536, 1280]" and "embed_smear" in concrete
    with pytest.raises(gr.Error) as caught:
        draw("n_layer=<img src=x onerror=alert(1)>", 1, 5, 0, "zh")
    assert "<img" not in caught.value.message and "&lt;img" in caught.value.message
    assert caught.value.message.startswith(t("ui.bad_config", "zh", why="", keys="")[:6])


def test_then_and_now_puts_a_model_of_the_other_architecture_beside(demo: gr.Blocks, models: Models):
    run = event_fns(demo, "show_views")[0]
    for which in ("tutorial", "tutorial_2026", "loaded"):
        out = run(which, "Once upon a time", "100, 200, 300", 0, 0, -1, "then_now", "en")
        table = out[4 + 3]  # the first view slot: (column, plot, text, table, csv)
        names = set(table.iloc[:, 0])
        assert {"embed_smear", "backout", "embed_norm", "logits"} <= names, which
        archs_shown = {models.pick(which).arch, models.counterpart(which).arch}
        assert archs_shown == {TUTORIAL.name, TODAY.name} == {"4a87a0d", "a825e63"}, which


def test_work_is_bounded_by_a_budget_scaled_to_the_model(demo: gr.Blocks, models: Models):
    """The tester's heavy requests are refused with the limit named (random 8x1024 on the tutorial model took 74 s and
    9 GB; the cost comparison at 256 tokens 153 s), while the presets still run."""
    from rules import inputs

    tutorial = models.pick("tutorial").model
    # the limits, recomputed here from their definitions
    V = tutorial.config.vocab_size
    assert 8 * 1024 * V * 4 > inputs.LOGIT_BYTES >= 2 * 128 * V * 4  # random 8x1024 over, the 2x128 preset under
    run = event_fns(demo, "show_views")[0]
    with pytest.raises(gr.Error) as caught:
        run("tutorial", "", "random 8x1024", 0, 0, -1, "all", "en")
    m = inputs.max_forward_tokens(tutorial)
    assert caught.value.message == t("ui.over_forward_budget", "en", rows=8, T=1024, limit=m)
    assert inputs.forward_fits(tutorial, 1, m) and (m == tutorial.config.sequence_len
                                                    or not inputs.forward_fits(tutorial, 1, m + 1))
    out = run("tutorial", "", "random 2x128", 0, 0, -1, "training", "en")  # the tutorial's training example runs
    assert "256" in out[4 + 2] or "254" in out[4 + 2]  # its text counts the examples
    cost = event_fns(demo, "cost")[0]
    with pytest.raises(gr.Error) as caught:
        cost("Once upon a time", 256, "en")
    P = len(models.main.tokenizer.encode("Once upon a time"))
    lengths = [4, 8, 16, 32, 64, 128, 256]
    main = models.main.model
    fitting = [n for n in lengths if inputs.generate_cost(main, P, [k for k in lengths if k <= n], True)
               <= inputs.GENERATE_FLOPS]
    assert caught.value.message == t("ui.over_generate_budget", "en", n=256, P=P, limit=max(fitting))
    with pytest.raises(InputError) as too_long:
        inputs.cut_text("x" * (inputs.MAX_PROMPT_CHARS + 1))
    assert too_long.value.key == "ui.prompt_chars"


@pytest.mark.parametrize("which", ["loaded", "tutorial_2026"])
def test_the_recorded_bytes_budget_counts_what_a_trace_really_keeps(models: Models, which: str):
    """recorded_bytes (the memory budget of one Inside request) against the bytes of every tensor a real trace holds:
    within 15%, on both architectures."""
    from rules import inputs
    from explain.trace import trace_forward

    model = models.pick(which).model
    ids = torch.randint(0, model.config.vocab_size, (2, 48), generator=torch.Generator().manual_seed(0)).tolist()
    trace = models.run(trace_forward, model, ids, None)
    held = sum(x.numel() * x.element_size() for x in trace.rec.values())
    assert abs(inputs.recorded_bytes(model.config, 2, 48) / held - 1) < 0.15


def test_a_huge_chat_message_is_refused_before_it_is_tokenized(tiny_tokenizer, monkeypatch):
    from rules import inputs

    calls = []
    monkeypatch.setattr(tiny_tokenizer, "render_for_completion", lambda m: calls.append(m) or [1, 2, 3])
    with pytest.raises(InputError) as caught:
        inputs.with_message(tiny_tokenizer, [], "x" * (inputs.MAX_PROMPT_CHARS + 1), 64, 8, "random")
    assert caught.value.key == "ui.prompt_chars" and calls == []
    assert inputs.with_message(tiny_tokenizer, [], "hi", 64, 8, "random")[-1] == {"role": "user", "content": "hi"}


def test_a_device_that_is_not_there_falls_back_to_the_cpu_with_a_notice():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    models = load(device="cuda")
    assert models.main.device.type == "cpu" and "CUDA is not available" in models.notice
