"""Dense plots stay readable at the narrowest width the app draws a view (issue 20): the mask view's panels, attention
over 300 tokens and the logit lens get no more tick labels than their axes hold, a wrapped title is not cut at the
figure's top edge, and the lens shows a guess that completes a character the prompt began as the character.

Tick spacing is checked on the figure's own numbers (no browser): the distance between two tick labels, in px at
APP_WIDTH, from the axis's domain, the margins and the data's extent. The title is drawn once in Chromium (Plotly's
own plotly.js, no app), since where Plotly puts a title of several lines is Plotly's business."""
from __future__ import annotations

import codecs
import json
import math
from pathlib import Path

import numpy as np
import plotly
import pytest

from explain.attention import attention_view
from explain.common import APP_WIDTH, COLORBAR_PX
from explain.lens import logit_lens_view
from explain.mask import mask_view
from explain.trace import trace_forward

CHINESE = "今天天气不错，我们一起去公园散步吧。"
FONT_PX = 12  # a tick label's height
MIN_LEVEL_PX = FONT_PX + 2  # two level labels (a vertical axis) one above the other: a line each
MIN_TURNED_PX = (FONT_PX + 2) / math.sin(math.radians(60))  # labels turned by 60°: their lines that far apart


@pytest.fixture(scope="module")
def shipped():
    from gpt.checkpoint import DEFAULT_DIR, load_default

    if not (DEFAULT_DIR / "config.json").is_file():
        pytest.skip("no shipped model")
    return load_default(device="cpu")


@pytest.fixture(scope="module")
def long_trace(shipped):
    ids = shipped.tokenizer.encode(CHINESE * 20)[:300]
    assert len(ids) == 300
    return trace_forward(shipped.model, ids, shipped.tokenizer)


def tick_gaps(fig, width: int = APP_WIDTH) -> list[tuple[str, int, float, float]]:
    """(axis, ticks, px between two neighbouring ticks, px they need) of every position axis of the figure's
    heatmaps, drawn `width` px wide."""
    layout, out = fig.layout, []
    m = layout.margin
    for trace in fig.data:
        if trace.type != "heatmap":
            continue
        colorbar = COLORBAR_PX if trace.showscale is not False else 0
        for letter, values in (("x", trace.x), ("y", trace.y)):
            name = (getattr(trace, f"{letter}axis") or letter).replace(letter, f"{letter}axis", 1)
            axis = layout[name]
            if axis.tickvals is None or values is None or len(values) < 2:
                continue
            values = np.asarray(values, dtype=float)
            extent = values.max() - values.min() + np.median(np.diff(np.unique(values)))  # a cell per value
            plot = (width - m.l - m.r - colorbar) if letter == "x" else (layout.height - m.t - m.b)
            domain = axis.domain or (0, 1)
            px_per_value = plot * (domain[1] - domain[0]) / extent
            ticks = np.sort(np.asarray(axis.tickvals, dtype=float))
            gap = float(np.diff(ticks).min() * px_per_value) if len(ticks) > 1 else math.inf
            need = MIN_LEVEL_PX if (axis.tickangle or 0) == 0 else MIN_TURNED_PX
            out.append((name, len(ticks), gap, need))
    return out


def assert_ticks_fit(fig) -> None:
    gaps = tick_gaps(fig)
    assert gaps
    crowded = [g for g in gaps if g[2] < g[3]]
    assert not crowded, crowded


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("windows", [None, "band"])
def test_mask_panels_get_no_more_tick_labels_than_fit(shipped, long_trace, lang, windows):
    labels = long_trace.labels[0]
    options = dict(windows=shipped.model.window_sizes, context=shipped.model.config.sequence_len)
    if windows == "band":  # a model with sliding windows: the fourth panel, the band over the whole prompt
        options = dict(windows=[64, 64, 512], context=512)
    view = mask_view(labels, lang=lang, **options)
    assert len(view.fig.data) == (4 if windows else 3)
    assert_ticks_fit(view.fig)
    decode = view.fig.layout.xaxis2  # the decode panel: a fifth of the width, 24 keys
    assert 2 <= len(decode.tickvals) < 24


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_attention_over_300_tokens_gets_no_more_tick_labels_than_fit(long_trace, lang):
    view = attention_view(long_trace, layer=1, head=2, lang=lang)
    assert_ticks_fit(view.fig)
    assert len(view.fig.layout.xaxis.tickvals) >= 8 and len(view.fig.layout.yaxis.tickvals) >= 8  # not thinned away


def test_logit_lens_gets_no_more_tick_labels_than_fit(long_trace):
    assert_ticks_fit(logit_lens_view(long_trace, lang="zh").fig)


@pytest.mark.parametrize("window_size", [8, 16, 32])
def test_logit_lens_cells_hold_their_text_at_the_narrowest_width(long_trace, window_size):
    """Each cell's text fits its cell (9 px glyphs, a CJK one twice a Latin one's 0.55 em) at 600 px."""
    from explain.common import text_units

    fig = logit_lens_view(long_trace, window_size=window_size, lang="zh").fig
    cell_px = (600 - fig.layout.margin.l - fig.layout.margin.r - 90) / window_size
    widest = max(text_units(c) for row in fig.data[0].text for c in row)
    assert widest * 9 * 0.55 <= cell_px


def completes_a_character(tokenizer, context: list[int], guess: int) -> bool:
    """True when `guess` ends a character whose first bytes are the context's last tokens (UTF-8, decoded here)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        decoder.decode(b"".join(tokenizer.token_bytes(i) for i in context[-3:] if not tokenizer.is_special(i)))
        if not decoder.getstate()[0]:
            return False  # the context ends on a whole character
        decoder.decode(tokenizer.token_bytes(guess))
    except (UnicodeDecodeError, KeyError):
        return False
    return not decoder.getstate()[0]


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_logit_lens_shows_a_completed_character_not_its_bytes(shipped, lang):
    tok = shipped.tokenizer
    ids = tok.encode(CHINESE * 2)
    trace = trace_forward(shipped.model, ids, tok)
    completing = 0
    for end in range(11, len(ids), 12):  # the prompt in windows of 12 positions, as the app shows it
        view = logit_lens_view(trace, position=end, window_size=12, lang=lang)
        cells, df = view.fig.data[0].text, view.df
        for (layer, position), guess in zip(zip(df["layer"], df["position"]), df["top_token_id"]):
            if completes_a_character(tok, ids[:position + 1], int(guess)):
                completing += 1
                row = list(view.fig.data[0].y).index(layer)
                shown = cells[row][position - df["position"].min()]
                whole = df.loc[(df["layer"] == layer) & (df["position"] == position), "top_token"].item()
                assert "\\x" not in shown and "(" in whole and "/" in whole, whole  # the character, its part: 气(2/2)
                assert whole.startswith(shown.removesuffix("…")) and whole[0] == shown[0], (whole, shown)  # cut only
    assert completing >= 5  # the check ran: the model does complete the characters the prompt begins


def test_a_wrapped_title_is_not_cut_at_the_top(shipped, long_trace, browser):
    """The English mask title at 300 tokens wraps to two lines at APP_WIDTH; drawn by plotly.js, its first line starts
    inside the figure and its last ends above the panels' titles."""
    view = mask_view(long_trace.labels[0], lang="en", windows=shipped.model.window_sizes,
                     context=shipped.model.config.sequence_len)
    assert "<br>" in view.fig.layout.title.text
    page = browser.new_page(viewport={"width": APP_WIDTH + 40, "height": 1000})
    try:
        page.set_content(f'<div id="g" style="width:{APP_WIDTH}px"></div>')
        page.add_script_tag(path=str(Path(plotly.__file__).parent / "package_data" / "plotly.min.js"))
        boxes = page.evaluate("""(f) => Plotly.newPlot('g', f.data, f.layout).then(() => {
          const root = document.getElementById('g').getBoundingClientRect();
          const box = e => { const r = e.getBoundingClientRect(); return [r.top - root.top, r.bottom - root.top]; };
          return {title: box(document.querySelector('.g-gtitle text')),
                  panels: [...document.querySelectorAll('.annotation text')].map(box)};
        })""", json.loads(view.fig.to_json()))
    finally:
        page.close()
    top, bottom = boxes["title"]
    assert top >= 0, boxes
    assert bottom <= min(b[0] for b in boxes["panels"]), boxes
