"""`python app.py --publish OUT_DIR`: the lessons' payloads written as a static site.

    OUT_DIR/index.html, zh.html   one page per language (the reference language's is index.html): every lesson, its
                                  question and answer, and its views (heading, explanation, data table) as HTML
    OUT_DIR/data/<lang>.js        the figures (Plotly JSON) and the Generate replays' steps, as a script: a page
                                  opened from the disk may load scripts, not JSON files
    OUT_DIR/plotly.min.js         the installed plotly package's own bundle (no CDN)
    OUT_DIR/site.js, site.css     assets/: draws each figure as it comes into view, the replays, the anchors
    OUT_DIR/README.md             a static Space's front matter (sdk: static): the folder deploys as it is

Anchors: #<lesson> opens a lesson, #<lesson>-<view> one of its views, #<lesson>-step-<n> its Generate replay at step
n. The payloads are the live app's (demo/payloads.py): the same handlers compute them, and a lesson's Generate event
is replayed from step 0 to the tab's step limit.
"""
from __future__ import annotations

import html
import json
import shutil
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Iterable

import plotly
import plotly.io as pio
from markdown_it import MarkdownIt

from demo.app import build_app
from demo.i18n import headers
from demo.lessons import lesson_md, lesson_values
from demo.models import Models, describe
from demo.payloads import LessonEvent, Payloads
from text import LANGS, REFERENCE, t

ASSETS = Path(__file__).parent / "assets"
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
TABLE_ROWS = 50  # a view's data table on the page (the live app shows 500 and has the CSV)
_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")  # raw HTML in a text is shown as text


@dataclass
class SiteReport:
    """What --publish wrote."""
    out_dir: Path
    pages: list[Path]
    figures: int  # per language
    bytes: int  # every file of the site
    seconds: float


def page_name(lang: str) -> str:
    """The page of a language: index.html for the reference language, <lang>.html for the others."""
    return "index.html" if lang == REFERENCE else f"{lang}.html"


def publish(models: Models, out_dir: Path | str, langs: Iterable[str] | None = None) -> SiteReport:
    """Compute every lesson's payload with `models` (the app's own handlers, not launched) and write the site."""
    start = time.perf_counter()
    _, payloads = build_app(models)
    out = Path(out_dir)
    (out / "data").mkdir(parents=True, exist_ok=True)
    langs = list(langs or LANGS)
    pages, figures = [], 0
    for lang in langs:
        data: dict = {"figures": {}, "replays": {}}
        events = [e for e in payloads.events if e.lang == lang]
        sections = [_lesson(e, i, payloads, data, lang) for i, e in enumerate(events)]
        page = out / page_name(lang)
        page.write_text(_page(models, lang, langs, events, sections), encoding="utf-8")
        script = f"window.INSIDE_FORWARD_SITE = {json.dumps(data, ensure_ascii=False, separators=(',', ':'))};\n"
        (out / "data" / f"{lang}.js").write_text(script, encoding="utf-8")
        pages.append(page)
        figures = len(data["figures"]) + sum(len(steps) for steps in data["replays"].values())
    shutil.copyfile(PLOTLY_JS, out / "plotly.min.js")
    for asset in ("site.js", "site.css"):
        shutil.copyfile(ASSETS / asset, out / asset)
    (out / "README.md").write_text(_space_readme(models), encoding="utf-8")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return SiteReport(out, pages, figures, size, time.perf_counter() - start)


# ---- one lesson --------------------------------------------------------------------------------------------------
def _lesson(event: LessonEvent, i: int, payloads: Payloads, data: dict, lang: str) -> str:
    """A lesson's section: its question and answer, then its views (or its replay), computed through `payloads`."""
    lesson = event.lesson
    body = [f'<section class="lesson" id="{_attr(lesson.id)}">',
            _markdown(lesson_md(lesson, i, lang)).replace("<h3>", f'<h2><a class="anchor" href="#{_attr(lesson.id)}">'
                                                          "#</a> ", 1).replace("</h3>", "</h2>", 1)]
    if event.kind == "views":
        done = payloads.payload(event)
        body += [_markdown(note) for note in done.notes]
        for view in done.views:
            body.append(_view(data, lesson.id, view.name, f"### {view.title}\n\n{view.text}", view.fig,
                              headers(view.df.head(TABLE_ROWS), lang), lang))
    elif event.kind == "cost":
        fig, md = payloads.payload(event)
        body.append(_view(data, lesson.id, "cost", md, fig, None, lang))
    else:
        body.append(_replay(event, payloads, data, lang))
    body.append("</section>")
    return "\n".join(body)


def _view(data: dict, lesson: str, name: str, md: str, fig, table, lang: str) -> str:
    """One view: its heading and explanation, its figure (drawn by site.js from data["figures"]), its data table."""
    anchor = f"{lesson}-{name}"
    data["figures"][anchor] = _figure(fig)
    parts = [f'<figure class="view" id="{_attr(anchor)}">',
             f'<a class="anchor" href="#{_attr(anchor)}" title="{_attr(t("site.link", lang))}">#</a>',
             f'<div class="plot" data-figure="{_attr(anchor)}"></div>',
             f'<figcaption class="text">{_markdown(md)}</figcaption>']
    if table is not None:
        parts.append(_table(table, lang))
    parts.append("</figure>")
    return "\n".join(parts)


def _replay(event: LessonEvent, payloads: Payloads, data: dict, lang: str) -> str:
    """A lesson's Generate event replayed: the state after 0, 1, ..., steps steps (data["replays"]), shown from the
    step the lesson opens at, with buttons to step and play."""
    lesson = event.lesson.id
    steps = []
    for n in range(event.steps + 1):
        # the Generate tab's show_outputs begin with the step, the running text, the plot, its text and the table
        shown, spans, fig, md, table = payloads.payload(event.at_step(n))[:5]
        steps.append({"label": t("site.step", lang, n=shown, total=event.steps), "fig": _figure(fig),
                      "text": _spans(spans), "md": _markdown(md), "table": _table(table, lang)})
    data["replays"][lesson] = steps
    start = int(event.args[event.step_index])
    buttons = "".join(f'<button type="button" data-act="{act}">{html.escape(t(key, lang))}</button>'
                      for act, key in (("first", "ui.gen_reset"), ("back", "site.back"), ("next", "ui.gen_step"),
                                       ("play", "ui.gen_play")))
    return (f'<div class="replay" id="{_attr(lesson)}-steps" data-replay="{_attr(lesson)}" data-start="{start}" '
            f'data-play="{_attr(t("ui.gen_play", lang))}" data-pause="{_attr(t("ui.gen_pause", lang))}">\n'
            f'<p class="note">{html.escape(t("site.replay", lang))}</p>\n'
            f'<div class="controls">{buttons} <span class="step-label"></span></div>\n'
            '<div class="running-text"></div>\n<div class="plot"></div>\n<div class="text"></div>\n'
            '<div class="table"></div>\n</div>')


# ---- pieces ------------------------------------------------------------------------------------------------------
def _figure(fig) -> dict:
    """A figure as Plotly.js takes it (data and layout), through plotly's own JSON encoder."""
    return json.loads(pio.to_json(fig, validate=False))


def _markdown(text: str) -> str:
    return _MARKDOWN.render(text)


def _attr(text: str) -> str:
    return html.escape(text, quote=True)


def _table(df, lang: str) -> str:
    """A data table (its columns already named in `lang`) under a "Data" disclosure."""
    return (f'<details class="data"><summary>{html.escape(t("ui.data", lang))}</summary>'
            f'{df.to_html(index=False, border=0, classes="table", escape=True)}</details>')


def _spans(spans: list) -> str:
    """The Generate tab's running text ((text, category) pairs): the new tokens and special tokens marked."""
    return "".join(f'<span class="tok {html.escape(kind)}">{html.escape(text)}</span>' if kind else
                   html.escape(text) for text, kind in spans)


def _page(models: Models, lang: str, langs: list[str], events: list[LessonEvent], sections: list[str]) -> str:
    switch = " · ".join(f"<strong>{html.escape(LANGS[code])}</strong>" if code == lang else
                        f'<a class="lang-link" hreflang="{code}" href="{page_name(code)}" '
                        f'data-page="{page_name(code)}">{html.escape(LANGS[code])}</a>' for code in langs)
    contents = "".join(f'<li><a href="#{_attr(e.lesson.id)}">'
                       f'{_MARKDOWN.renderInline(t(f"lesson.{e.lesson.id}.question", lang, **lesson_values(e.lesson)))}'
                       "</a></li>" for e in events)
    model = _MARKDOWN.renderInline(describe(models.main, lang))
    return f"""<!doctype html>
<html lang="{'zh-Hans' if lang == 'zh' else lang}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(t("site.title", lang))}</title>
<link rel="stylesheet" href="site.css">
<script src="plotly.min.js"></script>
<script src="data/{lang}.js"></script>
<script src="site.js" defer></script>
</head>
<body>
<header>
<nav class="langs" aria-label="{_attr(t("ui.language", lang))}">{switch}</nav>
<h1>{html.escape(t("site.title", lang))}</h1>
<p class="model">{html.escape(t("ui.model_line", lang))}: {model}</p>
{_markdown(t("site.intro", lang))}
<noscript><p>{html.escape(t("site.noscript", lang))}</p></noscript>
</header>
<nav class="contents"><ol>{contents}</ol></nav>
<main>
{chr(10).join(sections)}
</main>
<footer>{_markdown(t("site.footer", lang, date=date.today().isoformat()))}</footer>
</body>
</html>
"""


def _space_readme(models: Models) -> str:
    """A static Space's README: its front matter makes the folder a Space as it is (hub-docs
    docs/hub/spaces-sdks-static.md: `sdk: static`, the page in index.html)."""
    return f"""---
title: Inside Forward lessons
emoji: 🔍
colorFrom: indigo
colorTo: yellow
sdk: static
app_file: index.html
license: mit
short_description: Every lesson of Inside Forward, as static pages
---

# Inside Forward: the lessons, as a static site

Written by `python app.py --publish` with {models.main.name} (nanochat {models.main.arch}). Open `index.html`
(English) or `zh.html` (简体中文) from any static web server, or from the disk: nothing here runs Python or loads
anything from elsewhere.
"""
