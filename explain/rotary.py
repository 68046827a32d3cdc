"""View 2 — rotary: the model's cos/sin tables and the slice [T0:T0+T] that one forward call uses."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from explain.canvas import fit_titles, subplots
from explain.common import ViewResult, base_layout, hover, np32
from text import t
from gpt.nanochat import GPT


def rotary_view(model: GPT, T: int, T0: int = 0, max_rows: int = 96, lang: str = "en") -> ViewResult:
    """cos and sin (positions x channel pairs) around the slice [T0, T0+T); the slice is outlined.

    Shows positions 0 .. T0+T+4 when that fits in `max_rows`, else the last `max_rows` positions up to the end of the
    slice (the title says so). The numbers are the model's own tables (model.cos / model.sin, with the model's base and
    precision: bf16-rounded before 1076f97, base 100000 from 6ed7d1d; the text says which).
    """
    n_pos = model.cos.size(1)
    if T < 1 or T0 < 0 or T0 + T > n_pos:
        raise ValueError(f"need 1 <= T and 0 <= T0 with T0 + T <= {n_pos} (the rotary table length)")
    hi = min(n_pos, T0 + T + 4)
    lo = max(0, hi - max_rows)
    cos = np32(model.cos[0, lo:hi, 0], 4)  # [rows, hd/2]
    sin = np32(model.sin[0, lo:hi, 0], 4)
    pos = np.arange(lo, hi)
    pairs = np.arange(cos.shape[1])
    in_slice = (pos >= T0) & (pos < T0 + T)
    df = pd.DataFrame({"position": np.repeat(pos, len(pairs)), "pair": np.tile(pairs, len(pos)),
                       "cos": cos.ravel(), "sin": sin.ravel(), "in_slice": np.repeat(in_slice, len(pairs))})

    windowed = lo > 0 or hi < T0 + T
    title = t("view.rotary.title", lang, T0=T0, T1=T0 + T, lo=lo, hi=hi - 1) + (
        t("view.rotary.windowed", lang, lo=lo, hi=hi - 1) if windowed else "")
    fig = subplots(rows=1, cols=2, subplot_titles=("cos", "sin"), horizontal_spacing=0.08)
    for col, z in ((1, cos), (2, sin)):
        fig.add_trace(go.Heatmap(z=z, x=pairs, y=pos, zmin=-1, zmax=1, colorscale="RdBu", showscale=col == 2,
                                 hovertemplate=hover("view.rotary.hover", lang)), row=1, col=col)
        fig.add_shape(type="rect", x0=-0.5, x1=len(pairs) - 0.5, y0=max(T0, lo) - 0.5, y1=T0 + T - 0.5,
                      line=dict(color="black", width=3), row=1, col=col)
    fig.update_yaxes(title_text=t("view.rotary.position", lang), autorange="reversed", row=1, col=1)
    fig.update_yaxes(autorange="reversed", row=1, col=2)
    fig.update_xaxes(title_text=t("view.rotary.pair", lang))
    fig.update_layout(base_layout(title, height=520))
    fit_titles(fig)
    text = t("view.rotary.body", lang, T0=T0, T=T, T1=T0 + T, n_pos=n_pos, half=len(pairs))
    f = model.features
    text += t("view.rotary.note_base", lang, base=f"{f.rotary_base:g}")
    text += t("view.rotary.note_base_raised", lang) if f.rotary_base != 10000 else ""
    text += t("view.rotary.note_bf16", lang) if f.rotary_bf16 else ""
    fig = fig.figure()
    return ViewResult("rotary", title, df, fig, text)
