"""Chat tab: a streaming multi-turn chat in nanochat's format, with Stop / Regenerate / Clear and live stats."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Iterator

import gradio as gr

from demo import scratch
from demo.gpu import FileFlag, chat_seconds
from demo.i18n import Relabel, t
from demo.models import Models
from rules.inputs import (SETTINGS, InputError, context_notice, fit_context, from_chatbot, max_tokens_setting,
                           sampling, to_chatbot, to_reply, with_message)
from text import t_count

UPDATE_EVERY_S = 0.05  # at most ~20 UI updates per second, however fast the model is


# Stop flags, one per browser session: the Stop button sets it, the running reply checks it before every token.
# A session's flag is dropped when the session ends (`forget_session`, on the page's unload). On ZeroGPU the reply runs
# in a fork of this process, which sees no Event set here after it started: there the flag is a file (demo/gpu.py).
_STOP: dict[str, threading.Event | FileFlag] = {}


def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "api"


def _stop_flag(request: gr.Request | None, across_forks: bool = False) -> threading.Event | FileFlag:
    session = _session(request)
    if across_forks:  # in the session's scratch folder, which goes with the session too
        return _STOP.setdefault(session, FileFlag(scratch.session_folder(request) / "stop"))
    return _STOP.setdefault(session, threading.Event())


def forget_session(request: gr.Request = None) -> None:
    """The page closed: its stop flag goes too."""
    _STOP.pop(_session(request), None)


@dataclass
class ChatTab:
    chatbot: gr.Chatbot
    message: gr.Textbox
    temperature: gr.Slider
    top_k: gr.Slider
    top_p: gr.Slider
    max_tokens: gr.Slider
    seed: gr.Textbox
    look_inside: gr.Button
    forget: object  # for demo.unload: drops the session's state


def stats_line(models: Models, n: int, elapsed: float, ttft: float | None, seed: int, stop_reason: str | None,
               lang: str) -> str:
    tps = n / elapsed if elapsed > 0 else 0.0
    parts = [t_count("ui.stats_tokens", n, lang), f"**{tps:.1f}** {t('ui.stats_tps', lang)}"]
    if ttft is not None:
        parts.append(f"{t('ui.stats_ttft', lang)} **{ttft * 1000:.0f} ms**")
    parts += [f"{t('ui.stats_seed', lang)} `{seed}`", f"`{models.main.device}`", models.main.name]
    if stop_reason:
        parts.append(f"{t('ui.stats_stop', lang)}: {t('ui.stop_' + stop_reason, lang)}")
    return " · ".join(parts)


def make_reply(models: Models):
    """The streaming generator behind Send and Regenerate."""

    # (the engine's decode loop runs its steps on the torch thread itself; on ZeroGPU the GPU call lasts the reply)
    @models.handler(on_thread=False, duration=lambda a: chat_seconds(a["max_tokens"], models.main.model.config))
    def reply(history, temperature, top_k, top_p, max_tokens, seed, lang, request: gr.Request = None
              ) -> Iterator[tuple[list[dict], str, str]]:
        messages = to_reply(history)
        params = sampling(temperature, top_k, top_p, max_tokens, seed)
        ctx = models.main.model.config.sequence_len
        prompt, dropped = fit_context(models.main.tokenizer, messages, ctx, params.max_tokens)
        notice = context_notice(ctx, len(prompt), dropped, params.max_tokens, lang)
        flag = _stop_flag(request, models.zerogpu)
        flag.clear()
        messages.append({"role": "assistant", "content": ""})
        text, n, ttft, stop_reason = "", 0, None, None
        start = last = time.perf_counter()
        stream = models.engine.stream(prompt, params, should_stop=flag.is_set)
        try:
            for event in stream:
                now = time.perf_counter()
                if event.token is not None:
                    n += 1
                    ttft = ttft if ttft is not None else now - start
                text += event.text
                if event.done:
                    stop_reason = event.stop_reason
                if event.done or now - last >= UPDATE_EVERY_S:
                    last = now
                    messages[-1]["content"] = text
                    line = stats_line(models, n, now - start, ttft, params.seed, stop_reason, lang)
                    yield to_chatbot(messages), line, notice
                if event.done:
                    break
        finally:
            stream.close()  # frees the engine's cache even when the event is cancelled mid-stream
        if stop_reason is None:  # the stream ended without a final event
            messages[-1]["content"] = text
            line = stats_line(models, n, time.perf_counter() - start, ttft, params.seed, None, lang)
            yield to_chatbot(messages), line, notice

    return reply


def build(models: Models, relabel: Relabel, lang_state: gr.State) -> ChatTab:
    """Lay out the chat tab (inside an open gr.Tab) and wire its events."""
    ctx = models.main.model.config.sequence_len
    chatbot = relabel(gr.Chatbot(label=t("ui.chatbot"), height=430, sanitize_html=True, allow_tags=False,
                                 render_markdown=True, elem_id="chatbot", buttons=["copy"]), "ui.chatbot")
    notice = gr.Markdown(elem_id="chat-notice")
    with gr.Row(equal_height=True):
        message = relabel(gr.Textbox(label=t("ui.message"), placeholder=t("ui.message_ph"), scale=5, lines=1,
                                     max_lines=6, elem_id="chat-message", autofocus=False),
                          "ui.message", placeholder="ui.message_ph")
        send = relabel(gr.Button(t("ui.send"), variant="primary", scale=1, elem_id="chat-send"), value="ui.send")
    with gr.Row():
        stop = relabel(gr.Button(t("ui.stop"), variant="stop", elem_id="chat-stop"), value="ui.stop")
        regenerate = relabel(gr.Button(t("ui.regenerate"), elem_id="chat-regenerate"), value="ui.regenerate")
        clear = relabel(gr.Button(t("ui.clear"), elem_id="chat-clear"), value="ui.clear")
        look_inside = relabel(gr.Button(t("ui.look_inside"), elem_id="chat-look-inside"), value="ui.look_inside")
    stats = gr.Markdown(elem_id="chat-stats")
    with relabel(gr.Accordion(t("ui.sampling"), open=True), "ui.sampling"):
        with gr.Row():
            temperature = relabel.slider(SETTINGS["temperature"], "ui.temperature", "chat-temperature")
            top_k = relabel.slider(SETTINGS["top_k"], "ui.top_k", "chat-top-k")
            top_p = relabel.slider(SETTINGS["top_p"], "ui.top_p", "chat-top-p")
            max_tokens = relabel.slider(max_tokens_setting(ctx), "ui.max_tokens", "chat-max-tokens")
            seed = relabel(gr.Textbox(value="random", label=t("ui.seed"), elem_id="chat-seed"), "ui.seed")

    reply = make_reply(models)
    settings = [temperature, top_k, top_p, max_tokens, seed, lang_state]

    @models.handler(checks=True)
    def add_user(text: str, history, max_tokens, seed, lang: str):
        """The message joins the chat only if a reply to it can start; refused, it stays in the box."""
        messages = with_message(models.main.tokenizer, history, text, ctx, int(max_tokens), seed)
        return "", to_chatbot(messages), ""  # (the last reply's stats go: Stop reads them)

    @models.handler(checks=True)
    def drop_reply(history, lang: str):
        messages = from_chatbot(history)
        if messages and messages[-1]["role"] == "assistant":
            messages = messages[:-1]
        if not messages or messages[-1]["role"] != "user":
            raise InputError("ui.nothing_to_regenerate")
        return to_chatbot(messages), ""

    def stop_now(line: str, lang: str, request: gr.Request = None) -> str:
        """Stops the reply (the running one checks the flag; a waiting one is cancelled) and says so: a reply cut
        short by the cancel never gets to write its own last stats line."""
        _stop_flag(request, models.zerogpu).set()
        if t("ui.stats_stop", lang) in (line or ""):  # the reply had already ended: that line says why
            return line
        stopped = f"{t('ui.stats_stop', lang)}: {t('ui.stop_stopped', lang)}"
        return f"{line} · {stopped}" if line else f"{t('ui.stopped', lang)} {stopped}"

    # As many replies stream at once as the engine decodes together (its batch rows); more wait in Gradio's queue,
    # which shows them their place. One limit for the three ways to start a reply.
    together = dict(concurrency_limit=models.chat_rows, concurrency_id="chat")
    streaming = []
    # The checks before a reply are quick: they show no progress (nor, when they refuse, an "Error" cover over the
    # message box: demo/app.py's CSS), only the toast with the reason.
    check = dict(api_name=False, show_progress="hidden")
    instant = dict(api_name=False, queue=False, show_progress="hidden")
    for trigger, api_name in ((send.click, "respond"), (message.submit, False)):
        ev = trigger(add_user, [message, chatbot, max_tokens, seed, lang_state], [message, chatbot, stats], **check)
        streaming.append(ev.success(reply, [chatbot, *settings], [chatbot, stats, notice], api_name=api_name,
                                    **together))
    streaming.append(regenerate.click(drop_reply, [chatbot, lang_state], [chatbot, stats], **check)
                     .success(reply, [chatbot, *settings], [chatbot, stats, notice], api_name=False, **together))
    stop.click(stop_now, [stats, lang_state], stats, cancels=streaming, **instant)
    clear.click(lambda: ([], "", ""), None, [chatbot, stats, notice], cancels=streaming, **instant)
    # (Clear cancels too: a reply still streaming would write the conversation back.)

    return ChatTab(chatbot, message, temperature, top_k, top_p, max_tokens, seed, look_inside, forget_session)
