"""Two models, one text: where their next-token distributions differ. For every position, each model's top-1 and the
KL divergence KL(p_a ‖ p_b) of the distributions after the softcap (natural log: how many nats p_b loses, on
average, describing what p_a predicts). Both models must share a vocabulary (the same ids mean the same tokens);
each runs its own forward, nothing is recomputed.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from explain.canvas import fit_titles, subplots
from explain.common import (APP_WIDTH, ViewResult, axis_px, base_layout, bytes_note, hover, position_axis,
                            resolve_position)
from explain.trace import Trace, next_labels, trace_forward
from gpt.nanochat import GPT
from text import t

MARGIN = dict(l=70, r=20, t=80, b=90)


def check_pair(model_a: GPT, model_b: GPT) -> None:
    """ValueError unless the two models can read the same ids (one vocabulary)."""
    va, vb = model_a.config.vocab_size, model_b.config.vocab_size
    if va != vb:
        raise ValueError(f"the two models have different vocabularies ({va} and {vb} tokens): the same id would not "
                         f"mean the same token, so their predictions cannot be compared")


@torch.inference_mode()
def compare_traces(trace_a: Trace, trace_b: Trace, row: int = 0) -> pd.DataFrame:
    """compare_models() of two traces of the same ids."""
    check_pair(trace_a.model, trace_b.model)
    if not torch.equal(trace_a.idx.cpu(), trace_b.idx.cpu()):
        raise ValueError("the two traces read different token ids")
    la = trace_a.logits[row].float().log_softmax(-1)
    lb = trace_b.logits[row].float().to(la.device).log_softmax(-1)
    kl = (la.exp() * (la - lb)).sum(-1)
    top_a, top_b = la.argmax(-1), lb.argmax(-1)
    return pd.DataFrame({"position": np.arange(trace_a.T), "top1_a": top_a.cpu().numpy(),
                         "top1_b": top_b.cpu().numpy(), "kl": kl.clamp_min(0).cpu().numpy().astype(float),
                         "agree": (top_a == top_b).cpu().numpy()})


def compare_models(model_a: GPT, model_b: GPT, ids) -> pd.DataFrame:
    """One row per position of `ids` (one row of token ids): position, top1_a, top1_b, kl = KL(p_a ‖ p_b) of the
    next-token distributions after the softcap (natural log), agree (the same top-1). ValueError for models with
    different vocabularies."""
    check_pair(model_a, model_b)
    ids = [list(ids)]
    return compare_traces(trace_forward(model_a, ids), trace_forward(model_b, ids), 0)


@torch.inference_mode()
def compare_view(trace_a: Trace, trace_b: Trace, name_a: str, name_b: str, position: int = -1, row: int = 0,
                 k: int = 10, lang: str = "en") -> ViewResult:
    """KL per position (disagreements marked), and both models' top-k next tokens at `position`."""
    df = compare_traces(trace_a, trace_b, row)
    T, p = trace_a.T, resolve_position(position, trace_a.T)
    labels, ids = trace_a.labels[row], trace_a.ids(row)
    tops = {}
    for key, trace in (("a", trace_a), ("b", trace_b)):
        probs = trace.logits[row, p].float().softmax(-1)
        top = probs.topk(min(k, probs.numel()))
        tops[key] = (next_labels(trace_a.tokenizer, ids[: p + 1], top.indices.tolist()), top.values.cpu().numpy())
    df["token_a"] = [next_labels(trace_a.tokenizer, ids[: i + 1], [a])[0] for i, a in enumerate(df["top1_a"])]
    df["token_b"] = [next_labels(trace_a.tokenizer, ids[: i + 1], [b])[0] for i, b in enumerate(df["top1_b"])]
    title = t("view.compare.title", lang, a=name_a, b=name_b, T=T)
    fig = subplots(rows=2, cols=2, specs=[[{"colspan": 2}, None], [{}, {}]], vertical_spacing=0.3,
                   subplot_titles=[t("view.compare.kl", lang), t("view.compare.top", lang, name=name_a, pos=p),
                                   t("view.compare.top", lang, name=name_b, pos=p)])
    fig.add_trace(go.Scatter(x=df["position"], y=df["kl"], mode="lines+markers", name="KL",
                             marker=dict(color=np.where(df["agree"], "#1a73e8", "#d93025")),
                             hovertemplate=hover("view.compare.hover_kl", lang)), row=1, col=1)
    for col, key, color in ((1, "a", "#1a73e8"), (2, "b", "#d93025")):
        names, values = tops[key]
        fig.add_trace(go.Bar(x=values, y=names, orientation="h", marker_color=color, showlegend=False,
                             hovertemplate=hover("view.compare.hover_p", lang)), row=2, col=col)
        fig.update_yaxes(autorange="reversed", row=2, col=col)
    fig.update_xaxes(position_axis(df["position"].tolist(), labels, axis_px=axis_px(APP_WIDTH, MARGIN["l"],
                                                                                   MARGIN["r"])), row=1, col=1)
    fig.update_yaxes(title_text=t("view.compare.kl_axis", lang), row=1, col=1)
    fig.update_layout(base_layout(title, height=620, margin=dict(MARGIN), showlegend=False))
    fit_titles(fig)
    text = t("view.compare.body", lang, a=name_a, b=name_b, T=T, agree=float(df["agree"].mean()),
             mean=float(df["kl"].mean()), worst=labels[int(df["kl"].idxmax())], kl_max=float(df["kl"].max()),
             pos=p)
    fig = fig.figure()
    return ViewResult("compare", title, df, fig, text + bytes_note(df, fig, lang))
