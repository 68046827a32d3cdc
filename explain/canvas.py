"""Canvas: a view's Plotly figure built as plain dicts and validated once, when the view is done.

Plotly's graph objects validate every property on every update: a four-panel view built with make_subplots and
update_xaxes / update_layout spent ~170 ms of its ~200 ms in that validation on the 2-core CPU (profiled), which is
more than the whole re-render budget of a view (< 100 ms). A Canvas keeps the layout as a dict and the traces as
Plotly's own trace objects (validated as they are made, ~1 ms each); `figure()` builds the go.Figure once (~5-15 ms).
Its methods are the few of go.Figure the views use, with the same meaning, so a view reads as Plotly code:
add_trace(trace, row, col, secondary_y), update_xaxes / update_yaxes (row, col; Plotly's "title_text" style of
nested keys), update_layout, add_shape / add_hline / add_vline / add_vrect. subplots() lays out a grid as
make_subplots does (the same axis names and domains: tests/test_canvas.py compares them).
"""
from __future__ import annotations

import copy
import math

import plotly.graph_objects as go
from plotly.basedatatypes import BaseTraceType

from explain.common import (APP_WIDTH, GLYPH_EM, LINE_EM, SUBPLOT_TITLE_SIZE, TEMPLATE, TITLE_LIFT_EM, TITLE_PAD,
                            TITLE_SIZE, wrap)

SECONDARY_Y_WIDTH = 0.94  # the share of the width make_subplots leaves the plots when a cell has a secondary y axis


def _nested(kw: dict) -> dict:
    """Plotly's "magic underscore" keys as nested dicts: {"title_text": "a", "margin_t": 9} ->
    {"title": {"text": "a"}, "margin": {"t": 9}} (no layout or axis property of Plotly has "_" in its name)."""
    out: dict = {}
    for key, value in kw.items():
        *path, last = key.split("_")
        node = out
        for part in path:
            node = node.setdefault(part, {})
        _merge(node, {last: value})
    return out


def _merge(into: dict, update: dict) -> dict:
    """Merge `update` into `into` as Plotly's update() does: nested dicts merge, anything else is replaced."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.copy(value) if isinstance(value, dict) else value
    return into


def _name(axis: str, n: int) -> str:
    """("x", 1) -> "x", ("x", 3) -> "x3": the axis as a trace names it."""
    return axis if n == 1 else f"{axis}{n}"


class Canvas:
    """A figure under construction (see the module's docstring). One cell (1, 1) unless made by subplots()."""

    def __init__(self, layout: dict | None = None):
        self.data: list[BaseTraceType] = []
        self.layout: dict = {"template": TEMPLATE}
        self.cells: dict[tuple[int, int], tuple[int, int, int | None]] = {(1, 1): (1, 1, None)}  # x, y, secondary y
        if layout:
            self.update_layout(layout)

    def _cell(self, row: int | None, col: int | None) -> list[tuple[int, int, int | None]]:
        """The cells (row, col) addresses: None matches every row (column)."""
        picked = [ref for (r, c), ref in self.cells.items() if row in (None, r) and col in (None, c)]
        if not picked:
            raise ValueError(f"no subplot at row={row}, col={col}")
        return picked

    def add_trace(self, trace: BaseTraceType, row: int | None = None, col: int | None = None,
                  secondary_y: bool = False) -> Canvas:
        if row is not None or col is not None:
            (x, y, y2), = self._cell(row or 1, col or 1)
            if secondary_y and y2 is None:
                raise ValueError(f"the subplot at row={row}, col={col} has no secondary y axis")
            trace.update(xaxis=_name("x", x), yaxis=_name("y", y2 if secondary_y else y))
        self.data.append(trace)
        return self

    def _axes(self, letter: str, row, col, secondary_y: bool) -> list[dict]:
        numbers = [(x if letter == "x" else (y2 if secondary_y else y)) for x, y, y2 in self._cell(row, col)]
        return [self.layout.setdefault(f"{letter}axis{n if n > 1 else ''}", {}) for n in numbers if n is not None]

    def update_xaxes(self, props: dict | None = None, row: int | None = None, col: int | None = None,
                     **kw) -> Canvas:
        for axis in self._axes("x", row, col, False):
            _merge(axis, _nested({**(props or {}), **kw}))
        return self

    def update_yaxes(self, props: dict | None = None, row: int | None = None, col: int | None = None,
                     secondary_y: bool = False, **kw) -> Canvas:
        for axis in self._axes("y", row, col, secondary_y):
            _merge(axis, _nested({**(props or {}), **kw}))
        return self

    def update_layout(self, props: dict | None = None, **kw) -> Canvas:
        _merge(self.layout, {**(props or {}), **_nested(kw)})
        return self

    def update_traces(self, selector: dict | None = None, **kw) -> Canvas:
        """Update every trace, or those whose properties match `selector` (e.g. dict(type="heatmap"))."""
        for trace in self.data:
            if all(trace[k] == v for k, v in (selector or {}).items()):
                trace.update(**kw)
        return self

    def add_shape(self, row: int | None = None, col: int | None = None, **shape) -> Canvas:
        """A shape in the cell (row, col), or in every cell when both are None; its "x"/"y" refs there ("x domain"
        style refs keep their suffix)."""
        for x, y, _ in self._cell(row, col):
            refs = {}
            for key, letter, n in (("xref", "x", x), ("yref", "y", y)):
                ref = shape.get(key, letter)
                refs[key] = _name(letter, n) + ref[1:] if ref.startswith(letter) else ref
            self.layout.setdefault("shapes", []).append({**shape, **refs})
        return self

    def add_hline(self, y: float, row: int | None = None, col: int | None = None, annotation_text: str | None = None,
                  annotation_position: str = "top right", **line) -> Canvas:
        """A horizontal line across the plot (x domain 0..1) at y, with an optional label at one of its ends."""
        self.add_shape(row, col, type="line", x0=0, x1=1, xref="x domain", y0=y, y1=y, yref="y", **line)
        if annotation_text is not None:  # "top left": above the line at its left end; "bottom right": below, right
            vertical, side = annotation_position.split()
            for x, yn, _ in self._cell(row, col):
                self.layout.setdefault("annotations", []).append(dict(
                    text=annotation_text, showarrow=False, x=1 if side == "right" else 0, xanchor=side,
                    xref=f"{_name('x', x)} domain", y=y, yref=_name("y", yn),
                    yanchor="bottom" if vertical == "top" else "top"))
        return self

    def add_vline(self, x: float, row: int | None = None, col: int | None = None, **line) -> Canvas:
        """A vertical line through the plot (y domain 0..1) at x."""
        return self.add_shape(row, col, type="line", x0=x, x1=x, xref="x", y0=0, y1=1, yref="y domain", **line)

    def add_vrect(self, x0: float, x1: float, row: int | None = None, col: int | None = None, **shape) -> Canvas:
        """A band from x0 to x1 through the plot's height."""
        return self.add_shape(row, col, type="rect", x0=x0, x1=x1, xref="x", y0=0, y1=1, yref="y domain", **shape)

    def figure(self) -> go.Figure:
        """The validated Plotly figure (built once)."""
        return go.Figure(data=self.data, layout=self.layout)


def _domain(lo: float, hi: float) -> list[float]:
    """[lo, hi] inside [0, 1]: sums of shares land a rounding error outside it (-5.6e-17), which Plotly refuses."""
    return [min(1.0, max(0.0, lo)), min(1.0, max(0.0, hi))]


SUBPLOT_TITLE = "subplot title"  # the name subplots() gives its titles' annotations (fit_titles finds them by it)


def subplots(rows: int = 1, cols: int = 1, *, row_heights: list[float] | None = None,
             column_widths: list[float] | None = None, vertical_spacing: float | None = None,
             horizontal_spacing: float | None = None, specs: list[list[dict | None]] | None = None,
             subplot_titles: list[str] | tuple[str, ...] = (), shared_xaxes: bool = False) -> Canvas:
    """A Canvas with make_subplots' grid: rows from the top, cells of `specs` ({} / {"colspan": n} /
    {"secondary_y": True} / None for a cell another one spans), axes numbered as make_subplots numbers them, subplot
    titles as annotations named SUBPLOT_TITLE (in SUBPLOT_TITLE_SIZE: give the canvas fit_titles() once it is laid
    out); shared_xaxes: every column's x axes match its bottom one, whose tick labels alone are shown."""
    specs = specs or [[{} for _ in range(cols)] for _ in range(rows)]
    secondary = any(s and s.get("secondary_y") for line in specs for s in line)
    hs = horizontal_spacing if horizontal_spacing is not None else (0.4 if secondary else 0.2) / cols
    vs = vertical_spacing if vertical_spacing is not None else (0.5 if subplot_titles else 0.3) / rows
    width = SECONDARY_Y_WIDTH if secondary else 1.0
    cw = column_widths or [1] * cols
    rh = row_heights or [1] * rows
    widths = [(width - hs * (cols - 1)) * w / sum(cw) for w in cw]
    heights = [(1 - vs * (rows - 1)) * h / sum(rh) for h in rh]
    canvas = Canvas()
    canvas.cells, x_n, y_n, titles = {}, 0, 0, iter(subplot_titles)
    for r, line in enumerate(specs, start=1):
        top = 1 - sum(heights[:r - 1]) - vs * (r - 1)
        for c, spec in enumerate(line, start=1):
            if spec is None:
                continue
            span = spec.get("colspan", 1)
            left = sum(widths[:c - 1]) + hs * (c - 1)
            right = sum(widths[:c - 1 + span]) + hs * (c - 1 + span - 1)
            x_n, y_n = x_n + 1, y_n + 1
            y2 = y_n + 1 if spec.get("secondary_y") else None
            canvas.layout[f"xaxis{x_n if x_n > 1 else ''}"] = dict(anchor=_name("y", y_n),
                                                                    domain=_domain(left, right))
            canvas.layout[f"yaxis{y_n if y_n > 1 else ''}"] = dict(anchor=_name("x", x_n),
                                                                    domain=_domain(top - heights[r - 1], top))
            if y2 is not None:
                canvas.layout[f"yaxis{y2}"] = dict(anchor=_name("x", x_n), overlaying=_name("y", y_n), side="right")
                y_n = y2
            canvas.cells[(r, c)] = (x_n, y_n - (y2 is not None), y2)
            title = next(titles, "")
            if title:
                canvas.layout.setdefault("annotations", []).append(dict(
                    name=SUBPLOT_TITLE, text=title, font=dict(size=SUBPLOT_TITLE_SIZE), showarrow=False,
                    x=(left + right) / 2, xanchor="center", xref="paper", y=top, yanchor="bottom", yref="paper"))
    if shared_xaxes:
        for c in range(1, cols + 1):
            column = [canvas.cells[(r, c)][0] for r in range(1, rows + 1) if (r, c) in canvas.cells]
            for x in column[:-1]:
                canvas.layout[f"xaxis{x if x > 1 else ''}"].update(matches=_name("x", column[-1]),
                                                                     showticklabels=False)
    return canvas


def fit_titles(fig: Canvas, width: int = APP_WIDTH) -> Canvas:
    """Titles that fit: the figure's title and each subplot title wrapped (<br>) to the width they have when the
    figure is `width` px wide, and a top margin that holds the figure's title (pinned to the top) above the first
    row's subplot titles. Call it once the layout (margins, title) is set."""
    layout = fig.layout
    margin = layout.get("margin", {})
    plot_px = width - margin.get("l", 0) - margin.get("r", 0)
    title = layout.setdefault("title", {})
    if title.get("text"):
        units = int((width - 20) / (GLYPH_EM * TITLE_SIZE))
        title["text"] = "<br>".join(wrap(title["text"].replace("<br>", " "), units))
    title_lines = (title.get("text") or "").count("<br>") + 1
    centres = [(sum(axis["domain"]) / 2, axis["domain"][1] - axis["domain"][0]) for key, axis in layout.items()
               if key.startswith("xaxis") and "domain" in axis]
    titles = [a for a in layout.get("annotations", []) if a.get("name") == SUBPLOT_TITLE]
    for a in titles:
        column_px = plot_px * max(w for x, w in centres if abs(x - a["x"]) < 1e-6)
        a["text"] = "<br>".join(wrap(a["text"].replace("<br>", " "), int(column_px / (GLYPH_EM * SUBPLOT_TITLE_SIZE))))
    lines = 0
    if titles:
        top = max(a["y"] for a in titles)
        lines = max(a["text"].count("<br>") + 1 for a in titles if a["y"] == top)
    pad = TITLE_PAD + (math.ceil(TITLE_LIFT_EM * TITLE_SIZE) if title_lines > 1 else 0)  # what Plotly lifts back
    needed = pad + LINE_EM * (title_lines * TITLE_SIZE + lines * SUBPLOT_TITLE_SIZE) + 8
    margin = layout.setdefault("margin", {})
    margin["t"] = max(margin.get("t", 0), math.ceil(needed))
    title.update(y=1, yref="container", yanchor="top", pad=dict(t=pad))
    return fig
