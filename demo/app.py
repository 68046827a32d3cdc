"""The whole UI: header (which model, language, link), four tabs, and the wiring between them."""
from __future__ import annotations

import gradio as gr

from demo import chat, generate_tab, inside, lessons, scratch
from demo.i18n import LANGS, Relabel, lang_code, t
from demo.links import Field, decode, encode
from demo.models import Models, describe, model_card
from demo.payloads import LessonEvent, Payloads
from rules.inputs import SETTINGS, browser_language, from_chatbot, max_tokens_setting
from text import literal

TABS = ("chat", "inside", "generate", "lessons")

CSS = """
#header h1 { font-size: 1.3rem; margin: 0.1rem 0 0.2rem 0; }
#model-line p, #model-notice p { margin: 0; }
#model-notice { color: #b45309; }
#chat-stats p, #gen-cost-text p { font-size: 0.9rem; }
.view { border-top: 1px solid var(--border-color-primary); padding-top: 0.6rem; }
.view-text { font-size: 0.92rem; }
.lesson { padding: 0.2rem 0.9rem; }
/* A failed event: Gradio marks each of its outputs "error", covering it with the bare word "Error" and blocking it
   until its x is pressed. The reason is in the toast (demo.models.in_users_language), so the cover goes. */
[data-testid="status-tracker"]:has(> .error) { display: none !important; }
"""

# Builds the absolute link from the query the server composed, and puts it on the clipboard when allowed.
COPY_JS = """(q) => {
  const url = window.location.origin + window.location.pathname + (q ? "?" + q : "");
  try { navigator.clipboard.writeText(url).catch(() => {}); } catch (e) {}
  return url;
}"""

# Enter in the number box of the Inside tab's layer/head/position sliders commits it as leaving the box does: Gradio's
# slider sends its `release` (which redraws the views) when that box loses focus, and has no submit event of its own.
ENTER_COMMITS_JS = """() => {
  document.addEventListener("keydown", (e) => {
    const box = e.target;
    if (e.key === "Enter" && box instanceof HTMLInputElement && box.type === "number"
        && box.closest("#inside-layer, #inside-head, #inside-position")) box.blur();
  }, true);
}"""


# The app takes no uploads, but Gradio's upload route is always there: without a limit it stores whatever it is sent.
MAX_FILE_SIZE = "1mb"
# Gradio's cache (its copy of every file it sends, e.g. each run's CSVs, and of every upload): every 10 minutes, the
# files older than an hour go (a download button older than that may find its file gone: run the views again).
DELETE_CACHE = (600, 3600)


def toast_css() -> str:
    """CSS that heads each toast with its kind in the page's language. Gradio 6.31's toasts head every message with
    its kind in English ("Error", "Warning", "Info") and ignore the title they are given; the page's language is the
    one checked in the language radio (#lang), and the registry has the word for each kind (ui.toast_<kind>)."""
    rules = []
    for lang, name in LANGS.items():
        page = f'body:has(#lang input[value="{_css_text(name)}"]:checked)'
        for kind in ("error", "warning", "info"):
            title = f"{page} .toast-title.{kind}"
            rules.append(f"{title} {{ font-size: 0; }}\n"
                         f'{title}::before {{ content: "{_css_text(t(f"ui.toast_{kind}", lang))}"; '
                         f"font-size: var(--text-md); }}")
    return "\n".join(rules)


def _css_text(text: str) -> str:
    """text inside a CSS string in double quotes."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def launch_kwargs(routes: list | None = None) -> dict:
    """Gradio 6 takes theme/css/js at launch() (js: ENTER_COMMITS_JS), and the upload limit. show_error: an error
    Gradio itself raises before a handler runs (an API call's value of the wrong type, which a component cannot read)
    reaches the caller with its text, not as a bare "Error" (the handlers' own errors are messages already: demo.models.in_users_language).
    `routes`: Starlette routes served on the same port ahead of Gradio's own (app.py's /v1 API), through launch()'s
    app_kwargs, which go to the FastAPI app Gradio builds."""
    return dict(theme=gr.themes.Soft(primary_hue="indigo"), css=CSS + toast_css(), js=ENTER_COMMITS_JS,
                max_file_size=MAX_FILE_SIZE, show_error=True, app_kwargs={"routes": list(routes or [])})


def header_md(models: Models, lang: str) -> str:
    return f"{t('ui.model_line', lang)}: {describe(models.main, lang)}"


def notice_md(models: Models, lang: str) -> str:
    """Why the requested model is not served: an error's text, which may quote a path anyone chose, shown as text."""
    if not models.notice:
        return ""
    return t("ui.load_failed", lang, why=literal(models.notice), name=literal(models.main.name))


def link_fields(ctx: int) -> list[Field]:
    """Everything a link can carry, with defaults (= what a fresh page shows) and valid ranges."""
    return [
        Field("tab", "chat", choices=TABS),
        Field("lang", "en", choices=tuple(LANGS)),
        Field("msg", ""),
        Field.of("temperature", SETTINGS["temperature"]), Field.of("top_k", SETTINGS["top_k"]),
        Field.of("top_p", SETTINGS["top_p"]), Field.of("max_tokens", max_tokens_setting(ctx)),
        Field("seed", "random", max_len=20),
        Field("cbranch", "", max_len=2400),  # a chat's branch: its seed, the way to it, its message (rules.branches)
        *inside.LINK_FIELDS, *generate_tab.LINK_FIELDS,
    ]


def build_demo(models: Models) -> gr.Blocks:
    return build_app(models)[0]


def build_app(models: Models) -> tuple[gr.Blocks, Payloads]:
    """The app, and the lessons' payloads its handlers serve (demo/payloads.py: warm() fills them ahead of visitors,
    publish/ writes them as a static site)."""
    relabel = Relabel()
    payloads = Payloads()
    ctx = models.main.model.config.sequence_len
    scratch.root()  # made here, before any handler runs (on ZeroGPU each runs in a fork of this process)
    with gr.Blocks(title="Inside Forward", delete_cache=DELETE_CACHE) as demo:
        lang_state = gr.State("en")
        tab_state = gr.State("chat")
        with gr.Row(elem_id="header"):
            with gr.Column(scale=4):
                title = gr.Markdown(f"# {t('ui.title')}")
                model_line = gr.Markdown(header_md(models, "en"), elem_id="model-line")
                model_notice = gr.Markdown(notice_md(models, "en"), elem_id="model-notice")
                with relabel(gr.Accordion(t("ui.model_card"), open=False, elem_id="model-card"), "ui.model_card"):
                    relabel(gr.Markdown(model_card(models.main, "en"), elem_id="model-card-text"),
                            value=lambda lang: model_card(models.main, lang))
            with gr.Column(scale=2, min_width=280):
                lang_radio = relabel(gr.Radio(list(LANGS.values()), value=LANGS["en"], label=t("ui.language"),
                                              elem_id="lang"), "ui.language")
                copy = relabel(gr.Button(t("ui.copy_link"), size="sm", elem_id="copy-link"), value="ui.copy_link")
                link_box = relabel(gr.Textbox(label=t("ui.link"), elem_id="link-box", interactive=False, max_lines=2),
                                   "ui.link")
        query_box = gr.Textbox(visible=False)

        with gr.Tabs(selected="chat", elem_id="tabs") as tabs:
            with relabel(gr.Tab(t("ui.tab_chat"), id="chat", elem_id="tab-chat"), "ui.tab_chat") as tab_chat:
                chat_ui = chat.build(models, relabel, lang_state)
            with relabel(gr.Tab(t("ui.tab_inside"), id="inside", elem_id="tab-inside"),
                         "ui.tab_inside") as tab_inside:
                inside_ui = inside.build(models, relabel, lang_state, payloads)
            with relabel(gr.Tab(t("ui.tab_generate"), id="generate", elem_id="tab-generate"),
                         "ui.tab_generate") as tab_generate:
                gen_ui = generate_tab.build(models, relabel, lang_state)
            with relabel(gr.Tab(t("ui.tab_lessons"), id="lessons", elem_id="tab-lessons"),
                         "ui.tab_lessons") as tab_less:
                lesson_ui = lessons.build(relabel)
        for name, tab in zip(TABS, (tab_chat, tab_inside, tab_generate, tab_less)):
            tab.select(lambda n=name: n, None, tab_state, queue=False, api_name=False)

        # ---- language: relabel everything, then redraw the views (their text comes from explain/) -----------
        def set_language(choice: str):
            lang = lang_code(choice)
            return [lang, f"# {t('ui.title', lang)}", header_md(models, lang), notice_md(models, lang),
                    *relabel.updates(lang)]

        lang_radio.change(set_language, lang_radio, [lang_state, title, model_line, model_notice,
                                                     *relabel.components], queue=False, api_name=False) \
            .then(**inside_ui.refresh)

        # ---- shareable links ------------------------------------------------------------------------------------
        fields = link_fields(ctx)
        parts = {"msg": chat_ui.message, "temperature": chat_ui.temperature, "top_k": chat_ui.top_k,
                 "top_p": chat_ui.top_p, "max_tokens": chat_ui.max_tokens, "seed": chat_ui.seed,
                 **inside_ui.link_parts(), **gen_ui.link_parts(), **chat_ui.link_parts()}
        keys = [f.key for f in fields if f.key in parts]
        components = [parts[k] for k in keys]

        def make_query(tab: str, lang: str, *values) -> str:
            return encode(dict(zip(keys, values), tab=tab, lang=lang), fields)

        copy.click(make_query, [tab_state, lang_state, *components], query_box, queue=False, api_name="link") \
            .then(None, query_box, link_box, js=COPY_JS)

        def updates_for(state: dict, tab: str) -> list:
            return [gr.Tabs(selected=tab), tab, *(gr.update(value=state[k]) if k in state else gr.update()
                                                  for k in keys)]

        # The tab the link opened, for open_view: tab_state may still change under it, because the tabs' own select
        # event for the first tab (fired as the page mounts) can land after the restore.
        link_tab = gr.State("chat")

        def restore(request: gr.Request):
            state = decode(dict(request.query_params) if request else {}, fields)
            tab = state.get("tab", "chat")
            # the link's language wins; else the browser's (a Chinese browser lands in Chinese)
            lang = state.get("lang") or browser_language(request.headers.get("accept-language") if request else None)
            return [*updates_for(state, tab), LANGS[lang], tab, lang]

        @models.handler
        def open_view(request: gr.Request, tab: str, lang: str, *args):
            """After a restore: redraw what the link showed (the views of its prompt, the generate step)."""
            n_inside = len(inside_ui.inputs)
            ins, gen = args[:n_inside], args[n_inside:]
            inside_out = [gr.update()] * len(inside_ui.outputs)
            gen_out = [gr.update()] * len(gen_ui.show_outputs)
            if tab == "inside" and inside_ui.has_input(ins):
                inside_out = inside_ui.show_fn(*ins, request)
            if tab == "generate" and gen_ui.has_steps(gen):
                gen_out = gen_ui.state_fn(*gen)
            return [*inside_out, *gen_out]

        # lang_state too, not only the radio: the radio's change event (which sets lang_state) may land after open_view
        # has read it, and its redraw finds no views yet, so a Chinese link drew English views
        restored = demo.load(restore, None, [tabs, tab_state, *components, lang_radio, link_tab, lang_state],
                             queue=False, api_name=False) \
            .then(open_view, [link_tab, lang_state, *inside_ui.inputs, *gen_ui.show_inputs],
                  [*inside_ui.outputs, *gen_ui.show_outputs], api_name=False)
        for event in chat_ui.restore_events(link_tab):  # a chat link's branch: the reply and the branch, recomputed
            restored = restored.then(**event)
        demo.unload(chat_ui.forget)
        demo.unload(scratch.forget_session)  # the session's download files

        # ---- cross-tab jumps: chat -> inside forward, lessons -> the view that answers them ---------------------
        @models.handler(checks=True)
        def look_inside(history, lang: str):
            messages = from_chatbot(history)
            if not messages:
                raise gr.Error(t("ui.no_reply_yet", lang))
            ids, _ = models.main.tokenizer.render_conversation(messages)
            ids = ids[-ctx:]
            return updates_for({"preset": "custom", "model": "loaded", "prompt": "", "focus": "all",
                                "ids": ", ".join(map(str, ids)), "pos": -1}, "inside")

        chat_ui.look_inside.click(look_inside, [chat_ui.chatbot, lang_state], [tabs, tab_state, *components],
                                  api_name=False, show_progress="hidden").success(**inside_ui.run_event())

        # A lesson's Generate events answer from its payload (demo/payloads.py), as the Inside tab's views do: no
        # model work here, only `payloads` or the tab's own handler.
        @models.handler(checks=True)
        def lesson_step(prompt_text, temp, k, seed_v, n_steps, n, lang, fixed=""):
            args = (prompt_text, temp, k, seed_v, n_steps, n, lang, fixed)
            return payloads.serve(("step", *args), lambda: gen_ui.show_fn(*args))

        @models.handler(checks=True)
        def lesson_cost(prompt_text, max_len, lang):
            args = (prompt_text, max_len, lang)
            return payloads.serve(("cost", *args), lambda: gen_ui.cost_fn(*args))

        key_of = {id(c): k for k, c in parts.items()}

        def sent(inputs: list, settings: dict, lang: str) -> tuple:
            """What an event with `inputs` sends after a lesson's settings, on a fresh page, in `lang`."""
            return tuple(lang if c is lang_state else settings.get(key_of.get(id(c)), c.value) for c in inputs)

        for lesson, button in zip(lessons.LESSONS, lesson_ui.buttons):
            settings = dict(lesson.settings)
            event_of = dict(kind="views", inputs=inside_ui.inputs, compute=inside_ui.compute_fn)
            follow = [inside_ui.run_event()]
            if lesson.tab == "generate" and settings.pop("gcost", False):
                event_of = dict(kind="cost", inputs=gen_ui.cost_inputs, compute=gen_ui.cost_fn)
                follow = [dict(fn=lesson_cost, inputs=gen_ui.cost_inputs, outputs=gen_ui.cost_outputs,
                               api_name=False), gen_ui.show_cost_plot()]
            elif lesson.tab == "generate":
                settings.setdefault("gstep", 1)
                event_of = dict(kind="step", inputs=gen_ui.show_inputs, compute=gen_ui.show_fn,
                                step_index=gen_ui.show_inputs.index(gen_ui.step),
                                steps_index=gen_ui.show_inputs.index(gen_ui.steps))
                follow = [dict(fn=lesson_step, inputs=gen_ui.show_inputs, outputs=gen_ui.show_outputs,
                               api_name=False)]
            else:
                settings.update(inside.PRESETS[settings["preset"]]._asdict())
            inputs = event_of.pop("inputs")
            for lang in LANGS:
                payloads.add(LessonEvent(lesson, lang, args=sent(inputs, settings, lang), **event_of))
            event = button.click(lambda s=settings, tab=lesson.tab: updates_for(s, tab), None,
                                 [tabs, tab_state, *components], queue=False, api_name=False)
            for step in follow:
                event = event.then(**step)
    return demo, payloads


def serve_in_background(models: Models, host: str = "127.0.0.1", port: int | None = None,
                        concurrency: int = 2, routes: list | None = None) -> tuple[gr.Blocks, str]:
    """Start the app without blocking (tests, notebooks); returns (demo, local URL). Stop with demo.close().
    `routes`: as launch_kwargs' (app.py's /v1 API)."""
    demo = build_demo(models)
    demo.queue(default_concurrency_limit=concurrency)
    _, url, _ = demo.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True,
                            **launch_kwargs(routes))
    return demo, url
