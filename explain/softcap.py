"""View 5 — the logit softcap: softcap·tanh(x/softcap) and what it does to one position's logits.

The raw and capped logits are the recorded `logits_raw` and `logits` (the model's own); the curve drawn behind them
is the reference function with the model's own softcap (15, or 20 for two nanochat commits of March 2026), so the recorded points visibly lie on it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from explain.canvas import fit_titles, subplots
from explain.common import ViewResult, base_layout, bytes_note, np32, resolve_position
from text import t
from explain.trace import Trace, token_labels


def softcap_view(trace: Trace, position: int = -1, row: int = 0, top: int = 12, n_points: int = 200,
                 lang: str = "en") -> ViewResult:
    """Curve with this position's logits on it, raw vs capped histograms, and top-token probabilities with/without
    the cap. Only ~n_points logits, two histograms and the top tokens leave the device."""
    softcap = trace.model.softcap
    p = resolve_position(position, trace.T)
    raw = trace.rec["logits_raw"][row, p].float()
    cap = trace.rec["logits"][row, p].float()
    V = raw.numel()
    # Points on the curve: evenly spaced ranks of the sorted raw logits plus the very top (where the cap bites).
    order = raw.argsort(descending=True)
    picks = torch.unique(torch.cat([order[:top], order[torch.linspace(0, V - 1, min(n_points, V),
                                                                      device=raw.device).long()]]))
    pts_raw, pts_cap = np32(raw[picks], 3), np32(cap[picks], 3)
    # Histograms over a common range.
    lo, hi = float(raw.min()), float(raw.max())
    lo, hi = (lo - 1, hi + 1) if hi - lo < 1e-6 else (lo, hi)
    bins = 60
    edges = np.linspace(lo, hi, bins + 1, dtype=np.float32)
    h_raw = torch.histc(raw, bins=bins, min=lo, max=hi).cpu().numpy()
    h_cap = torch.histc(cap, bins=bins, min=lo, max=hi).cpu().numpy()
    # Probabilities with and without the cap, for the union of both top lists.
    p_raw, p_cap = raw.softmax(-1), cap.softmax(-1)
    ids = torch.unique(torch.cat([p_raw.topk(top).indices, p_cap.topk(top).indices]))
    ids = ids[p_cap[ids].argsort(descending=True)]
    tv = float((p_raw - p_cap).abs().sum() / 2)  # total variation distance between the two distributions
    beyond = int((raw.abs() > softcap).sum())
    id_list = ids.tolist()
    df = pd.DataFrame({"token_id": id_list, "token": token_labels(trace.tokenizer, id_list),
                       "raw_logit": np32(raw[ids], 4), "capped_logit": np32(cap[ids], 4),
                       "p_without_cap": np32(p_raw[ids], 6), "p_with_cap": np32(p_cap[ids], 6)})
    df["change"] = (df["p_with_cap"] - df["p_without_cap"]).astype(np.float32)

    label = trace.labels[row][p]
    title = t("view.softcap.title", lang, pos=p, token=label, cap=softcap)
    fig = subplots(rows=1, cols=3, column_widths=[0.34, 0.33, 0.33], horizontal_spacing=0.07,
                   subplot_titles=[t("view.softcap.curve", lang), t("view.softcap.hist", lang),
                                   t("view.softcap.probs", lang, n=len(id_list))])
    span = max(2.5 * softcap, 1.1 * float(raw.abs().max()))
    x = np.linspace(-span, span, 121, dtype=np.float32)
    fig.add_trace(go.Scatter(x=x, y=x, name="y = x", line=dict(color="#9aa0a6", dash="dash")), row=1, col=1)
    fig.add_trace(go.Scatter(x=x, y=(softcap * np.tanh(x / softcap)).astype(np.float32), line=dict(color="#1a73e8"),
                             name=f"{softcap:g}·tanh(x/{softcap:g})"), row=1, col=1)
    fig.add_trace(go.Scatter(x=pts_raw, y=pts_cap, mode="markers", name=t("view.softcap.points", lang),
                             marker=dict(size=5, color="#d93025")), row=1, col=1)
    centers = ((edges[:-1] + edges[1:]) / 2).astype(np.float32)
    for counts, key, color in ((h_raw, "raw", "#fbbc04"), (h_cap, "capped", "#1a73e8")):
        fig.add_trace(go.Scatter(x=centers, y=counts.astype(np.float32), name=t(f"view.softcap.{key}", lang),
                                 line=dict(color=color, shape="hvh"), fill="tozeroy"), row=1, col=2)
    ranks = np.arange(len(id_list))
    for column, key, color in (("p_without_cap", "p_raw", "#fbbc04"), ("p_with_cap", "p_cap", "#1a73e8")):
        fig.add_trace(go.Bar(x=ranks, y=df[column].to_numpy(), name=t(f"view.softcap.{key}", lang), marker_color=color),
                      row=1, col=3)
    fig.update_xaxes(title_text=t("view.softcap.raw_axis", lang), row=1, col=1)
    fig.update_yaxes(title_text=t("view.softcap.capped_axis", lang), row=1, col=1)
    fig.update_xaxes(title_text="logit", row=1, col=2)
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_xaxes(tickmode="array", tickvals=ranks, ticktext=list(df["token"]), tickangle=-60, row=1, col=3)
    fig.update_layout(base_layout(title, height=460, barmode="group", legend=dict(orientation="h", y=-0.35)))
    fig = fit_titles(fig).figure()
    text = t("view.softcap.body", lang, cap=softcap, pos=p, token=label, max_raw=float(raw.abs().max()),
             beyond=beyond, V=V, tv=tv)
    return ViewResult("softcap", title, df, fig, text + bytes_note(df, fig, lang))
