"""Chat tab: a streaming multi-turn chat in nanochat's format, with Stop / Regenerate / Clear, live stats, and the
reply's branches (demo/branches.py)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import gradio as gr

from demo import branches as branch_panel
from demo.gpu import chat_seconds
from demo.i18n import Relabel, t
from demo.models import Models
from demo.replies import forget_session, stop_flag, stream_reply
from rules.branches import Branch, Branches
from rules.inputs import (SETTINGS, InputError, context_notice, fit_context, from_chatbot, max_tokens_setting,
                           sampling, to_chatbot, to_reply, with_message)


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
    branch_link: gr.State  # the shown branch as a link's value
    restore_fn: object  # a link's chat branch, recomputed (see restore_event)
    restore_inputs: list
    restore_outputs: list
    redraw: dict  # .then(**redraw): the branch panel drawn again

    def link_parts(self) -> dict:
        return {"cbranch": self.branch_link}

    def restore_events(self, tab: gr.State) -> list[dict]:
        """.then(**event) for each, after a link's values are restored: the chat branch it names, then its panel."""
        return [dict(fn=self.restore_fn, inputs=[tab, *self.restore_inputs], outputs=self.restore_outputs,
                     api_name=False), self.redraw]


def make_reply(models: Models):
    """The streaming generator behind Send and Regenerate: streams the reply, then keeps it as the first branch."""

    @models.handler(on_thread=False, duration=lambda a: chat_seconds(a["max_tokens"], models.main.model.config))
    def reply(history, temperature, top_k, top_p, max_tokens, seed, lang, request: gr.Request = None
              ) -> Iterator[tuple]:
        messages = to_reply(history)
        params = sampling(temperature, top_k, top_p, max_tokens, seed)
        ctx = models.main.model.config.sequence_len
        prompt, dropped = fit_context(models.main.tokenizer, messages, ctx, params.max_tokens)
        notice = context_notice(ctx, len(prompt), dropped, params.max_tokens, lang)
        flag = stop_flag(request, models.zerogpu)
        flag.clear()
        messages.append({"role": "assistant", "content": ""})
        for now in stream_reply(models, messages, prompt, params, flag.is_set, lang):
            ended = now.stop_reason is not None
            one = messages[:-1] if len(messages) == 2 else None  # one user message and this reply: a link carries it
            kept = (Branches(prompt, params, [Branch(now.tokens, stop=now.stop_reason)],
                             message=one[0]["content"] if one else "") if ended else gr.skip())
            yield now.chat, now.stats, notice, kept

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
        stop_flag(request, models.zerogpu).set()
        if t("ui.stats_stop", lang) in (line or ""):  # the reply had already ended: that line says why
            return line
        stopped = f"{t('ui.stats_stop', lang)}: {t('ui.stop_stopped', lang)}"
        return f"{line} · {stopped}" if line else f"{t('ui.stopped', lang)} {stopped}"

    # As many replies stream at once as the engine decodes together (its batch rows; with --chat-backend, as many as
    # Models.chat_streams allows); more wait in Gradio's queue, which shows them their place. One limit for every way
    # to start a reply (Send, Regenerate, a branch, Continue).
    together = dict(concurrency_limit=models.chat_streams, concurrency_id="chat")
    streaming = []
    panel = branch_panel.build(models, relabel, lang_state, chatbot, stats, streaming, together)
    redraw = dict(fn=panel.show, inputs=[panel.state, lang_state], outputs=panel.show_outputs, api_name=False,
                  queue=False)
    # The checks before a reply are quick: they show no progress (nor, when they refuse, an "Error" cover over the
    # message box: demo/app.py's CSS), only the toast with the reason.
    check = dict(api_name=False, show_progress="hidden")
    instant = dict(api_name=False, queue=False, show_progress="hidden")
    replied = [chatbot, stats, notice, panel.state]
    for trigger, api_name in ((send.click, "respond"), (message.submit, False)):
        ev = trigger(add_user, [message, chatbot, max_tokens, seed, lang_state], [message, chatbot, stats], **check)
        streaming.append(ev.success(reply, [chatbot, *settings], replied, api_name=api_name, **together))
        streaming[-1].then(**redraw)
    streaming.append(regenerate.click(drop_reply, [chatbot, lang_state], [chatbot, stats], **check)
                     .success(reply, [chatbot, *settings], replied, api_name=False, **together))
    streaming[-1].then(**redraw)
    stop.click(stop_now, [stats, lang_state], stats, cancels=streaming, **instant)
    clear.click(lambda: ([], "", "", None), None, [chatbot, stats, notice, panel.state], cancels=streaming,
                **instant).then(**redraw)
    # (Clear cancels too: a reply still streaming would write the conversation back.)

    return ChatTab(chatbot, message, temperature, top_k, top_p, max_tokens, seed, look_inside, forget_session,
                   panel.link, panel.restore, [panel.link, temperature, top_k, top_p, max_tokens, lang_state],
                   [chatbot, stats, panel.state], redraw)
