"""Small shared pieces of the views: the result type, position windows, array conversion, plot defaults."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from explain.text import t

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


def layer_windows(model) -> list[int | None]:
    """Each layer's sliding window: how many keys back a query may look besides its own (None: no window, the 2025
    model, where every query sees the whole context)."""
    return [block.attn.window for block in model.transformer.h]


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


def base_layout(title: str, height: int = 420, **kw) -> dict:
    """Layout every view starts from: white template, compact margins, a CJK-capable font."""
    layout = dict(title=dict(text=title, font=dict(size=15)), template=TEMPLATE, height=height,
                  margin=dict(l=60, r=20, t=60, b=50), font=dict(family=FONT, size=12))
    layout.update(kw)
    return layout


def hover(key: str, lang: str) -> str:
    """The hover template `key` of the text registry, without Plotly's trace-name box."""
    return t(key, lang) + "<extra></extra>"


def subplots(**kw) -> go.Figure:
    """make_subplots on a figure that already has our template (so plotly's default template is never built)."""
    return make_subplots(figure=go.Figure(layout=dict(template=TEMPLATE)), **kw)


def position_axis(positions: list[int], labels: list[str], max_ticks: int = 64, angle: int = -60) -> dict:
    """A numeric position axis whose ticks read as the tokens (duplicates are fine, positions stay distinct)."""
    step = max(1, -(-len(positions) // max_ticks))
    shown = positions[::step]
    return dict(tickmode="array", tickvals=shown, ticktext=[labels[p] for p in shown], tickangle=angle)
