"""Small shared pieces of the views: the result type, position windows, array conversion, plot defaults."""
from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from text import t, t_count

FONT = "Noto Sans CJK SC, Microsoft YaHei, PingFang SC, Arial, sans-serif"  # Chinese labels render everywhere
_GRID = dict(gridcolor="#ebebeb", zerolinecolor="#dadce0", linecolor="#dadce0")
# A small template of our own: plotly's named templates ("plotly_white") cost ~12 ms and ~6 KB of JSON per figure.
TEMPLATE = dict(layout=dict(colorway=["#1a73e8", "#d93025", "#188038", "#f9ab00", "#9334e6", "#12b5cb"],
                            plot_bgcolor="white", paper_bgcolor="white", xaxis=_GRID, yaxis=_GRID))


@dataclass
class ViewResult:
    """One view: the data (downloadable), the picture, and its explanation in the requested language."""
    name: str
    title: str
    df: pd.DataFrame
    fig: go.Figure
    text: str


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what makes a spreadsheet read a CSV cell as a formula


def _inert(cell):
    return "'" + cell if isinstance(cell, str) and cell.startswith(FORMULA_START) else cell


SHOWN_DIGITS = 4  # a table on screen: 4 decimals, or 4 significant digits for a number below 1 (0.0001234)


def shown_table(df: pd.DataFrame) -> pd.DataFrame:
    """`df` as a table on screen shows it: float columns at a sensible precision (0.5216000080108643 -> 0.5216,
    10.823412 -> 10.8234, 1.2345678e-07 -> 1.235e-07); the CSV (csv_text) keeps every digit."""
    out = df.copy()
    for i in range(out.shape[1]):
        column = out.iloc[:, i]
        if pd.api.types.is_float_dtype(column):
            x = column.to_numpy(dtype=np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                exponent = np.floor(np.log10(np.abs(x)))
            decimals = np.where(np.isfinite(exponent) & (exponent < 0), SHOWN_DIGITS - 1 - exponent, SHOWN_DIGITS)
            out.isetitem(i, [float(np.round(v, int(d))) if np.isfinite(v) else v for v, d in zip(x, decimals)])
    return out


def csv_text(df: pd.DataFrame) -> str:
    """The table as the CSV every download of the app carries (no index). A text cell (or column name) that a
    spreadsheet would run as a formula, one starting with = + - @ or a tab or CR (e.g. the token "=cmd|' /C calc'!A0"
    of a prompt), gets a leading apostrophe, so it stays text (OWASP's CSV-injection advice); numbers stay numbers."""
    out = df.copy()
    out.columns = [_inert(c) for c in df.columns]
    for i in range(out.shape[1]):  # by position: column names may repeat
        if not pd.api.types.is_numeric_dtype(out.iloc[:, i]):
            out.isetitem(i, out.iloc[:, i].map(_inert))
    return out.to_csv(index=False, lineterminator="\r\n")  # RFC 4180: then a cell holding a CR or LF is quoted


def window_kind(window_keys: int | None, context: int) -> str | None:
    """"S" (a sliding window shorter than the context), "L" (the whole context) or None (a model without windows)."""
    if window_keys is None:
        return None
    return "S" if window_keys < context else "L"


def window(T: int, focus: int, size: int) -> tuple[int, int]:
    """[start, end) of at most `size` positions containing `focus`, as late as possible (causal views look back)."""
    if T <= size:
        return 0, T
    end = min(T, max(size, focus + 1))
    return end - size, end


def resolve_position(position: int, T: int) -> int:
    """Python-style index (-1 = last) -> 0..T-1, with a clear error."""
    p = position + T if position < 0 else position
    if not 0 <= p < T:
        raise ValueError(f"position {position} is outside the prompt (0..{T - 1})")
    return p


def np32(t: torch.Tensor, decimals: int = 5) -> np.ndarray:
    """A small tensor -> float32 numpy, rounded so figures stay lean."""
    return np.round(t.detach().float().cpu().numpy(), decimals).astype(np.float32)


TITLE_SIZE = 15  # px, a figure's title
SUBPLOT_TITLE_SIZE = 13  # px, each subplot's title (make_subplots' own 16 is larger than the figure's title)
APP_WIDTH = 600  # px: the narrowest a view's plot is drawn in the app (its column's min_width in demo/: narrower
# windows, a 1024-px projector among them, put the explanation below the plot, which then takes the whole row)
GLYPH_EM = 0.55  # a Latin glyph's average width in em (Arial's lowercase ~0.5, plus slack); a CJK glyph is 1 em
LINE_EM = 1.3  # a text line's height in em
TITLE_PAD = 10  # px above the figure's title
TITLE_LIFT_EM = 0.7  # Plotly lifts a title of two or more lines (yanchor "top") this much above its pad: its first
# line's top would be cut by the figure's edge (measured in Chromium, plotly.js of plotly 7.1: 10.5 px at 15 px)


def base_layout(title: str, height: int = 420, **kw) -> dict:
    """Layout every view starts from: white template, compact margins, a CJK-capable font."""
    layout = dict(title=dict(text=title, font=dict(size=TITLE_SIZE)), template=TEMPLATE, height=height,
                  margin=dict(l=60, r=20, t=60, b=50), font=dict(family=FONT, size=12))
    layout.update(kw)
    return layout


def text_units(text: str) -> int:
    """Width of `text` in Latin-glyph units: a wide (CJK) character counts two."""
    if text.isascii():
        return len(text)
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


# A piece that a line may not be broken inside: a word, or one CJK character with the punctuation that closes it.
_PIECE = re.compile(r"[\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef][）」』】》〉，。、：；！？]*|[^\s\u2e80-\u9fff\uf900-\ufaff"
                    r"\uff00-\uffef]+|\s+")


def _greedy(pieces: list[str], units: int) -> list[str]:
    lines, line, space = [], "", False
    for piece in pieces:
        if piece.isspace():
            space = True
            continue
        joined = line + (" " if space and line else "") + piece
        if line and text_units(joined) > units:
            lines.append(line)
            joined = piece
        line, space = joined, False
    return lines + [line] if line else lines


def wrap(text: str, units: int) -> list[str]:
    """`text` in lines of at most `units` (text_units), broken at spaces or between CJK characters (Chinese has no
    spaces), as few lines as that takes and as even as they can be; a word longer than a line keeps a line of its
    own."""
    pieces = _PIECE.findall(text)
    lines = _greedy(pieces, units)
    lo, hi = 1, units  # the fewest units that still give len(lines) lines (the count only grows as units shrink)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if len(_greedy(pieces, mid)) == len(lines) else (mid + 1, hi)
    return _greedy(pieces, lo)


def hover(key: str, lang: str) -> str:
    """The hover template `key` of the text registry, without Plotly's trace-name box."""
    return t(key, lang) + "<extra></extra>"


TICK_FONT_PX = 12  # the layout's font size: a tick label's height
COLORBAR_PX = 90  # what a heatmap's colour bar takes from the plot's width (its bar, ticks, labels and title)
TICK_ROTATED_PX = 18  # the least distance between two ticks whose labels are turned by 60° (12 px / sin 60°, + room)
TICK_LEVEL_PX = 16  # ... between two ticks of a vertical axis whose labels are level (a 12-px line, + room)


def ticks_that_fit(axis_px: float, angle: int = -60) -> int:
    """How many tick labels an axis `axis_px` long can hold without two overlapping: level labels on a vertical
    axis (angle 0) need a line each, labels turned by 60° on a horizontal one a little more (their slant)."""
    return max(2, int(axis_px // (TICK_LEVEL_PX if angle == 0 else TICK_ROTATED_PX)))


def position_axis(positions: list[int], labels, max_ticks: int = 64, angle: int = -60,
                  axis_px: float | None = None) -> dict:
    """A numeric position axis whose ticks read as the tokens (duplicates are fine, positions stay distinct). With
    `axis_px` (the axis's length at the narrowest the figure is drawn), no more ticks than fit without overlapping;
    every `step`-th position has one."""
    if axis_px is not None:
        max_ticks = min(max_ticks, ticks_that_fit(axis_px, angle))
    step = max(1, -(-len(positions) // max_ticks))
    shown = positions[::step]
    return dict(tickmode="array", tickvals=shown, ticktext=[labels[p] for p in shown], tickangle=angle)


def axis_px(fig_px: float, margin_l: float, margin_r: float, domain: float = 1.0) -> float:
    """The length of an axis spanning `domain` of the plot area of a figure `fig_px` wide (or tall) with those
    margins."""
    return (fig_px - margin_l - margin_r) * domain


def fit_label(label: str, units: int) -> str:
    """`label` cut to at most `units` (text_units: a CJK character counts two), with "…" where it was cut."""
    if text_units(label) <= units:
        return label
    out = ""
    for ch in label:
        if text_units(out + ch) > units - 1:
            break
        out += ch
    return out + "…"


@torch.inference_mode()
def rank_and_ties(scores: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rank of token `ids[...]` among `scores[..., V]`, and how many other tokens score exactly the same. Rank =
    1 + the number of tokens that score strictly higher, so tied tokens share a rank: when every score is equal,
    every token is rank 1, tied with the V - 1 others. Both stay on the scores' device."""
    own = scores.gather(-1, ids[..., None])
    return (scores > own).sum(-1) + 1, (scores == own).sum(-1) - 1


def rank_text(rank: int, tied: int, V: int, lang: str) -> str:
    """"rank 3 of 50304", and ", tied with 12 other tokens" when others score exactly the same."""
    return t("plot.rank_of", lang, rank=rank, V=V) + (t_count("plot.tied_with", tied, lang) if tied else "")


_SPLIT_BYTE = re.compile(r"\\x[89a-f][0-9a-f]")  # gpt.tokenizer's label for a byte of a character split over tokens
_SPLIT_CHAR = re.compile(r"\(\d/\d\)|‹[^›]›")  # explain.trace.sequence_labels' label for a part of a character


def split_chars(labels: list[str], raw_labels: list[str] | None) -> str:
    """"今 = \\xe4\\xbb + \\x8a, 气 = ..." for the characters that sequence_labels shows in place of the bytes of
    the tokens that make them (the first 8, in order of appearance); "" when there are none."""
    if not raw_labels:
        return ""
    seen, out, k = set(), [], 0
    while k < len(labels):
        m = re.fullmatch(r"(.+)\(1/(\d)\)", labels[k])
        if m and k + int(m[2]) <= len(labels) and m[1] not in seen:
            seen.add(m[1])
            out.append(f"{m[1]} = " + " + ".join(f"`{r}`" for r in raw_labels[k:k + int(m[2])]))
        k += 1
    return ", ".join(out[:8]) + (", …" if len(out) > 8 else "")


def bytes_note(df: pd.DataFrame, fig: go.Figure, lang: str, labels: list[str] | None = None,
               raw_labels: list[str] | None = None) -> str:
    """Paragraphs saying why some labels are hex bytes ("\\xe4\\xbd": part of a character's UTF-8 bytes) and why some
    read "今(1/2)" (a token that is part of a character, shown as the character: with the prompt's `labels` and
    `raw_labels`, the bytes of each such character), for a view whose table or figure shows such a label; "" for
    any other view."""
    cells = [str(c) for column in df.select_dtypes(exclude="number").columns for c in df[column]]
    figure = fig.to_json()
    note = ""
    if any(_SPLIT_CHAR.search(c) for c in cells) or _SPLIT_CHAR.search(figure):
        detail = split_chars(labels or [], raw_labels)
        note += "\n\n" + t("plot.split_chars", lang) + (t("plot.split_chars_detail", lang, chars=detail)
                                                        if detail else "")
    if any(_SPLIT_BYTE.search(c) for c in cells) or _SPLIT_BYTE.search(figure):
        note += "\n\n" + t("plot.partial_bytes", lang)
    return note


@torch.inference_mode()
def constant_logits(logits: torch.Tensor) -> bool:
    """True when every logit is the same number (nanochat's init: lm_head starts at zero, so every logit is 0). A
    check that compares logits (KV cache against a full forward, one token changed) passes on such a model whatever
    the code does, so a view says it proves nothing there."""
    return bool((logits.amax() == logits.amin()).item())
