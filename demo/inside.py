"""Inside forward tab: one forward pass of a prompt (or token ids, or the chat), shown through every explain/ view."""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import NamedTuple

import gradio as gr

from demo import scratch
from demo.i18n import Relabel, headers, t
from demo.links import Field
from demo.models import Models
from demo.payloads import Payloads
from explain.build import VIEWS as EXPLAIN_VIEWS, build_all
from explain.common import APP_WIDTH
from rules.downloads import views_zip, write_csv
from rules.png import PngError, figure_png, unavailable as png_unavailable
from explain.compare import compare_view
from explain.patching import SITES, NothingToRestore, patching_view, sweep_flops
from explain.resume import SameTokens
from explain.saliency import METHODS, saliency_flops, saliency_view
from explain.then_now import then_now_view
from explain.trace import trace_forward
from rules.inputs import (check_forward, check_why, corrupt_ids, forward_request, limits_md, parse_config,
                          why_tokens)
from explain.shapes import shapes_view
from gpt import nanochat as family
from gpt.torch_thread import pause_point


class Preset(NamedTuple):
    """An example for the tab (its label is the text preset.<key>)."""
    model: str  # "loaded", "tutorial" or "tutorial_2026" (demo.models.Models.pick)
    prompt: str
    ids: str  # rows split by ';', a '|' ends the cached prefix; "random BxT": B rows of T ids, seed 0 (torch.randint)
    corrupt: str = ""  # patching's corrupt prompt (the prompt with a token changed, as many tokens)
    target: str = ""  # the token the why-views explain, and the one it could have been ("": the views' defaults)
    contrast: str = ""


PRESETS: dict[str, Preset] = {
    "custom": Preset("loaded", "", ""),
    "story": Preset("loaded", "Once upon a time, there was a little", ""),
    "chinese": Preset("loaded", "今天天气不错，我们一起去", ""),
    "tutorial_2x5": Preset("tutorial", "", "100, 200, 300, 400, 500; 600, 700, 800, 900, 1000"),
    "tutorial_train": Preset("tutorial", "", "random 2x128"),
    "tutorial_kv": Preset("tutorial", "", "100, 200, 300 | 400"),
    # a pair for "why did it say that?": one word changed, the answer changes (the default model: " man" / " boy";
    # in Chinese its top-1 is a byte of a character, so the preset names two whole ones: 了 (its second) and ，)
    "why_en": Preset("loaded", "He is a good man, and she is a good", "", "He is a good boy, and she is a good"),
    "why_zh": Preset("loaded", "床前明月光", "", "床前明日光", "了", "，"),
}

VIEWS = tuple(v for v in EXPLAIN_VIEWS if v != "generate")  # generation has its own tab
THEN_NOW = "then_now"  # shown alone (it runs a second model, of another nanochat version): not part of "all"
# then and now beside a chosen version: "then_now@<commit>" (THEN_NOW alone: the tutorial's, or today's)
THEN_NOW_VS = tuple(f"{THEN_NOW}@{m.name}" for m in family.MEMBERS)
COMPARE = "compare"  # shown alone too: the model beside the second one (--compare), or another version's
# the compare view's picker: beside an untrained model of a chosen version, "compare@<commit>"
COMPARE_VS = tuple(f"{COMPARE}@{m.name}" for m in family.MEMBERS)
PATCHING, SALIENCY = "patching", "saliency"  # shown alone: a sweep over a second prompt; many forwards and backwards
SALIENCY_STEPS = 64  # integrated gradients' path points
MODEL_CHOICES = ("loaded", "tutorial", "tutorial_2026")
MAX_SHAPE_SIZE = 10**6  # B, T and T0 of the any-config shapes: the meta device computes nothing, but keep it sane
PNG_SCALE = 2  # a view's PNG has twice its figure's pixels (sharp on a high-density screen; no slower to draw)


def _size(value, lo: int) -> int:
    """A B/T/T0 box's value (Gradio's bounds check lets NaN through): a whole number in [lo, MAX_SHAPE_SIZE]."""
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return lo
    return min(max(number, lo), MAX_SHAPE_SIZE)

LINK_FIELDS = [
    Field("focus", "all", choices=("all", *VIEWS, PATCHING, SALIENCY, COMPARE, THEN_NOW, *THEN_NOW_VS, *COMPARE_VS)),
    Field("preset", "custom", choices=tuple(PRESETS)),
    Field("model", "loaded", choices=MODEL_CHOICES),
    Field("prompt", ""),
    Field("ids", "", max_len=20000),
    Field("layer", 0, 0, 64), Field("head", 0, 0, 64), Field("pos", -1, -1, 100000),
    Field("corrupt", ""), Field("target", "", max_len=200), Field("contrast", "", max_len=200),
    Field("site", SITES[0], choices=SITES), Field("method", METHODS[0], choices=METHODS),
]


@dataclass
class InsideTab:
    preset: gr.Dropdown
    model: gr.Radio
    prompt: gr.Textbox
    ids: gr.Textbox
    layer: gr.Slider
    head: gr.Slider
    position: gr.Slider
    focus: gr.Dropdown
    why: dict  # the "why did it say that?" inputs by link key: corrupt, target, contrast, site, method
    run: gr.Button
    run_fn: object  # the handler: (model, prompt, ids, layer, head, pos, focus, lang[, request, *why]) -> outputs
    show_fn: object  # the same work, not a handler: for other handlers to call
    compute_fn: object  # the model handler behind both: (model, ..., lang) -> InsideRun
    inputs: list
    outputs: list
    refresh: dict  # .then(**refresh): rerun only if views are showing (after a language switch)

    def link_parts(self) -> dict:
        return {"preset": self.preset, "model": self.model, "prompt": self.prompt, "ids": self.ids,
                "layer": self.layer, "head": self.head, "pos": self.position, "focus": self.focus, **self.why}

    def has_input(self, values: list) -> bool:
        """Whether values of `inputs` (in that order) ask for a forward: a prompt or token ids."""
        named = dict(zip(map(id, self.inputs), values))
        return bool(named[id(self.prompt)] or named[id(self.ids)])

    def run_event(self) -> dict:
        """kwargs for .then(**...) that rerun the views with the current inputs."""
        return dict(fn=self.run_fn, inputs=self.inputs, outputs=self.outputs, api_name=False)


def preset_choices(lang: str) -> list[tuple[str, str]]:
    return [(t(f"preset.{key}", lang), key) for key in PRESETS]


def model_choices(lang: str) -> list[tuple[str, str]]:
    return [(t(f"ui.model_{which}", lang), which) for which in MODEL_CHOICES]


def focus_choices(lang: str) -> list[tuple[str, str]]:
    return [(t("ui.view_all", lang), "all")] + [(t("ui.view_" + v, lang), v) for v in (
        *VIEWS, PATCHING, SALIENCY, COMPARE, THEN_NOW)] + [
        (t(f"ui.view_{kind}_vs", lang, member=m.name, date=m.date), v)
        for kind, choices in (("then_now", THEN_NOW_VS), ("compare", COMPARE_VS))
        for m, v in zip(family.MEMBERS, choices)]


def site_choices(lang: str) -> list[tuple[str, str]]:
    return [(t(f"view.patching.site_{site}", lang), site) for site in SITES]


def method_choices(lang: str) -> list[tuple[str, str]]:
    return [(t(f"view.saliency.method_{method}", lang), method) for method in METHODS]


class InsideRun(NamedTuple):
    """What one request computed, before it is shown (demo.payloads keeps a lesson's for every visitor)."""
    views: list  # explain's ViewResults, in the order of the view slots
    notes: list[str]  # shown above the views
    warnings: list[str]  # shown as toasts
    maxima: tuple[int, int, int]  # the layer, head and position sliders' ranges for this model and input
    values: tuple[int, int, int]  # their values as used (clamped into range)
    asked: tuple[int, int, int]  # their values as asked


def build(models: Models, relabel: Relabel, lang_state: gr.State, payloads: Payloads | None = None) -> InsideTab:
    payloads = Payloads() if payloads is None else payloads
    cfg = models.main.model.config
    with gr.Row():
        with gr.Column(scale=3):
            preset = gr.Dropdown(preset_choices("en"), value="custom", label=t("ui.preset"), elem_id="inside-preset")
            relabel(preset, "ui.preset", choices=preset_choices)
            prompt = relabel(gr.Textbox(label=t("ui.prompt"), placeholder=t("ui.prompt_ph"), lines=2,
                                        elem_id="inside-prompt"), "ui.prompt", placeholder="ui.prompt_ph")
            ids = relabel(gr.Textbox(label=t("ui.ids"), lines=1, elem_id="inside-ids"), "ui.ids")
        with gr.Column(scale=2):
            model = gr.Radio(model_choices("en"), value="loaded", label=t("ui.model_choice"), elem_id="inside-model")
            relabel(model, "ui.model_choice", choices=model_choices)
            layer = relabel(gr.Slider(0, max(cfg.n_layer - 1, 1), value=0, step=1, label=t("ui.layer"),
                                      elem_id="inside-layer"), "ui.layer")
            head = relabel(gr.Slider(0, max(cfg.n_head - 1, 1), value=0, step=1, label=t("ui.head"),
                                     elem_id="inside-head"), "ui.head")
            position = relabel(gr.Slider(-1, cfg.sequence_len - 1, value=-1, step=1, label=t("ui.position"),
                                         elem_id="inside-position"), "ui.position")
            focus = gr.Dropdown(focus_choices("en"), value="all", label=t("ui.focus"), elem_id="inside-focus")
            relabel(focus, "ui.focus", choices=focus_choices)
            run = relabel(gr.Button(t("ui.run_forward"), variant="primary", elem_id="inside-run"),
                          value="ui.run_forward")
    with relabel(gr.Accordion(t("ui.why"), open=False, elem_id="inside-why"), "ui.why") as why_box:
        relabel(gr.Markdown(t("ui.why_help")), value="ui.why_help")
        with gr.Row():  # ("" a value, not None: an API call may leave them out)
            corrupt = relabel(gr.Textbox("", label=t("ui.corrupt"), placeholder=t("ui.corrupt_ph"), lines=1, scale=3,
                                         elem_id="inside-corrupt"), "ui.corrupt", placeholder="ui.corrupt_ph")
            target = relabel(gr.Textbox("", label=t("ui.target"), max_lines=1, scale=1, elem_id="inside-target"),
                             "ui.target")
            contrast = relabel(gr.Textbox("", label=t("ui.contrast"), max_lines=1, scale=1, elem_id="inside-contrast"),
                               "ui.contrast")
        with gr.Row():
            site = gr.Radio(site_choices("en"), value=SITES[0], label=t("ui.site"), elem_id="inside-site")
            relabel(site, "ui.site", choices=site_choices)
            method = gr.Radio(method_choices("en"), value=METHODS[0], label=t("ui.method"), elem_id="inside-method")
            relabel(method, "ui.method", choices=method_choices)
    why = {"corrupt": corrupt, "target": target, "contrast": contrast, "site": site, "method": method}
    limits = gr.Markdown(limits_md(models.main.model, "en"), elem_id="inside-limits")
    relabel(limits, value=lambda lang: limits_md(models.main.model, lang))
    notes = gr.Markdown(elem_id="inside-notes")
    with relabel(gr.Accordion(t("ui.any_config"), open=False, elem_id="any-config"), "ui.any_config"):
        with gr.Row():
            spec = relabel(gr.Textbox(f"arch={family.TODAY.name},n_layer=20,n_head=10,n_embd=1280,"
                                      "vocab_size=65536,sequence_len=2048", label=t("ui.config_spec"), scale=4,
                                      elem_id="any-config-spec"), "ui.config_spec")
            rows = relabel(gr.Number(2, precision=0, minimum=1, maximum=MAX_SHAPE_SIZE, label=t("ui.shape_B"),
                                     elem_id="any-config-B"), "ui.shape_B")
            new = relabel(gr.Number(5, precision=0, minimum=1, maximum=MAX_SHAPE_SIZE, label=t("ui.shape_T"),
                                    elem_id="any-config-T"), "ui.shape_T")
            cached = relabel(gr.Number(0, precision=0, minimum=0, maximum=MAX_SHAPE_SIZE, label=t("ui.shape_T0"),
                                       elem_id="any-config-T0"), "ui.shape_T0")
        draw = relabel(gr.Button(t("ui.draw_shapes"), elem_id="any-config-draw"), value="ui.draw_shapes")
        with gr.Row():
            with gr.Column(scale=3, min_width=APP_WIDTH):
                config_plot = gr.Plot(show_label=False, elem_id="any-config-plot")
            with gr.Column(scale=2):
                config_text = gr.Markdown(elem_classes=["view-text"])
        config_table = gr.Dataframe(interactive=False, max_height=300, wrap=False)

    @models.handler(needs_gpu=False)  # the meta device: no GPU call on ZeroGPU
    def any_config_shapes(spec_text, B, T, T0, lang):
        """The shapes view of a config typed by hand (the meta device: no weights, any size, instant)."""
        spec = parse_config(spec_text or "")  # an InputError becomes a message in the user's language
        try:
            view = shapes_view(spec.config, spec.member, *(_size(v, lo) for v, lo in ((B, 1), (T, 1), (T0, 0))),
                               lang=lang)
        except ValueError as e:  # e.g. T0 + T past the rotary table
            raise gr.Error(html.escape(str(e))) from None
        return view.fig, f"### {view.title}\n\n{view.text}", headers(view.df, lang)

    draw.click(any_config_shapes, [spec, rows, new, cached, lang_state], [config_plot, config_text, config_table],
               api_name="shapes")
    png_why = png_unavailable()  # None: PNG buttons beside the CSVs; else a note says why there are none
    slots, png_buttons = [], []
    for i in range(len(VIEWS)):
        with gr.Column(visible=False, elem_id=f"view-{i}", elem_classes=["view"]) as col:
            with gr.Row():
                with gr.Column(scale=3, min_width=APP_WIDTH):  # narrower windows put the text below the plot
                    plot = gr.Plot(elem_id=f"view-plot-{i}", show_label=False)
                with gr.Column(scale=2):
                    text = gr.Markdown(elem_classes=["view-text"])
            with gr.Accordion(t("ui.data"), open=False) as acc:
                table = gr.Dataframe(interactive=False, max_height=300, wrap=False)
                with gr.Row():
                    csv = relabel(gr.DownloadButton(t("ui.download_csv"), size="sm"), value="ui.download_csv")
                    png = relabel(gr.Button(t("ui.download_png"), size="sm", visible=png_why is None,
                                            elem_id=f"view-png-{i}"), value="ui.download_png")
                png_file = gr.File(visible=False, show_label=False, elem_id=f"view-png-file-{i}")
        relabel(acc, "ui.data")
        slots.append((col, plot, text, table, csv, png_file))
        png_buttons.append(png)
    with gr.Row():
        export = relabel(gr.Button(t("ui.download_html"), size="sm", elem_id="inside-export"),
                         value="ui.download_html")
        export_file = gr.File(visible=False, elem_id="inside-export-file")
    export_note = gr.Markdown(png_why.message("en") if png_why else "", elem_id="inside-png-note")
    if png_why:
        relabel(export_note, value=png_why.message)
    last = gr.State([])

    def compute_views(which, prompt_text, ids_text, layer_v, head_v, pos_v, focus_v, lang, corrupt_text="",
                      target_text="", contrast_text="", site_v=SITES[0], method_v=METHODS[0]) -> InsideRun:
        """The model work: one forward of the input and the views asked for (all, or the focused one only); the
        why-views' inputs last (what a caller that knows only the others leaves at their defaults)."""
        loaded = models.pick(which)
        c = loaded.model.config
        req = forward_request(loaded.tokenizer, loaded.model, prompt_text, ids_text, lang)
        asked = (int(layer_v), int(head_v), int(pos_v))
        layer_v, head_v = min(int(layer_v), c.n_layer - 1), min(int(head_v), c.n_head - 1)
        T = len(req.ids[0])
        pos_v = int(pos_v) if -1 <= int(pos_v) < T else -1
        tokenizer = loaded.tokenizer if which == "loaded" else None  # random-init tutorial ids have no meaning: "#id"
        target_id = contrast_id = bad_ids = None
        if focus_v in ("all", "attribution", PATCHING, SALIENCY):  # the token to explain, and what it could have been
            target_id, contrast_id = why_tokens(tokenizer, loaded.model, target_text, contrast_text)
        if focus_v == PATCHING:
            bad_ids = corrupt_ids(tokenizer, loaded.model, req.ids[0], corrupt_text, bool((ids_text or "").strip()))
            check_why(loaded.model, T, lambda n: sweep_flops(loaded.model, n, site_v))
        if focus_v == SALIENCY:
            check_why(loaded.model, T, lambda n: saliency_flops(loaded.model, n, SALIENCY_STEPS))
        try:
            if focus_v == PATCHING:  # the prompt (its first row) is the clean one
                views = [patching_view(loaded.model, tokenizer, req.ids[0], bad_ids, target_id, contrast_id, site_v,
                                       lang)]
            elif focus_v == SALIENCY:
                views = [saliency_view(loaded.model, tokenizer, req.ids[0], pos_v, target_id, method_v, SALIENCY_STEPS,
                                       lang)]
            elif focus_v.startswith(COMPARE):  # "compare": the second model; "compare@<commit>": that version's
                versus = family.member(focus_v.partition("@")[2]) if "@" in focus_v else None
                other = models.beside(which) if versus is None else models.counterpart(which, versus)
                if other.model.config.vocab_size != loaded.model.config.vocab_size:
                    raise gr.Error(t("ui.compare_vocab", lang, a=other.model.config.vocab_size,
                                     b=loaded.model.config.vocab_size))
                check_forward(other.model, len(req.ids), len(req.ids[0]))
                traces = [trace_forward(m.model, req.ids, tokenizer) for m in (loaded, other)]
                views = [compare_view(*traces, loaded.name, other.name, pos_v, lang=lang)]
            elif focus_v.startswith(THEN_NOW):  # "then_now", or "then_now@<commit>": beside that version
                versus = family.member(focus_v.partition("@")[2]) if "@" in focus_v else None
                if versus is not None and versus.features == loaded.model.features:  # nothing to compare
                    raise gr.Error(t("ui.same_version", lang, member=versus.name))
                views = [then_now_view(loaded.model, models.counterpart(which, versus).model, tokenizer, req.ids,
                                       lang)]
            else:
                views = list(build_all(loaded.model, tokenizer, req.ids, lang, layer=layer_v, head=head_v,
                                       position=pos_v, cached=req.prefix, next_ids=req.next_ids,
                                       target=target_id, contrast=contrast_id, between=pause_point,
                                       views=(focus_v,) if focus_v in VIEWS else VIEWS).values())
        except SameTokens:  # the contrast is the model's own top-1, the target left blank
            raise gr.Error(t("ui.contrast_is_target", lang)) from None
        except NothingToRestore:
            raise gr.Error(t("ui.same_answer", lang)) from None
        except ValueError as e:
            raise gr.Error(html.escape(str(e), quote=False)) from None
        notes = req.notes + ([t("ui.random_everywhere", lang)] if loaded.source == "random-init" else [])
        return InsideRun(views, notes, req.warnings, (max(c.n_layer - 1, 1), max(c.n_head - 1, 1), max(T - 1, 1)),
                         (layer_v, head_v, pos_v), asked)

    def present(done: InsideRun, lang: str, request: gr.Request | None) -> list:
        """What a request computed, as the tab's component updates (no model work): its views, their CSVs written to
        the session's folder, the sliders' ranges."""
        for warning in done.warnings:
            gr.Warning(warning)
        views = done.views
        tmp = scratch.run_folder(request, "views")  # the session's own, cleared of older runs
        # A slider gets its value back only when it was clamped: one moved while this ran keeps its new value.
        out = [gr.update(value="\n\n".join(done.notes))] + [
            gr.update(maximum=hi, value=v) if v != a else gr.update(maximum=hi)
            for hi, v, a in zip(done.maxima, done.values, done.asked)]
        no_png = gr.update(value=None, visible=False)  # a PNG of the last run's figure is gone with it
        for i in range(len(slots)):
            if i < len(views):
                v = views[i]
                path = write_csv(v, tmp / f"{i:02d}-{v.name}.csv")  # the table shows the names in lang
                out += [gr.update(visible=True), v.fig, f"### {v.title}\n\n{v.text}", headers(v.df.head(500), lang),
                        str(path), no_png]
            else:
                out += [gr.update(visible=False), None, "", None, None, no_png]
        return [*out, views]

    compute = models.handler(compute_views)  # the model work: a GPU call on ZeroGPU, the torch thread on a CPU

    # no model work here: a lesson's own request is served from its payload, anything else computed by `compute`
    # (Gradio puts the request where the signature has it: before the why-views' inputs, where callers pass it)
    @models.handler(checks=True)
    def show_views(which, prompt_text, ids_text, layer_v, head_v, pos_v, focus_v, lang, request: gr.Request = None,
                   corrupt_text="", target_text="", contrast_text="", site_v=SITES[0], method_v=METHODS[0]):
        """One forward of the input and the views asked for (all, or the focused one only), as component updates."""
        args = (which, prompt_text, ids_text, layer_v, head_v, pos_v, focus_v, lang, corrupt_text, target_text,
                contrast_text, site_v, method_v)
        return present(payloads.serve(("views", *args), lambda: compute(*args)), lang, request)

    def show_in_handler(*values):
        """show_views for another model handler to call (it is already where model work runs), with the values of
        `inputs` and the request."""
        *args, request = values
        return present(payloads.serve(("views", *args), lambda: compute_views(*args)), args[inputs.index(lang_state)],
                       request)

    inputs = [model, prompt, ids, layer, head, position, focus, lang_state, *why.values()]
    outputs = [notes, layer, head, position] + [c for slot in slots for c in slot] + [last]
    run.click(show_views, inputs, outputs, api_name="inside")
    for slider in (layer, head, position):  # a drag's end, or a typed number once the box loses focus or on Enter
        slider.release(show_views, inputs, outputs, api_name=False)  # (demo.app.ENTER_COMMITS_JS: Enter blurs the box)
    focus.input(show_views, inputs, outputs, api_name=False)

    def apply_preset(key: str):
        """The preset's inputs; the why-inputs shown when it has a corrupt prompt."""
        if key == "custom":
            return [gr.update()] * 7
        chosen = PRESETS.get(key, PRESETS["custom"])
        return [*chosen, gr.update(open=True) if chosen.corrupt else gr.update()]

    preset.input(apply_preset, preset, [model, prompt, ids, corrupt, target, contrast, why_box], queue=False,
                 api_name=False) \
        .then(show_views, inputs, outputs, api_name=False)

    # no model work: a browser draws the PNG; the torch thread stays free, and on ZeroGPU it takes no GPU call
    @models.handler(on_thread=False, needs_gpu=False)
    def view_png(views, index, lang, request: gr.Request = None):
        """The PNG of the last run's view `index`, as a file to download; a clear message when there can be none."""
        if not views or not 0 <= int(index) < len(views):
            raise gr.Error(t("ui.empty_prompt", lang))
        v = views[int(index)]
        try:
            data = figure_png(v.fig, scale=PNG_SCALE)
        except PngError as e:
            raise gr.Error(html.escape(e.message(lang), quote=False), print_exception=not e.unavailable) from None
        path = scratch.run_folder(request, "png") / f"{int(index):02d}-{v.name}.png"
        path.write_bytes(data)
        return gr.update(value=str(path), visible=True)

    for i, (button, slot) in enumerate(zip(png_buttons, slots)):
        button.click(view_png, [last, gr.State(i), lang_state], slot[-1], api_name=False)

    # no model work: files, and a browser drawing PNGs; the torch thread stays free, and no GPU call on ZeroGPU
    @models.handler(on_thread=False, needs_gpu=False)
    def export_zip(views, lang, request: gr.Request = None):
        if not views:
            raise gr.Error(t("ui.empty_prompt", lang))
        path = scratch.run_folder(request, "export") / "inside-forward.zip"
        pngs, no_png = views_zip(views, path, PNG_SCALE)
        if no_png is not None:
            gr.Warning(html.escape(t("ui.zip_pngs", lang, n=pngs, total=len(views), why=no_png.message(lang)),
                                   quote=False))
        return gr.update(value=str(path), visible=True)

    export.click(export_zip, [last, lang_state], export_file, api_name=False)

    @models.handler(checks=True)  # no model work here either: show_views' (a lesson's payload, else `compute`)
    def refresh(views, which, prompt_text, ids_text, layer_v, head_v, pos_v, focus_v, lang, request: gr.Request = None,
                *why_values):
        """Rerun (e.g. in the new language) only when views are already on the page."""
        if not views:
            return [gr.update()] * len(outputs)
        return show_views(which, prompt_text, ids_text, layer_v, head_v, pos_v, focus_v, lang, request, *why_values)

    return InsideTab(preset, model, prompt, ids, layer, head, position, focus, why, run, show_views, show_in_handler,
                     compute, inputs, outputs, dict(fn=refresh, inputs=[last, *inputs], outputs=outputs,
                                                     api_name=False))
