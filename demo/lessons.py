"""Lessons tab: the syllabus's questions, a short answer to each, and a button that opens the live view answering it."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from demo.i18n import Relabel, t
from demo.inside import PRESETS
from rules.inputs import parse_ids
from explain.shapes import TUTORIAL_CONFIG
from explain.training import training_examples


@dataclass(frozen=True)
class Lesson:
    id: str  # its question and answer are the texts lesson.<id>.question and lesson.<id>.answer
    tab: str  # "inside" or "generate"
    settings: dict  # link keys -> values to set before the view runs (see demo.app.link_fields)


LESSONS: list[Lesson] = [
    Lesson("forward_stages", "inside", {"preset": "story", "focus": "shapes"}),
    Lesson("logits_shape", "inside", {"preset": "tutorial_2x5", "focus": "shapes"}),
    Lesson("every_position", "inside", {"preset": "story", "focus": "next_token"}),
    Lesson("training_positions", "inside", {"preset": "tutorial_train", "focus": "training"}),
    Lesson("no_peeking", "inside", {"preset": "story", "focus": "causality"}),
    Lesson("softcap", "inside", {"preset": "story", "focus": "softcap"}),
    Lesson("generate_loop", "generate", {"gprompt": "Once upon a time", "gtemp": 0.8, "gtopk": 50, "gseed": 42}),
    Lesson("temperature", "generate", {"gprompt": "Once upon a time", "gtemp": 0.0, "gtopk": 0, "gseed": 42}),
    Lesson("forward_vs_generate", "generate", {"gprompt": "Once upon a time", "gcost": True}),
    Lesson("kv_position", "inside", {"preset": "tutorial_kv", "focus": "kv_cache"}),
    Lesson("then_and_now", "inside", {"preset": "story", "focus": "then_now"}),
    Lesson("when_decide", "inside", {"preset": "story", "focus": "commitment"}),
    Lesson("why_said", "inside", {"preset": "why_en", "focus": "patching"}),
    Lesson("what_if", "generate", {"gprompt": "Once upon a time", "gtemp": 0.8, "gtopk": 50, "gseed": 42, "gstep": 8}),
]


@dataclass
class LessonsTab:
    buttons: list[gr.Button]
    texts: list[gr.Markdown]


def lesson_values(lesson: Lesson) -> dict[str, int]:
    """The numbers a lesson's text quotes ({B}, {T}, {T1}, {n}), read from the token ids of the example it opens, so
    that the text says what the view shows: B rows of T ids and n training examples (B × T when the rows were drawn
    as nanochat's loader fetches them, T + 1 tokens a row: rules.inputs.parse_ids). None without ids."""
    preset = PRESETS.get(lesson.settings.get("preset", ""))
    if preset is None or not preset.ids:
        return {}
    req = parse_ids(preset.ids, TUTORIAL_CONFIG.vocab_size)  # the ids presets run the tutorial model
    B, T = len(req.ids), len(req.ids[0])
    return dict(B=B, T=T, T1=T + 1, n=training_examples(B, T, loader=req.next_ids is not None))


def lesson_md(lesson: Lesson, i: int, lang: str) -> str:
    """Lesson number i + 1, its question as a heading and its answer, in `lang`."""
    values = lesson_values(lesson)
    question, answer = (t(f"lesson.{lesson.id}.{part}", lang, **values) for part in ("question", "answer"))
    return f"### {i + 1}. {question}\n\n{answer}"


def build(relabel: Relabel) -> LessonsTab:
    intro = gr.Markdown(t("ui.lessons_intro"))
    relabel(intro, value="ui.lessons_intro")
    buttons, texts = [], []
    for i, lesson in enumerate(LESSONS):
        with gr.Group():
            md = gr.Markdown(lesson_md(lesson, i, "en"), elem_id=f"lesson-{i}", elem_classes=["lesson"])
            relabel(md, value=lambda lang, lesson=lesson, i=i: lesson_md(lesson, i, lang))
            btn = relabel(gr.Button(t("ui.show_me"), size="sm", elem_id=f"lesson-btn-{i}"), value="ui.show_me")
        buttons.append(btn)
        texts.append(md)
    return LessonsTab(buttons, texts)
