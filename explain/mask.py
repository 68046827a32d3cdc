"""View 3 — the causal mask in its three regimes, drawn from the model's own gpt.nanochat.causal_mask_for.

With per-layer sliding windows (nanochat 2026: `windows`, one per layer, and the context they are measured against),
the S layers' mask over the whole prompt is drawn too when the prompt is longer than their window: the band, where a
query sees at most window + 1 keys."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from explain.canvas import fit_titles, subplots
from explain.common import (APP_WIDTH, GLYPH_EM, TICK_FONT_PX, ViewResult, axis_px, base_layout, bytes_note, fit_label,
                            hover, position_axis, text_units, window_kind)
from text import t
from gpt.nanochat import causal_mask_for


MARGIN = dict(l=80, r=20, t=80, b=90)
COLUMNS = [0.45, 0.2, 0.35]  # widths of the no-cache, decode and chunk panels
LABEL_UNITS = 8  # a tick label, at most (text_units; the table keeps every token whole)
TICK_ROOM_PX = 12  # a y tick and the gap between it and its label


def mask_regimes(T: int, chunk: int | None = None) -> list[tuple[str, int, int]]:
    """(regime, Tq, Tk) for a sequence of T tokens: no cache; one query over the cache; a chunk after a prefix."""
    chunk = max(1, min(chunk or max(1, T // 3), T - 1)) if T > 1 else 1
    return [("no_cache", T, T), ("one_query", 1, T), ("chunk", chunk, T)]


def band_positions(T: int, cells: int) -> np.ndarray:
    """At most about `cells` positions of 0..T-1, evenly spaced, the last one included (the band panel's grid)."""
    step = max(1, -(-T // cells))
    return np.unique(np.append(np.arange(0, T, step), T - 1))


def mask_view(labels: list[str], chunk: int | None = None, window: int = 24, lang: str = "en", *,
              windows: list[int | None] | None = None, context: int | None = None,
              band_cells: int = 96) -> ViewResult:
    """The masks (True = may attend) for the prompt's tokens in the three regimes of the model's attention.

    Keys are the whole prompt; the queries are all tokens (no cache), the last token (decoding with a cache), or the
    last `chunk` tokens (a chunk after a cached prefix). Only the last `window` positions are drawn and tabulated
    (every earlier key is visible to every drawn query, whatever the regime).

    windows: each layer's sliding window (keys back besides the query's own; None = no window, a version before fbc1484), with
    `context` (the model's sequence_len) telling S layers (window < context) from L layers. When an S window is
    shorter than the prompt reaches back (window < T - 1), a fourth panel draws the S layers' mask (no cache) over
    the whole prompt, on a grid of at most about `band_cells` positions per side (regime "window" in the table).
    """
    T = len(labels)
    if T < 1:
        raise ValueError("need at least one token")
    lo = max(0, T - window)
    regimes = mask_regimes(T, chunk)
    names = [t(f"view.mask.{r}", lang, Tq=Tq, Tk=Tk) for r, Tq, Tk in regimes]
    windows = list(windows or [])
    if any(w is not None for w in windows) and context is None:
        raise ValueError("windows need the context they are measured against (the model's sequence_len)")
    s_layers = [i for i, w in enumerate(windows) if window_kind(w, context or 0) == "S"]
    l_layers = [i for i, w in enumerate(windows) if window_kind(w, context or 0) == "L"]
    short = min((windows[i] for i in s_layers), default=None)  # the S window (nanochat has one size)
    band = short is not None and short < T - 1
    shown = [fit_label(label, LABEL_UNITS) for label in labels]
    queries = [q[q >= lo] for q in (np.arange(Tk - Tq, Tk) for _, Tq, Tk in regimes)]  # the rows of each panel
    plot_px = axis_px(APP_WIDTH, MARGIN["l"], MARGIN["r"])
    # the gaps between the panels hold the decode and chunk panels' query labels (level, left of their panel)
    gap_units = max(text_units(shown[p]) for q in queries[1:] for p in q)
    spacing = max(0.06, (gap_units * GLYPH_EM * TICK_FONT_PX + TICK_ROOM_PX) / plot_px)
    height = 940 if band else 480
    if band:
        grid = band_positions(T, band_cells)
        step = int(grid[1] - grid[0]) if len(grid) > 1 else 1
        band_title = t("view.mask.window", lang, w=short, layers=", ".join(
            str(i) for i in s_layers if windows[i] == short)) + (t("view.mask.window_step", lang, step=step)
                                                                  if step > 1 else "")
        row_heights, vertical_spacing = [0.42, 0.58], 0.16
        fig = subplots(rows=2, cols=3, subplot_titles=[*names, band_title], horizontal_spacing=spacing,
                       vertical_spacing=vertical_spacing, column_widths=COLUMNS, row_heights=row_heights,
                       specs=[[{}, {}, {}], [{"colspan": 3}, None, None]])
    else:
        row_heights, vertical_spacing = [1.0], 0.0
        fig = subplots(rows=1, cols=3, subplot_titles=names, horizontal_spacing=spacing, column_widths=COLUMNS)
    title = t("view.mask.title", lang, T=T) + (t("view.mask.windowed", lang, lo=lo, hi=T - 1) if lo > 0 else "")
    fig.update_layout(base_layout(title, height=height, margin=dict(MARGIN)))
    fit_titles(fig)  # sets the top margin: the panels' heights below are measured with it
    plot_h = axis_px(height, fig.layout["margin"]["t"], MARGIN["b"]) * (1 - vertical_spacing)
    columns_px = [plot_px * (1 - 2 * spacing) * w / sum(COLUMNS) for w in COLUMNS]
    rows = []
    for col, (regime, Tq, Tk) in enumerate(regimes, start=1):
        mask = causal_mask_for(Tq, Tk).numpy()  # the model's own mask
        q_pos = np.arange(Tk - Tq, Tk)  # the new queries are the last Tq positions
        keep = q_pos >= lo
        sub = mask[keep][:, lo:]
        qp, kp = q_pos[keep], np.arange(lo, Tk)
        fig.add_trace(go.Heatmap(z=sub.astype(np.int8), x=kp, y=qp, zmin=0, zmax=1, showscale=False,
                                 colorscale=[[0, "#f1f3f4"], [1, "#1a73e8"]], xgap=1, ygap=1,
                                 hovertemplate=hover("plot.query_key_hover", lang)), row=1, col=col)
        # no more tick labels than the panel holds at the narrowest width (the decode panel is a fifth of it)
        fig.update_xaxes(position_axis(list(kp), shown, max_ticks=window, axis_px=columns_px[col - 1]),
                         row=1, col=col)
        fig.update_yaxes(dict(position_axis(list(qp), shown, max_ticks=window, angle=0,
                                            axis_px=plot_h * row_heights[0]),
                              autorange="reversed"), row=1, col=col)
        qq, kk = np.meshgrid(qp, kp, indexing="ij")
        rows.append(pd.DataFrame({"regime": regime, "Tq": Tq, "Tk": Tk, "query_pos": qq.ravel(),
                                  "key_pos": kk.ravel(), "allowed": sub.ravel(),
                                  "sdpa_call": t(f"view.mask.{regime}_call", "en")}))
    if band:
        sub = causal_mask_for(T, T, window=short).numpy()[np.ix_(grid, grid)]  # the model's own mask, S layers
        fig.add_trace(go.Heatmap(z=sub.astype(np.int8), x=grid, y=grid, zmin=0, zmax=1, showscale=False,
                                 colorscale=[[0, "#f1f3f4"], [1, "#1a73e8"]],
                                 hovertemplate=hover("plot.query_key_hover", lang)), row=2, col=1)
        fig.update_xaxes(position_axis(list(grid), shown, max_ticks=48, axis_px=plot_px), row=2, col=1)
        fig.update_yaxes(dict(position_axis(list(grid), shown, max_ticks=24, angle=0,
                                            axis_px=plot_h * row_heights[1]), autorange="reversed"), row=2, col=1)
        qq, kk = np.meshgrid(grid, grid, indexing="ij")
        rows.append(pd.DataFrame({"regime": "window", "Tq": T, "Tk": T, "query_pos": qq.ravel(), "key_pos": kk.ravel(),
                                  "allowed": sub.ravel(), "sdpa_call": t("view.mask.window_call", "en", w=short)}))
    df = pd.concat(rows, ignore_index=True)
    df["query_token"] = [labels[p] for p in df["query_pos"]]
    df["key_token"] = [labels[p] for p in df["key_pos"]]
    text = t("view.mask.body", lang, T=T, chunk=regimes[2][1], prefix=T - regimes[2][1])
    if windows and any(w is not None for w in windows):
        said = dict(s_layers=", ".join(map(str, s_layers)) or "-", l_layers=", ".join(map(str, l_layers)) or "-",
                    context=context, T=T)
        if short is None:
            text += t("view.mask.body_all_l", lang, **said)
        else:
            text += t("view.mask.body_band" if band else "view.mask.body_fits", lang, w=short, n=short + 1,
                      **said)
    fig = fig.figure()
    return ViewResult("mask", title, df, fig, text + bytes_note(df, fig, lang))
