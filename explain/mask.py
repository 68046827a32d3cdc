"""View 3 — the causal mask in its three regimes, drawn from the model's own gpt.model.causal_mask_for."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from explain.common import ViewResult, base_layout, hover, position_axis, subplots
from explain.text import t
from gpt.model import causal_mask_for


def mask_regimes(T: int, chunk: int | None = None) -> list[tuple[str, int, int]]:
    """(regime, Tq, Tk) for a sequence of T tokens: no cache; one query over the cache; a chunk after a prefix."""
    chunk = max(1, min(chunk or max(1, T // 3), T - 1)) if T > 1 else 1
    return [("no_cache", T, T), ("one_query", 1, T), ("chunk", chunk, T)]


def mask_view(labels: list[str], chunk: int | None = None, window: int = 24, lang: str = "en") -> ViewResult:
    """The masks (True = may attend) for the prompt's tokens in the three regimes of the model's attention.

    Keys are the whole prompt; the queries are all tokens (no cache), the last token (decoding with a cache), or the
    last `chunk` tokens (a chunk after a cached prefix). Only the last `window` positions are drawn and tabulated
    (every earlier key is visible to every drawn query, whatever the regime).
    """
    T = len(labels)
    if T < 1:
        raise ValueError("need at least one token")
    lo = max(0, T - window)
    regimes = mask_regimes(T, chunk)
    names = [t(f"view.mask.{r}", lang, Tq=Tq, Tk=Tk) for r, Tq, Tk in regimes]
    fig = subplots(rows=1, cols=3, subplot_titles=names, horizontal_spacing=0.06,
                   column_widths=[0.45, 0.2, 0.35])
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
        fig.update_xaxes(position_axis(list(kp), labels, max_ticks=window), row=1, col=col)
        fig.update_yaxes(dict(position_axis(list(qp), labels, max_ticks=window, angle=0), autorange="reversed"),
                         row=1, col=col)
        qq, kk = np.meshgrid(qp, kp, indexing="ij")
        rows.append(pd.DataFrame({"regime": regime, "Tq": Tq, "Tk": Tk, "query_pos": qq.ravel(),
                                  "key_pos": kk.ravel(), "allowed": sub.ravel(),
                                  "sdpa_call": t(f"view.mask.{regime}_call", "en")}))
    df = pd.concat(rows, ignore_index=True)
    df["query_token"] = [labels[p] for p in df["query_pos"]]
    df["key_token"] = [labels[p] for p in df["key_pos"]]
    title = t("view.mask.title", lang, T=T) + (t("view.mask.windowed", lang, lo=lo, hi=T - 1) if lo > 0 else "")
    fig.update_layout(base_layout(title, height=480, margin=dict(l=80, r=20, t=80, b=90)))
    text = t("view.mask.body", lang, T=T, chunk=regimes[2][1], prefix=T - regimes[2][1])
    return ViewResult("mask", title, df, fig, text)
