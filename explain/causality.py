"""View 8 — the causality proof: change token j and watch which positions change. Before j: exactly nothing."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from explain.canvas import fit_titles, subplots
from explain.common import ViewResult, base_layout, bytes_note, constant_logits, hover, position_axis, window
from text import t
from explain.trace import Trace, token_labels
from gpt.recorder import Recorder, residual_points


@torch.inference_mode()
def causality_diffs(trace: Trace, j: int, new_token: int, row: int = 0) -> tuple[list[str], np.ndarray]:
    """Run forward again with token j replaced; max |change| per position of the residual stream at every stage and
    of the logits: (stage names, [stages, T] float64 array). Only these scalars leave the device.

    Both runs are batch-1 forwards of the same shape: a matrix product may round differently at another batch size,
    and the proof must compare like with like.
    """
    stages = [*residual_points(trace.config.n_layer), "logits"]
    base = trace.rec
    if trace.B > 1:
        base = Recorder(names=set(stages))
        trace.model(trace.idx[row:row + 1], recorder=base)
    idx = trace.idx[row:row + 1].clone()
    idx[0, j] = new_token
    rec = Recorder(names=set(stages))
    trace.model(idx, recorder=rec)
    b = 0 if trace.B > 1 else row
    diffs = torch.stack([(rec[s][0].float() - base[s][b].float()).abs().amax(-1) for s in stages])
    return stages, diffs.double().cpu().numpy()


def causality_view(trace: Trace, j: int | None = None, new_token: int | None = None, row: int = 0,
                   window_size: int = 64, lang: str = "en") -> ViewResult:
    """Heatmap (stage x position) of how much changing token j moves each position, and the logits row as bars."""
    T, V = trace.T, trace.config.vocab_size
    j = T // 2 if j is None else j
    if not 0 <= j < T:
        raise ValueError(f"j must be in 0..{T - 1}")
    old = trace.ids(row)[j]
    new_token = (old + 1) % V if new_token is None else new_token
    if not 0 <= new_token < V:
        raise ValueError(f"new_token must be in 0..{V - 1}")
    stages, d = causality_diffs(trace, j, new_token, row)
    before = d[:, :j]
    leak = float(before.max()) if j > 0 else 0.0
    labels = trace.labels[row]
    new_label = token_labels(trace.tokenizer, [new_token])[0]
    stage_names = ["embed"] + [f"block {i}" for i in range(trace.config.n_layer)] + ["logits"]
    df = pd.DataFrame({"stage": np.repeat(stage_names, T), "position": np.tile(np.arange(T), len(stages)),
                       "max_abs_change": d.ravel().astype(np.float32)})
    df["token"] = [labels[p] for p in df["position"]]
    df["before_j"] = df["position"] < j

    lo, hi = window(T, min(T - 1, j + window_size // 2), window_size)
    title = t("view.causality.title", lang, j=j, old=labels[j], new=new_label, leak=leak)
    if lo > 0 or hi < T:
        title += t("view.causality.windowed", lang, lo=lo, hi=hi - 1, T=T)
    fig = subplots(rows=2, cols=1, row_heights=[0.62, 0.38], vertical_spacing=0.14, shared_xaxes=True,
                   subplot_titles=[t("view.causality.heat", lang), t("view.causality.bars", lang)])
    sub = d[:, lo:hi]
    with np.errstate(divide="ignore"):
        z = np.where(sub > 0, np.log10(np.where(sub > 0, sub, 1)), np.nan).astype(np.float32)  # exact 0 -> blank
    x = np.arange(lo, hi)
    fig.add_trace(go.Heatmap(z=z, x=x, y=stage_names, colorscale="Reds", customdata=sub.astype(np.float32),
                             colorbar=dict(title=t("view.causality.colorbar", lang), len=0.6, y=0.75),
                             hovertemplate=hover("view.causality.hover_heat", lang)), row=1, col=1)
    bars = d[-1, lo:hi].astype(np.float32)
    fig.add_trace(go.Bar(x=x, y=bars, marker_color=np.where(x < j, "#188038", "#d93025"),
                         text=np.where(bars == 0, "0", ""), textposition="outside", showlegend=False,
                         hovertemplate=hover("view.causality.hover_bars", lang)), row=2, col=1)
    fig.add_vline(x=j - 0.5, line=dict(color="black", dash="dash"))
    fig.update_xaxes(position_axis(list(x), labels, max_ticks=window_size), row=2, col=1)
    fig.update_yaxes(autorange="reversed", row=1, col=1)
    fig.update_yaxes(title_text=t("plot.max_dlogit", lang), row=2, col=1)
    fig.update_layout(base_layout(title, height=620, margin=dict(l=80, r=20, t=70, b=90)))
    fit_titles(fig)
    text = t("view.causality.body", lang, j=j, old=labels[j], new=new_label, leak=leak,
             after=float(d[-1, j:].max()), n_before=j)
    if constant_logits(trace.logits):  # no position moves on such a model, whatever the mask: not shown as proof
        title = t("plot.vacuous_title", lang)
        fig.update_layout(title_text=title)
        text = t("plot.vacuous", lang) + "\n\n" + text
    fig = fig.figure()
    return ViewResult("causality", title, df, fig, text + bytes_note(df, fig, lang))
