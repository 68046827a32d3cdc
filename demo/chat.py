"""Chat tab: a streaming multi-turn chat in nanochat's format, with Stop / Regenerate / Clear and live stats."""
from __future__ import annotations

import html
import random
import threading
import time
from dataclasses import dataclass
from typing import Iterator

import gradio as gr

from demo.gpu import gpu
from demo.i18n import Relabel, t
from demo.models import Models
from gpt.engine import SamplingParams

UPDATE_EVERY_S = 0.05  # at most ~20 UI updates per second, however fast the model is


def plain(history: list[dict] | None) -> list[dict]:
    """Chatbot value (content as a string or as a list of text parts, as `shown` wrote it) -> the conversation's own
    [{"role", "content": str}], which is what the model reads."""
    out = []
    for m in history or []:
        content = m.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        out.append({"role": m["role"], "content": html.unescape(content if isinstance(content, str) else str(content))})
    return out


def shown(messages: list[dict]) -> list[dict]:
    """The conversation as the Chatbot shows it: Markdown stays Markdown, but every '<' and '&' is escaped, so no
    HTML from the model or the user (a script, an image from another site) becomes part of the page. `plain` undoes
    it."""
    return [{"role": m["role"], "content": html.escape(m["content"], quote=False)} for m in messages]


def parse_seed(text: str | int | float | None, lang: str = "en") -> int | None:
    """'' / 'random' -> None (the engine picks one and reports it); a whole number -> that number."""
    s = str(text if text is not None else "").strip().lower()
    if s in ("", "random", "none", "随机"):
        return None
    try:
        value = float(s)
    except ValueError:
        raise gr.Error(t("ui.bad_seed", lang)) from None
    if not value.is_integer() or not 0 <= value < 2**63:  # the engine keeps seeds in int64 tensors
        raise gr.Error(t("ui.bad_seed", lang))
    return int(value)


def sampling(temperature: float, top_k: float, top_p: float, max_tokens: float, seed, lang: str) -> SamplingParams:
    seed_value = parse_seed(seed, lang)
    if seed_value is None:
        seed_value = random.SystemRandom().randrange(2**31)  # chosen here so the stats can show it
    return SamplingParams(temperature=float(temperature), top_k=int(top_k) or None, top_p=float(top_p),
                          seed=seed_value, max_tokens=int(max_tokens))


def fit_context(models: Models, messages: list[dict], max_tokens: int, lang: str) -> tuple[list[int], int]:
    """Prompt ids for the next reply, dropping the oldest turns until prompt + reply room fit the context.

    Returns (prompt ids, number of messages dropped). Raises gr.Error when the last user message alone is too long.
    """
    tok, ctx = models.main.tokenizer, models.main.model.config.sequence_len
    reserve = min(max_tokens, ctx // 2)  # room for at least part of the reply
    dropped = 0
    while True:
        ids = tok.render_for_completion(messages[dropped:])
        if len(ids) + reserve <= ctx:
            return ids, dropped
        if len(messages) - dropped <= 1:
            raise gr.Error(t("ui.message_too_long", lang, n=len(ids), ctx=ctx))
        dropped += 2 if len(messages) - dropped > 2 else 1  # a user turn and the reply to it


# Stop flags, one per browser session: the Stop button sets it, the running generation polls it between tokens.
_STOP: dict[str, threading.Event] = {}


def _stop_flag(request: gr.Request | None) -> threading.Event:
    key = getattr(request, "session_hash", None) or "api"
    flag = _STOP.setdefault(key, threading.Event())
    return flag


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


def stats_line(models: Models, n: int, elapsed: float, ttft: float | None, seed: int, stop_reason: str | None,
               lang: str) -> str:
    tps = n / elapsed if elapsed > 0 else 0.0
    parts = [f"**{n}** {t('ui.stats_tokens', lang)}", f"**{tps:.1f}** {t('ui.stats_tps', lang)}"]
    if ttft is not None:
        parts.append(f"{t('ui.stats_ttft', lang)} **{ttft * 1000:.0f} ms**")
    parts += [f"{t('ui.stats_seed', lang)} `{seed}`", f"`{models.main.device}`", models.main.name]
    if stop_reason:
        parts.append(f"{t('ui.stats_stop', lang)}: {t('ui.stop_' + stop_reason, lang)}")
    return " · ".join(parts)


def make_reply(models: Models):
    """The streaming generator behind Send and Regenerate (wrapped for ZeroGPU when available)."""

    @gpu  # not models.worker.wrap: the engine's decode loop runs its steps on the torch thread itself
    def reply(history, temperature, top_k, top_p, max_tokens, seed, lang, request: gr.Request = None
              ) -> Iterator[tuple[list[dict], str, str]]:
        messages = plain(history)
        if not messages or messages[-1]["role"] != "user" or not messages[-1]["content"].strip():
            raise gr.Error(t("ui.empty_message", lang))
        params = sampling(temperature, top_k, top_p, max_tokens, seed, lang)
        prompt, dropped = fit_context(models, messages, params.max_tokens, lang)
        notice = t("ui.dropped_turns", lang, ctx=models.main.model.config.sequence_len, n=dropped) if dropped else ""
        flag = _stop_flag(request)
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
                    yield shown(messages), line, notice
                if event.done:
                    break
        finally:
            stream.close()  # frees the engine's cache even when the event is cancelled mid-stream
        if stop_reason is None:  # the stream ended without a final event
            messages[-1]["content"] = text
            line = stats_line(models, n, time.perf_counter() - start, ttft, params.seed, None, lang)
            yield shown(messages), line, notice

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
            temperature = relabel(gr.Slider(0, 2, value=0.8, step=0.05, label=t("ui.temperature"),
                                            elem_id="chat-temperature"), "ui.temperature")
            top_k = relabel(gr.Slider(0, 200, value=50, step=1, label=t("ui.top_k"), elem_id="chat-top-k"), "ui.top_k")
            top_p = relabel(gr.Slider(0.05, 1, value=1.0, step=0.05, label=t("ui.top_p"), elem_id="chat-top-p"),
                            "ui.top_p")
            max_tokens = relabel(gr.Slider(1, ctx, value=min(256, ctx), step=1, label=t("ui.max_tokens"),
                                           elem_id="chat-max-tokens"), "ui.max_tokens")
            seed = relabel(gr.Textbox(value="random", label=t("ui.seed"), elem_id="chat-seed"), "ui.seed")

    reply = make_reply(models)
    settings = [temperature, top_k, top_p, max_tokens, seed, lang_state]

    def add_user(text: str, history, lang: str):
        if not (text or "").strip():
            raise gr.Error(t("ui.empty_message", lang))
        return "", shown(plain(history) + [{"role": "user", "content": text}])

    def drop_reply(history, lang: str):
        messages = plain(history)
        if messages and messages[-1]["role"] == "assistant":
            messages = messages[:-1]
        if not messages:
            raise gr.Error(t("ui.nothing_to_regenerate", lang))
        return shown(messages)

    def stop_now(request: gr.Request = None) -> None:
        _stop_flag(request).set()

    # As many replies stream at once as the engine decodes together (its batch rows); more wait in Gradio's queue,
    # which shows them their place. One limit for the three ways to start a reply.
    together = dict(concurrency_limit=models.chat_rows, concurrency_id="chat")
    streaming = []
    for trigger, api_name in ((send.click, "respond"), (message.submit, False)):
        ev = trigger(add_user, [message, chatbot, lang_state], [message, chatbot], api_name=False, queue=False)
        streaming.append(ev.success(reply, [chatbot, *settings], [chatbot, stats, notice], api_name=api_name,
                                    **together))
    streaming.append(regenerate.click(drop_reply, [chatbot, lang_state], chatbot, api_name=False, queue=False)
                     .success(reply, [chatbot, *settings], [chatbot, stats, notice], api_name=False, **together))
    stop.click(stop_now, None, None, cancels=streaming, queue=False, api_name=False)
    clear.click(lambda: ([], "", ""), None, [chatbot, stats, notice], cancels=streaming, queue=False,
                api_name=False)  # a reply still streaming would write the conversation back

    return ChatTab(chatbot, message, temperature, top_k, top_p, max_tokens, seed, look_inside)
