"""View 4 — attention weights per layer and head, from the recorded q and k (after rotary and QK norm).

The weights are the one derived quantity explain/ computes itself: softmax(q·kᵀ/√hd + mask), with the model's own
causal_mask_for (and, in a model with windows, the layer's own sliding window: an S layer hides the keys further back than its
window). scaled_dot_product_attention never materialises them; a test checks weights·v == recorded attn.y.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from explain.canvas import Canvas, fit_titles
from explain.common import (APP_WIDTH, COLORBAR_PX, ViewResult, axis_px, base_layout, bytes_note, fit_label, hover,
                            np32, position_axis, resolve_position, window, window_kind)
from text import t
from explain.trace import Trace
from gpt.nanochat import causal_mask_for


HEIGHT = 560  # px
MARGIN = dict(l=90, r=20, t=60, b=130)  # the bottom holds the summed column's label, turned by 60°
LABEL_UNITS = 10  # a tick label, at most (text_units; the table keeps every token whole)


def attention_mask(trace: Trace, layer: int) -> torch.Tensor:
    """[Tq, Tk] bool (True = may attend) of block `layer`: the model's causal_mask_for with the layer's own window."""
    if not 0 <= layer < trace.config.n_layer:
        raise ValueError(f"layer must be in 0..{trace.config.n_layer - 1}")
    Tq, Tk = trace.rec[f"blocks.{layer}.attn.q"].size(2), trace.rec[f"blocks.{layer}.attn.k"].size(2)
    return causal_mask_for(Tq, Tk, device=trace.device, window=trace.model.window_sizes[layer])


def attention_weights(trace: Trace, layer: int) -> torch.Tensor:
    """[B, H, Tq, Tk] float32 attention weights of block `layer`, on the device (exactly 0 where the mask hides)."""
    mask = attention_mask(trace, layer)
    q = trace.rec[f"blocks.{layer}.attn.q"].float()
    k = trace.rec[f"blocks.{layer}.attn.k"].float()
    group = q.size(1) // k.size(1)  # GQA: query head h reads key/value head h // group, as enable_gqa does
    k = k.repeat_interleave(group, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.size(-1))
    return scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)


def attention_view(trace: Trace, layer: int = 0, head: int = 0, row: int = 0, position: int = -1,
                   window_size: int = 48, lang: str = "en") -> ViewResult:
    """Heatmap of one head's weights (queries x keys) with token labels.

    Prompts longer than `window_size` show the queries and keys of a window ending at `position`; the weight that
    those queries put on earlier keys is summed into one extra column (the title says so).
    """
    H, T = trace.config.n_head, trace.T
    if not 0 <= head < H:
        raise ValueError(f"head must be in 0..{H - 1}")
    pos = resolve_position(position, T)
    lo, hi = window(T, pos, window_size)
    w = attention_weights(trace, layer)[row, head, lo:hi]  # [queries in window, all keys]
    allowed = attention_mask(trace, layer)[lo:hi].cpu().numpy()  # [queries in window, all keys]
    shown = w[:, lo:hi]
    labels = trace.labels[row]
    if lo > 0:
        earlier = w[:, :lo].sum(dim=-1, keepdim=True)
        shown = torch.cat([earlier, shown], dim=1)
    z = np32(shown, 4)
    earlier_label = t("view.attention.earlier", lang, n=lo)
    key_pos = np.array(([-1] if lo > 0 else []) + list(range(lo, hi)))  # -1 = the summed earlier keys
    x = np.where(key_pos < 0, lo - 1, key_pos)  # drawn just left of the window
    queries = np.arange(lo, hi)
    kk, qq = np.meshgrid(x, queries)
    visible = allowed[:, lo:hi]  # the causal triangle, cut to the window's band in an S layer
    if lo > 0:  # the summed column: shown where the query may still see some earlier key
        visible = np.concatenate([allowed[:, :lo].any(axis=1, keepdims=True), visible], axis=1)
    df = pd.DataFrame({"layer": layer, "head": head, "query_pos": qq[visible],
                       "key_pos": np.broadcast_to(key_pos, kk.shape)[visible], "weight": z[visible]})
    df["query_token"] = [labels[p] for p in df["query_pos"]]
    df["key_token"] = [labels[p] if p >= 0 else earlier_label for p in df["key_pos"]]
    axis_labels = {int(p): fit_label(labels[p], LABEL_UNITS) if p >= lo else earlier_label for p in x}
    query_labels = [fit_label(label, LABEL_UNITS) for label in labels]

    z_masked = np.where(visible, z, np.nan).astype(np.float32)  # masked cells blank, not "0"
    title = t("view.attention.title", lang, layer=layer, head=head, kv=head // (H // trace.config.n_kv_head))
    keys_back = trace.model.window_sizes[layer]
    kind = window_kind(keys_back, trace.config.sequence_len)
    if kind is not None:  # a model with sliding windows (nanochat 2026): say which kind this layer is
        title += t(f"view.attention.kind_{kind.lower()}", lang, w=keys_back)
    if lo > 0:
        title += t("view.attention.windowed", lang, lo=lo, hi=hi - 1, T=T)
    fig = Canvas(base_layout(title, height=HEIGHT, margin=dict(MARGIN)))
    fig.add_trace(go.Heatmap(z=z_masked, x=x, y=queries, colorscale="Viridis", zmin=0,
                             hovertemplate=hover("plot.query_key_hover", lang)))
    fit_titles(fig)  # sets the top margin: the plot's height below is measured with it
    # no more tick labels than the plot holds at the narrowest width the app draws it (APP_WIDTH)
    fig.update_xaxes(position_axis(list(x), axis_labels, max_ticks=window_size + 1,
                                   axis_px=axis_px(APP_WIDTH, MARGIN["l"], MARGIN["r"] + COLORBAR_PX)),
                     title=t("view.attention.key", lang))
    fig.update_yaxes(dict(position_axis(list(queries), query_labels, max_ticks=window_size, angle=0,
                                        axis_px=axis_px(HEIGHT, fig.layout["margin"]["t"], MARGIN["b"])),
                          autorange="reversed"), title=t("view.attention.query", lang))
    text = t("view.attention.body", lang, layer=layer, head=head, H=H, Hkv=trace.config.n_kv_head,
             hd=trace.config.n_embd // H)
    if kind == "L":
        text += t("view.attention.body_l", lang, context=trace.config.sequence_len)
    elif kind == "S":
        hides = T - 1 > keys_back  # some query of this prompt has keys further back than the window
        text += t("view.attention.body_s_" + ("hides" if hides else "fits"), lang, w=keys_back, n=keys_back + 1, T=T,
                  first=keys_back + 1, context=trace.config.sequence_len)
    fig = fig.figure()
    return ViewResult("attention", title, df, fig, text + bytes_note(df, fig, lang))
