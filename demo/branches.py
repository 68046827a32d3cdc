"""The Chat tab's "what if it had said something else?" panel: click a token of the reply, see what else it could have
said (explain.branching), pick one and the reply goes on from there as a new branch (rules.branches), side by side with
the others; switch, continue or drop them. Layout and wiring only."""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Callable

import gradio as gr

from demo import scratch
from demo.gpu import chat_seconds
from demo.i18n import Relabel, t
from demo.models import Models
from demo.replies import stop_flag, stream_reply
from explain.branching import alternatives_view
from explain.trace import sequence_labels
from gpt.stream import sampled_vocab
from rules.branches import Branch, Branches, parse_link
from rules.downloads import write_csv
from rules.png import PngError, figure_png
from rules.inputs import InputError, check_forward, fit_context, from_chatbot, sampling, to_chatbot, with_message


@dataclass
class BranchPanel:
    state: gr.State  # the reply's Branches (None before a reply)
    link: gr.State  # the shown branch as a link's value (Branches.link; "" for none)
    show: Callable  # Branches, lang -> the panel's outputs (for .then after a reply)
    show_outputs: list
    restore: Callable  # a link's chat: the reply and the branch it names, recomputed (a handler)


def _shown_messages(history, branches: Branches, tokenizer) -> list[dict]:
    """The conversation with the shown branch as its last reply."""
    messages = from_chatbot(history)
    if not messages or messages[-1]["role"] != "assistant":
        raise InputError("ui.branch_no_reply")
    messages[-1]["content"] = tokenizer.decode(branches.shown.tokens)
    return messages


def build(models: Models, relabel: Relabel, lang_state: gr.State, chatbot: gr.Chatbot, stats: gr.Markdown,
          streaming: list, together: dict) -> BranchPanel:
    """Lay out the panel (under the chat) and wire its events; `streaming` collects its streaming events (Stop and
    Clear cancel them)."""
    tokenizer, model = models.main.tokenizer, models.main.model
    state = gr.State(None)
    link = gr.State("")
    picked = gr.State(None)  # the index of the clicked token in the shown branch
    shown_view = gr.State(None)  # the alternatives' ViewResult (for its CSV and PNG)
    with relabel(gr.Accordion(t("ui.branch_panel"), open=True, elem_id="branch-panel"), "ui.branch_panel"):
        relabel(gr.Markdown(t("ui.branch_help")), value="ui.branch_help")
        tokens = relabel(gr.HighlightedText(label=t("ui.branch_tokens"), combine_adjacent=False, show_legend=False,
                                            show_inline_category=False, interactive=False,
                                            color_map={"kept": "#e8eaed", "new": "#c6dafc"},
                                            elem_id="branch-tokens"), "ui.branch_tokens")
        with gr.Row():
            with gr.Column(scale=3):
                plot = gr.Plot(show_label=False, elem_id="branch-plot")
            with gr.Column(scale=2):
                explanation = gr.Markdown(elem_classes=["view-text"], elem_id="branch-text")
                choice = relabel(gr.Radio([], label=t("ui.branch_pick"), elem_id="branch-pick"), "ui.branch_pick")
                go = relabel(gr.Button(t("ui.branch_go"), variant="primary", elem_id="branch-go"), value="ui.branch_go")
                with gr.Row():
                    csv_btn = relabel(gr.Button(t("ui.branch_csv"), size="sm", elem_id="branch-csv"),
                                      value="ui.branch_csv")
                    png_btn = relabel(gr.Button(t("ui.branch_png"), size="sm", elem_id="branch-png"),
                                      value="ui.branch_png")
                download = gr.File(visible=False, interactive=False, elem_id="branch-file")
        cards = gr.HTML(elem_id="branch-list")
        with gr.Row():
            which = relabel(gr.Radio([], label=t("ui.branch_which"), elem_id="branch-which"), "ui.branch_which")
            more = relabel(gr.Button(t("ui.branch_continue"), elem_id="branch-continue"), value="ui.branch_continue")
            drop = relabel(gr.Button(t("ui.branch_drop"), elem_id="branch-drop"), value="ui.branch_drop")

    def show(branches: Branches | None, lang: str):
        """The shown branch's tokens (the ones after where it departs highlighted), every branch side by side, the
        branch picker; the alternatives of a token from before are cleared."""
        if branches is None:
            return (gr.HighlightedText(value=None), "", gr.Radio(choices=[], value=None), None, "",
                    gr.Radio(choices=[], value=None), None, "", None)
        b = branches.shown
        labels = sequence_labels(tokenizer, b.tokens)
        start = 0 if b.parent is None else b.at
        spans = [(label, "new" if i >= start and b.parent is not None else "kept") for i, label in enumerate(labels)]
        names = [(branches.label(i, lang), i) for i in range(len(branches.branches))]
        return (spans, branches.html(tokenizer, lang), gr.Radio(choices=names, value=branches.current), None, "",
                gr.Radio(choices=[], value=None), None, branches.link(), None)

    show_outputs = [tokens, cards, which, plot, explanation, choice, picked, link, shown_view]

    @models.handler
    def pick(branches: Branches | None, lang: str, evt: gr.SelectData):
        """A token of the reply clicked: the distribution it was drawn from, its top candidates to pick from."""
        if branches is None:
            raise InputError("ui.branch_no_reply")
        at = branches.check_token(evt.index if isinstance(evt.index, int) else -1)
        context = branches.context(at)
        check_forward(model, 1, len(context))
        view = alternatives_view(model, tokenizer, context, branches.params, branches.shown.tokens[at], lang)
        options = [(f"{row.rank}. {row.token} ({row.p:.3f})", int(row.token_id))
                   for row in view.df.itertuples() if not row.chosen]
        return at, view.fig, f"### {view.title}\n\n{view.text}", gr.Radio(choices=options, value=None), view

    duration = lambda a: chat_seconds(model.config.sequence_len, model.config)  # noqa: E731 - at most a whole reply

    @models.handler(on_thread=False, duration=duration)
    def branch(history, branches: Branches | None, at, token, lang, request: gr.Request = None):
        """A new branch: the reply up to the clicked token, the picked candidate there, then the model goes on."""
        if branches is None or at is None:
            raise InputError("ui.branch_no_token", n=0 if branches is None else len(branches.shown.tokens))
        if token is None:
            raise InputError("ui.branch_bad_choice")
        prompt = branches.branch_prompt(at, token, sampled_vocab(model.config.vocab_size, tokenizer))
        messages = _shown_messages(history, branches, tokenizer)
        flag = stop_flag(request, models.zerogpu)
        flag.clear()
        before = branches.shown.tokens[:at] + [token]
        params = branches.settings(len(before))
        for now in stream_reply(models, messages, prompt, params, flag.is_set, lang, before):
            if now.stop_reason is not None:
                branches.add(at, now.tokens[at:], now.stop_reason)
            yield now.chat, now.stats, branches if now.stop_reason is not None else gr.skip()

    @models.handler(on_thread=False, duration=duration)
    def go_on(history, branches: Branches | None, lang, request: gr.Request = None):
        """The shown branch continued: as many more tokens as the reply may have, with its own seed."""
        if branches is None:
            raise InputError("ui.branch_no_reply")
        b = branches.shown
        if b.stop not in ("max_tokens", "stopped"):
            raise InputError("ui.branch_ended", why=t(f"ui.stop_{b.stop}", lang) if b.stop else "")
        messages = _shown_messages(history, branches, tokenizer)
        flag = stop_flag(request, models.zerogpu)
        flag.clear()
        params = branches.settings(0)
        for now in stream_reply(models, messages, branches.prompt + b.tokens, params, flag.is_set, lang, b.tokens):
            if now.stop_reason is not None:
                branches.extend(now.tokens[len(b.tokens):], now.stop_reason)
            yield now.chat, now.stats, branches if now.stop_reason is not None else gr.skip()

    @models.handler(checks=True)
    def switch(history, branches: Branches | None, index, lang):
        if branches is None:
            raise InputError("ui.branch_no_reply")
        branches.select(index)
        return to_chatbot(_shown_messages(history, branches, tokenizer)), branches

    @models.handler(checks=True)
    def drop_shown(history, branches: Branches | None, lang):
        if branches is None:
            raise InputError("ui.branch_no_reply")
        branches.drop()
        return to_chatbot(_shown_messages(history, branches, tokenizer)), branches

    @models.handler(on_thread=False, duration=duration)
    def restore(tab, value, temperature, top_k, top_p, max_tokens, lang):
        """A link to a chat's branch: its message answered with the link's seed, then each branch on the way to the
        one it names, recomputed (seeded: the same tokens). Nothing when the link names none."""
        if tab != "chat" or not value:
            return gr.skip(), gr.skip(), gr.skip()
        seed, path, message = parse_link(value)
        params = sampling(temperature, top_k, top_p, max_tokens, seed)
        messages = with_message(tokenizer, [], message, model.config.sequence_len, params.max_tokens, seed)
        prompt, _ = fit_context(tokenizer, messages, model.config.sequence_len, params.max_tokens)
        messages.append({"role": "assistant", "content": ""})
        *_, now = stream_reply(models, messages, prompt, params, None, lang)
        branches = Branches(prompt, params, [Branch(now.tokens, stop=now.stop_reason)], message=message)
        for at, token in path:
            before = branches.shown.tokens[:at] + [token]
            branch_prompt = branches.branch_prompt(at, token, sampled_vocab(model.config.vocab_size, tokenizer))
            *_, now = stream_reply(models, messages, branch_prompt, branches.settings(len(before)), None, lang, before)
            branches.add(at, now.tokens[at:], now.stop_reason)
        return now.chat, now.stats, branches

    quiet = dict(api_name=False, show_progress="hidden")
    tokens.select(pick, [state, lang_state], [picked, plot, explanation, choice, shown_view], api_name=False)

    # no model work: a file, or a browser drawing the PNG (no GPU call on ZeroGPU)
    @models.handler(on_thread=False, needs_gpu=False)
    def export(view, kind, lang, request: gr.Request = None):
        """The alternatives shown, as CSV (every column, full precision) or PNG."""
        if view is None:
            raise InputError("ui.branch_no_token", n=0)
        folder = scratch.run_folder(request, "branch")
        if kind == "csv":
            return gr.update(value=str(write_csv(view, folder / "alternatives.csv")), visible=True)
        try:
            data = figure_png(view.fig, scale=2)
        except PngError as e:
            raise gr.Error(html.escape(e.message(lang), quote=False), print_exception=not e.unavailable) from None
        (folder / "alternatives.png").write_bytes(data)
        return gr.update(value=str(folder / "alternatives.png"), visible=True)

    csv_btn.click(export, [shown_view, gr.State("csv"), lang_state], download, api_name=False)
    png_btn.click(export, [shown_view, gr.State("png"), lang_state], download, api_name=False)
    redraw = dict(fn=show, inputs=[state, lang_state], outputs=show_outputs, api_name=False, queue=False)
    for event in (go.click(branch, [chatbot, state, picked, choice, lang_state], [chatbot, stats, state],
                           api_name=False, **together),
                  more.click(go_on, [chatbot, state, lang_state], [chatbot, stats, state], api_name=False,
                             **together)):
        streaming.append(event)
        event.then(**redraw)
    which.select(switch, [chatbot, state, which, lang_state], [chatbot, state], **quiet).then(**redraw)
    drop.click(drop_shown, [chatbot, state, lang_state], [chatbot, state], **quiet).then(**redraw)
    return BranchPanel(state, link, show, show_outputs, restore)
