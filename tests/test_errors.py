"""One error path (issue 14): a user's mistake is a message in their language, never a bare "Error" and never a
blocked input; a chat history is a conversation in order; a refused message stays out of the history; no number that
is not a number gets through; chat Markdown fetches no image.

The API fuzz is tests/test_fuzz.py; what the browser shows is tests/test_browser_errors.py."""
from __future__ import annotations

import math
import re

import gradio as gr
import pytest

from demo import app
from demo.models import Models
from rules.inputs import InputError, fit_context, from_chatbot, to_chatbot
from text import t


def fn(demo: gr.Blocks, name: str):
    return next(f.fn for f in demo.fns.values() if f.name == name)


def msg(role: str, content: str = "x") -> dict:
    return {"role": role, "content": content}


# ---- a history is a conversation ------------------------------------------------------------------------------------
@pytest.mark.parametrize("roles, at", [
    (["assistant", "user"], 1), (["user", "user"], 2), (["user", "assistant", "assistant"], 3),
    (["user", "system"], 2), (["system", "system", "user"], 2), (["system", "assistant"], 2), (["bot"], 1),
])
def test_a_history_out_of_order_is_a_clear_error(roles: list[str], at: int) -> None:
    with pytest.raises(InputError) as caught:
        from_chatbot([msg(role) for role in roles])
    assert caught.value.key == "ui.bad_history" and caught.value.values["i"] == at
    assert str(at) in caught.value.message("zh") and "user" in caught.value.message("en")


@pytest.mark.parametrize("history", [
    ["user"], [{"role": "user"}], [{"role": "user", "content": None}], [{"role": "user", "content": 5}],
    [{"content": "x"}], "not a list", [["user", "x"]],
])
def test_a_history_that_is_no_list_of_messages_is_a_clear_error(history) -> None:
    with pytest.raises(InputError) as caught:
        from_chatbot(history)
    assert caught.value.key == "ui.bad_message"


def test_a_history_in_order_reads_back() -> None:
    ok = [msg("system", "be brief"), msg("user"), msg("assistant", ""), msg("user")]
    assert from_chatbot(to_chatbot(ok)) == ok
    assert from_chatbot([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]) \
        == [msg("user", "ab")]
    assert from_chatbot(None) == [] and from_chatbot([]) == []


# ---- fit_context ----------------------------------------------------------------------------------------------------
def long_chat(turns: int, words: int = 20) -> list[dict]:
    return [msg(r, "word " * words) for r in ("user", "assistant") * turns] + [msg("user", "hi")]


def test_fit_context_keeps_the_system_message_and_never_starts_with_a_reply(tiny_tokenizer) -> None:
    system = msg("system", "You are terse.")
    msgs = [system, *long_chat(3)]
    full = len(tiny_tokenizer.render_for_completion(msgs))
    for ctx in range(full - 60, full + 1, 3):  # every amount of room, until nothing has to go
        ids, dropped = fit_context(tiny_tokenizer, msgs, ctx + 4, 4)
        kept = [system, *msgs[1 + dropped:]] if dropped < len(msgs) - 1 else msgs[-1:]
        assert ids == tiny_tokenizer.render_for_completion(kept), ctx
        assert kept[0]["role"] == "system" and kept[1]["role"] == "user" and dropped % 2 == 0, ctx
    # Too little room for the system message too: the last message alone.
    alone = len(tiny_tokenizer.render_for_completion(msgs[-1:]))
    ids, dropped = fit_context(tiny_tokenizer, msgs, alone + 4, 4)
    assert ids == tiny_tokenizer.render_for_completion(msgs[-1:]) and dropped == len(msgs) - 1


def test_a_message_that_fits_but_leaves_less_than_the_reserve_is_answered_in_what_is_left(tiny_tokenizer) -> None:
    """The reserve (Max new tokens, at most half the context) was a reason to refuse a message that fits; now the
    reply gets what is left, and says so. Refused: only a message that leaves no room at all."""
    ctx = 64
    text = "word " * 20
    n = len(tiny_tokenizer.render_for_completion([msg("user", text)]))
    assert ctx // 2 < n < ctx  # more than the context minus the reserve of ctx // 2, less than the context
    ids, dropped = fit_context(tiny_tokenizer, [*long_chat(2), msg("assistant"), msg("user", text)], ctx, 256)
    assert len(ids) == n and dropped == 6
    from rules.inputs import context_notice

    assert context_notice(ctx, n, 0, 256, "zh") == t("ui.reply_room", "zh", n=n, ctx=ctx, room=ctx - n, max=256)
    assert context_notice(ctx, 10, 0, 8, "en") == ""  # room enough, nothing left out: no notice
    assert context_notice(ctx, 10, 2, 8, "en") == t("ui.dropped_turns", "en", ctx=ctx, n=2)
    with pytest.raises(InputError) as caught:
        fit_context(tiny_tokenizer, [msg("user", "word " * 200)], ctx, 8)
    assert caught.value.key == "ui.message_too_long"
    assert t("ui.max_tokens") in t("ui.reply_room", "en", n=1, ctx=2, room=1, max=3)  # names the setting


# ---- numbers --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 1e308 * 10])
def test_a_number_that_is_not_finite_is_a_clear_error(bad: float) -> None:
    from rules.inputs import check_numbers

    with pytest.raises(InputError) as caught:
        check_numbers([0.5, "text", None, bad])
    assert caught.value.key == "ui.bad_number"
    check_numbers([0.5, 2**70, -3, "nan", None, True])  # finite numbers and non-numbers pass (they are not numbers)


def test_nan_in_any_handler_is_a_message_in_the_users_language(demo: gr.Blocks) -> None:
    """Gradio's bounds check lets NaN through (NaN < 0 and NaN > 2 are both False): every handler refuses it."""
    cases = [("show_views", ("loaded", "hi", "", math.nan, 0, -1, "shapes", "zh")),
             ("advance", ("hi", math.nan, 50, 42, 16, 0, "zh")),
             ("cost", ("hi", math.nan, "zh")),
             ("add_user", ("hi", [], math.nan, "1", "zh"))]
    for name, args in cases:
        with pytest.raises(gr.Error) as caught:
            fn(demo, name)(*args)
        assert caught.value.message == t("ui.bad_number", "zh", value="nan"), name
    reply = fn(demo, "reply")
    with pytest.raises(gr.Error) as caught:
        list(reply([{"role": "user", "content": "hi"}], 0.8, math.nan, 1.0, 8, "1", "zh"))
    assert caught.value.message == t("ui.bad_number", "zh", value="nan")


# ---- the error path -------------------------------------------------------------------------------------------------
def test_any_failure_is_a_message_never_a_bare_error() -> None:
    """An InputError in the user's language (no traceback in the log: it is no bug), anything else a sentence naming
    what failed; gr.Error as raised."""
    from demo.models import in_users_language

    @in_users_language
    def mistake(lang: str):
        raise InputError("ui.empty_message")

    @in_users_language
    def bug(lang: str):
        return {}["missing"]

    @in_users_language
    def refused(lang: str):
        raise gr.Error("As written.")

    with pytest.raises(gr.Error) as caught:
        mistake("zh")
    assert caught.value.message == t("ui.empty_message", "zh") and not caught.value.print_exception
    with pytest.raises(gr.Error) as caught:
        bug("en")
    assert caught.value.message == t("ui.internal_error", "en", what="KeyError: 'missing'")
    assert caught.value.print_exception  # a bug: its traceback goes to the log
    with pytest.raises(gr.Error) as caught:
        refused("en")
    assert caught.value.message == "As written."


def test_a_failed_event_leaves_no_bare_error_badge_and_no_blocked_input(demo: gr.Blocks) -> None:
    """Gradio 6 marks every output of a failed event "error": an opaque cover with the bare word "Error" over each,
    blocking it until its × is pressed, while the reason is only in the toast; and for an event with queue=False it
    shows no toast at all (an empty message, Regenerate with no reply, Look inside an empty chat: just the covers).
    So the checks that can refuse are queued (their refusal is a toast with the reason), show no progress, and the
    stylesheet hides the cover."""
    for name in ("add_user", "drop_reply", "look_inside"):
        f = next(f for f in demo.fns.values() if f.name == name)
        assert f.queue and f.show_progress == "hidden", name
    assert '[data-testid="status-tracker"]:has(> .error)' in app.CSS
    assert app.launch_kwargs()["show_error"]  # Gradio's own errors (a value of the wrong type) carry their text


# ---- a refused message --------------------------------------------------------------------------------------------
def test_a_refused_message_stays_out_of_the_history_and_the_chat_goes_on(demo: gr.Blocks, models: Models) -> None:
    add = fn(demo, "add_user")
    history = to_chatbot([msg("user", "hello"), msg("assistant", "hi")])
    ctx = models.main.model.config.sequence_len
    for bad_message, seed, key in (("word " * ctx, "1", "ui.message_too_long"), ("fine", "x", "ui.bad_seed"),
                                   ("  ", "1", "ui.empty_message")):
        with pytest.raises(gr.Error) as caught:
            add(bad_message, history, 16, seed, "en")
        assert caught.value.message.startswith(t(key, "en", n=0, ctx=0)[:12]), key
    box, after, stats = add("next", history, 16, "1", "en")  # the history the refusals left is still a conversation
    assert box == "" and stats == "" and [m["role"] for m in from_chatbot(after)] == ["user", "assistant", "user"]


def test_a_message_left_without_a_reply_is_replaced_by_the_next(demo: gr.Blocks) -> None:
    """A reply that never came (stopped while it waited in the queue, or failed) leaves the user's message last: the
    next message takes its place instead of making two user turns in a row, which nothing could answer."""
    add = fn(demo, "add_user")
    _, after, _ = add("second try", to_chatbot([msg("user", "hello"), msg("assistant", "hi"), msg("user", "lost")]),
                   16, "1", "en")
    assert from_chatbot(after) == [msg("user", "hello"), msg("assistant", "hi"), msg("user", "second try")]


def test_regenerate_and_look_inside_refuse_with_a_reason(demo: gr.Blocks) -> None:
    for name, args, key in (("drop_reply", ([], "zh"), "ui.nothing_to_regenerate"),
                            ("look_inside", ([], "zh"), "ui.no_reply_yet"),
                            ("look_inside", (to_chatbot([msg("assistant"), msg("user")]), "zh"), "ui.bad_history"),
                            ("drop_reply", (to_chatbot([msg("user"), msg("user")]), "zh"), "ui.bad_history")):
        with pytest.raises(gr.Error) as caught:
            fn(demo, name)(*args)
        assert caught.value.message.startswith(t(key, "zh", i=2, role="user")[:4]), (name, key)


def test_stop_says_it_stopped(demo: gr.Blocks, models: Models) -> None:
    """Stop cancels the reply's event, which then never writes its last stats line (the reason it stopped): on the
    2-core machine most Stops left the line as it was mid-reply. The Stop button writes it itself."""
    from demo.replies import stats_line

    stop = next(f for f in demo.fns.values() if f.name == "stop_now")
    assert len(stop.outputs) == 1 and not stop.queue
    running = stats_line(models, 7, 1.0, 0.1, 3, None, "zh")
    assert stop.fn(running, "zh", None) == f"{running} · {t('ui.stats_stop', 'zh')}: {t('ui.stop_stopped', 'zh')}"
    ended = stats_line(models, 7, 1.0, 0.1, 3, "assistant_end", "en")
    assert stop.fn(ended, "en", None) == ended  # nothing was running: the line already says why it ended
    assert stop.fn("", "en", None).startswith(t("ui.stopped"))  # stopped while it waited for its turn


# ---- what the chat shows --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["![t](http://example.com/x.png)", "[![t](http://a/x.png)](http://b)",
                                  "![t][r]\n\n[r]: http://example.com/x.png", "!![t](http://a/x.png)"])
def test_chat_markdown_has_no_image_and_reads_back(text: str) -> None:
    shown = to_chatbot([msg("user", text)])[0]["content"]
    assert "![" not in shown and "<" not in shown
    assert from_chatbot([{"role": "user", "content": shown}])[0]["content"] == text


def test_one_token_is_singular(demo: gr.Blocks, models: Models) -> None:
    from demo.replies import stats_line

    assert stats_line(models, 1, 1.0, None, 0, None, "en").startswith("**1** token ·")
    assert stats_line(models, 2, 1.0, None, 0, None, "en").startswith("**2** tokens ·")
    from explain.generate import generate_view

    view = generate_view(models.main.model, models.main.tokenizer.encode("Once upon"), models.main.tokenizer, 1)
    shapes = app.inside.shapes_view(models.main.model.config, models.main.model.member, 1, 1, 0)
    for text in (view.text, shapes.text):
        assert not re.search(r"\b1 (new )?(tokens|rows)\b", text), text
