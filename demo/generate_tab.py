"""Generate step by step: the naive `generate` loop one token at a time, and its cost against the cached engine."""
from __future__ import annotations

import time
from dataclasses import dataclass

import gradio as gr

from demo.gpu import paced_seconds
from gpt.torch_thread import module_pause_points, work_clock
from demo.i18n import Relabel, headers, t
from demo.links import Field
from demo.models import Models
from explain.common import APP_WIDTH
from explain.generate import generate_time_view, generate_view, running_text
from rules.inputs import MAX_GEN_STEPS, SETTINGS, InputError, check_generate, forced_ids, generation_prompt

PLAY_DELAY_S = 0.35  # auto-play pace: slow enough to read each step

LINK_FIELDS = [
    Field("gprompt", "Once upon a time"),
    Field.of("gtemp", SETTINGS["temperature"]), Field.of("gtopk", SETTINGS["top_k"]),
    Field.of("gseed", SETTINGS["gen_seed"]), Field.of("gsteps", SETTINGS["gen_steps"]),
    Field("gstep", 0, 0, MAX_GEN_STEPS),
    Field("gforce", "", max_len=4000),  # a branch: the token ids fixed after the prompt (rules.inputs.forced_ids)
]


@dataclass
class GenerateTab:
    prompt: gr.Textbox
    temperature: gr.Slider
    top_k: gr.Slider
    seed: gr.Number
    steps: gr.Slider
    step: gr.Number  # tokens generated so far (what the page shows)
    forced: gr.State  # a branch: token ids fixed after the prompt, "1, 2, 3" ("" for none)
    show_fn: object  # a handler
    state_fn: object  # the same work, not a handler: for other handlers to call
    show_inputs: list
    show_outputs: list
    cost_fn: object
    cost_inputs: list
    cost_outputs: list

    def link_parts(self) -> dict:
        return {"gprompt": self.prompt, "gtemp": self.temperature, "gtopk": self.top_k, "gseed": self.seed,
                "gsteps": self.steps, "gstep": self.step, "gforce": self.forced}

    def has_steps(self, values: list) -> bool:
        """Whether values of show_inputs (in that order) show generated tokens (a link to a step after the first)."""
        return bool(dict(zip(map(id, self.show_inputs), values))[id(self.step)])

    def show_event(self) -> dict:
        return dict(fn=self.show_fn, inputs=self.show_inputs, outputs=self.show_outputs, api_name=False)

    def cost_event(self) -> dict:
        return dict(fn=self.cost_fn, inputs=self.cost_inputs, outputs=self.cost_outputs, api_name=False)

    def show_cost_plot(self) -> dict:
        """kwargs for .then(**...) after cost_event: the plot is hidden until something is measured."""
        return dict(fn=lambda: gr.Plot(visible=True), inputs=None, outputs=self.cost_outputs[0], queue=False,
                    api_name=False)


def build(models: Models, relabel: Relabel, lang_state: gr.State) -> GenerateTab:
    with gr.Row():
        with gr.Column(scale=3):
            prompt = relabel(gr.Textbox("Once upon a time", label=t("ui.gen_prompt"), lines=2, elem_id="gen-prompt"),
                             "ui.gen_prompt")
            with gr.Row():
                reset = relabel(gr.Button(t("ui.gen_reset"), elem_id="gen-reset"), value="ui.gen_reset")
                step_btn = relabel(gr.Button(t("ui.gen_step"), variant="primary", elem_id="gen-step"),
                                   value="ui.gen_step")
                play = relabel(gr.Button(t("ui.gen_play"), elem_id="gen-play"), value="ui.gen_play")
                pause = relabel(gr.Button(t("ui.gen_pause"), elem_id="gen-pause"), value="ui.gen_pause")
        with gr.Column(scale=2):
            with gr.Row():
                temperature = relabel.slider(SETTINGS["temperature"], "ui.temperature", "gen-temperature")
                top_k = relabel.slider(SETTINGS["top_k"], "ui.top_k", "gen-top-k")
            with gr.Row():
                s = SETTINGS["gen_seed"]
                seed = relabel(gr.Number(s.default, precision=0, minimum=s.lo, maximum=s.hi, label=t("ui.gen_seed"),
                                         elem_id="gen-seed"), "ui.gen_seed")
                steps = relabel.slider(SETTINGS["gen_steps"], "ui.gen_steps", "gen-steps")
    step = gr.Number(0, precision=0, visible=False, elem_id="gen-step-count")
    forced = gr.State("")
    picks = gr.State(None)  # per step shown: the token it took and its candidates (for a branch)
    text = relabel(gr.HighlightedText(label=t("ui.gen_text"), combine_adjacent=False, show_legend=False,
                                      color_map={"new": "#c6dafc", "special": "#fdd663", "branch": "#f6c7b6"},
                                      show_inline_category=False, elem_id="gen-text"), "ui.gen_text")
    with gr.Row():
        with gr.Column(scale=3, min_width=APP_WIDTH):  # narrower windows put the text below the plot
            plot = gr.Plot(show_label=False, elem_id="gen-plot")
        with gr.Column(scale=2):
            explanation = gr.Markdown(elem_classes=["view-text"])
    history = relabel(gr.Dataframe(label=t("ui.gen_history"), interactive=False, max_height=260,
                                   elem_id="gen-history"), "ui.gen_history")
    with gr.Row(equal_height=True):
        at_step = relabel(gr.Dropdown([], label=t("ui.gen_branch_at"), elem_id="gen-branch-at"), "ui.gen_branch_at")
        instead = relabel(gr.Dropdown([], label=t("ui.gen_branch_instead"), elem_id="gen-branch-instead"),
                          "ui.gen_branch_instead")
        branch_btn = relabel(gr.Button(t("ui.gen_branch"), elem_id="gen-branch"), value="ui.gen_branch")
        unbranch = relabel(gr.Button(t("ui.gen_unbranch"), elem_id="gen-unbranch"), value="ui.gen_unbranch")
    with gr.Row():
        cost_btn = relabel(gr.Button(t("ui.gen_cost"), elem_id="gen-cost"), value="ui.gen_cost")
        cost_len = relabel.slider(SETTINGS["cost_len"], "ui.gen_cost_len", "gen-cost-len")
    with gr.Row():
        with gr.Column(scale=3, min_width=APP_WIDTH):
            cost_plot = gr.Plot(show_label=False, elem_id="gen-cost-plot", visible=False)  # shown once measured
        with gr.Column(scale=2):
            cost_text = gr.Markdown(elem_id="gen-cost-text")

    def prompt_ids(text: str, lang: str) -> list[int]:
        ids, warnings = generation_prompt(models.main.tokenizer, text, models.main.model.config.sequence_len, lang)
        for warning in warnings:
            gr.Warning(warning)
        return ids

    def state_after(prompt_text, temp, k, seed_v, n_steps, n, lang, fixed=""):
        """The state after `n` steps of model.generate(prompt + fixed, temperature, top_k, seed) (recomputed:
        deterministic); `fixed`: a branch's token ids after the prompt."""
        ids = prompt_ids(prompt_text, lang)
        tok = models.main.tokenizer
        branch = forced_ids(fixed, tok, models.main.model)
        n = max(0, min(int(n or 0), int(n_steps)))
        check_generate(models.main.model, len(ids) + len(branch), [n])
        view = generate_view(models.main.model, ids + branch, tok, n, temperature=float(temp), top_k=int(k) or None,
                             seed=int(seed_v or 0), lang=lang)
        chosen = view.df.drop_duplicates("step")["chosen_id"].tolist()
        spans = ([(tok.decode(ids), None)] + [(text, "branch") for text, _ in running_text(tok, ids, branch)]
                 + running_text(tok, ids + branch, chosen))
        steps_table = view.df[view.df["rank"] == 1][["step", "context", "chosen_token", "p_chosen", "rank_chosen",
                                                    "candidates", "entropy"]].round(4)
        options = {int(step): [(f"{row.rank}. {row.token} ({row.prob:.3f})", int(row.token_id))
                               for row in rows.itertuples() if not row.sampled]
                   for step, rows in view.df.groupby("step")}
        return (n, spans, view.fig, f"### {view.title}\n\n{view.text}", headers(steps_table, lang),
                dict(chosen=chosen, options=options), gr.Dropdown(choices=sorted(options), value=None),
                gr.Dropdown(choices=[], value=None))

    show = models.handler(state_after)
    show_inputs = [prompt, temperature, top_k, seed, steps, step, lang_state, forced]
    show_outputs = [step, text, plot, explanation, history, picks, at_step, instead]

    @models.handler
    def reset_steps(prompt_text, temp, k, seed_v, n_steps, n, lang, fixed=""):
        return state_after(prompt_text, temp, k, seed_v, n_steps, 0, lang, fixed)

    @models.handler
    def advance(prompt_text, temp, k, seed_v, n_steps, n, lang, fixed=""):
        if int(n or 0) >= int(n_steps):
            gr.Info(t("ui.gen_done", lang))
        return state_after(prompt_text, temp, k, seed_v, n_steps, int(n or 0) + 1, lang, fixed)

    # the pause between steps must not hold the torch thread (on ZeroGPU the GPU call lasts the whole play)
    @models.handler(on_thread=False, duration=lambda a: paced_seconds(a["n_steps"], PLAY_DELAY_S))
    def autoplay(prompt_text, temp, k, seed_v, n_steps, n, lang, fixed=""):
        n = int(n or 0)
        if n >= int(n_steps):
            n = 0
        while n < int(n_steps):
            n += 1
            yield models.run(state_after, prompt_text, temp, k, seed_v, n_steps, n, lang, fixed)
            time.sleep(PLAY_DELAY_S)

    def step_options(shown, at):
        """The candidates of the step picked for a branch (what else it could have taken there)."""
        options = (shown or {}).get("options", {}).get(int(at), []) if at not in (None, "") else []
        return gr.Dropdown(choices=options, value=None)

    @models.handler(checks=True)
    def take_branch(fixed, shown, at, token, n, lang):
        """A branch: the tokens up to the picked step fixed after the prompt, the picked candidate at that step,
        and the same number of steps shown after it as before."""
        if not shown or at is None or token is None:
            raise InputError("ui.gen_branch_pick")
        chosen = shown["chosen"]
        at = int(at)
        if not 1 <= at <= len(chosen) or int(token) not in dict((v, k) for k, v in shown["options"].get(at, [])):
            raise InputError("ui.gen_branch_pick")
        ids = forced_ids(fixed, models.main.tokenizer, models.main.model) + chosen[: at - 1] + [int(token)]
        return ", ".join(map(str, ids)), max(0, int(n or 0) - at)

    at_step.input(step_options, [picks, at_step], instead, queue=False, api_name=False)
    quick = dict(api_name=False, show_progress="hidden")
    branch_btn.click(take_branch, [forced, picks, at_step, instead, step, lang_state], [forced, step], **quick) \
        .success(show, show_inputs, show_outputs, api_name=False)
    unbranch.click(lambda: ("", 0), None, [forced, step], queue=False, api_name=False) \
        .then(show, show_inputs, show_outputs, api_name=False)
    reset.click(reset_steps, show_inputs, show_outputs, api_name="generate_reset")
    step_btn.click(advance, show_inputs, show_outputs, api_name="generate_step")
    playing = play.click(autoplay, show_inputs, show_outputs, api_name=False)
    pause.click(None, None, None, cancels=[playing], queue=False, api_name=False)

    @models.handler
    def cost(prompt_text, max_len, lang):
        ids = prompt_ids(prompt_text, lang)
        lengths = tuple(n for n in (4, 8, 16, 32, 64, 128, 256) if n <= int(max_len))
        check_generate(models.main.model, len(ids), list(lengths), cached_too=True)
        view = generate_time_view(models.main.model, ids, lengths, lang=lang, clock=work_clock,
                                  timed=module_pause_points)
        return view.fig, f"### {view.title}\n\n{view.text}"

    cost_inputs, cost_outputs = [prompt, cost_len, lang_state], [cost_plot, cost_text]
    tab = GenerateTab(prompt, temperature, top_k, seed, steps, step, forced, show, state_after, show_inputs,
                      show_outputs, cost, cost_inputs, cost_outputs)
    cost_btn.click(cost, cost_inputs, cost_outputs, api_name="generate_cost").then(**tab.show_cost_plot())
    return tab
