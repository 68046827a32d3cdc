"""View 6 — the next-token distribution at every position: top-k, entropy, and how the real next token fares.

Softmax, top-k, entropy and the rank of the actual next token (and how many tokens tie with it) are computed on the
device; only [T, k] ids and probabilities and per-position scalars come back.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from explain.canvas import fit_titles, subplots
from explain.common import (APP_WIDTH, ViewResult, axis_px, base_layout, bytes_note, fit_label, hover, np32,
                            position_axis, rank_and_ties, rank_text, resolve_position, window)
from text import t
from explain.trace import Trace, next_labels

HEIGHT = 1500  # px: the grid's rows, the top bar chart, the two per-position plots, each with room for its labels
MARGIN = dict(l=90, r=60, t=70, b=80)
ROWS = [0.44, 0.18, 0.19, 0.19]  # heights of the grid, the bar chart, the lines and the ranks
SPACING = 0.07
CELL_UNITS = 8  # a grid cell's label, at most (text_units): 10 cells share the row at the narrowest width


@torch.inference_mode()
def next_token_stats(trace: Trace, row: int = 0, k: int = 20) -> dict[str, np.ndarray]:
    """Per position: top-k ids/probs [T, k], entropy [T] (nats), and for positions 0..T-2 the probability, the rank
    (1 + the number of tokens with a strictly higher logit) and the number of other tokens whose logit ties with it,
    of the token that actually comes next in the prompt."""
    logits = trace.logits[row].float()  # [T, V] stays on the device
    logp = logits.log_softmax(-1)
    p = logp.exp()
    entropy = torch.special.entr(p).sum(-1)
    top_p, top_ids = p.topk(min(k, p.size(-1)), dim=-1)
    nxt = trace.idx[row, 1:]
    ar = torch.arange(nxt.numel(), device=p.device)
    rank, tied = rank_and_ties(logits[:-1], nxt)
    return {"top_ids": top_ids.cpu().numpy(), "top_p": np32(top_p, 6), "entropy": np32(entropy, 5),
            "p_next": np32(p[ar, nxt], 6), "rank_next": rank.cpu().numpy(), "tied_next": tied.cpu().numpy()}


def next_token_view(trace: Trace, position: int = -1, row: int = 0, k: int = 10, bar_k: int = 20,
                    window_size: int = 32, lang: str = "en") -> ViewResult:
    """Positions x top-k heatmap (window of `window_size` positions ending at `position`), entropy and p(actual
    next) for every position, the actual next token's rank (log scale, ties as bars) for every position, and the
    top `bar_k` bar chart at `position`."""
    T, V = trace.T, trace.config.vocab_size
    pos = resolve_position(position, T)
    s = next_token_stats(trace, row, max(k, bar_k))
    labels = trace.labels[row]
    ids = trace.ids(row)
    # each candidate labelled after its own prefix: one that completes a character the prompt began shows it
    names = [next_labels(trace.tokenizer, ids[:p + 1], s["top_ids"][p].tolist()) for p in range(T)]
    kk = s["top_ids"].shape[1]
    nxt = ids[1:] + [-1]
    p_next = np.append(s["p_next"], np.nan).astype(np.float32)
    rank_next = np.append(s["rank_next"], -1)
    tied_next = np.append(s["tied_next"], -1)
    df = pd.DataFrame({"position": np.repeat(np.arange(T), min(k, kk)), "rank": np.tile(np.arange(1, min(k, kk) + 1), T),
                       "token_id": s["top_ids"][:, :k].ravel(), "prob": s["top_p"][:, :k].ravel()})
    df["token"] = [names[p][r - 1] for p, r in zip(df["position"], df["rank"])]
    df["input_token"] = [labels[p] for p in df["position"]]
    df["entropy"] = s["entropy"][df["position"]]
    df["actual_next_id"] = np.array(nxt)[df["position"]]
    df["p_actual_next"] = p_next[df["position"]]
    df["rank_actual_next"] = rank_next[df["position"]]
    df["tied_actual_next"] = tied_next[df["position"]]

    lo, hi = window(T, pos, window_size)
    title = t("view.next_token.title", lang, pos=pos, token=labels[pos])
    if lo > 0:
        title += t("view.next_token.windowed", lang, lo=lo, hi=hi - 1, T=T)
    # every panel spans the whole width: at the narrowest width (APP_WIDTH) ten cells of a row still hold a label each
    fig = subplots(rows=4, cols=1, row_heights=ROWS, specs=[[{}], [{}], [{"secondary_y": True}], [{}]],
                   vertical_spacing=SPACING,
                   subplot_titles=[t("view.next_token.heat", lang, k=min(k, kk)),
                                   t("view.next_token.bar", lang, k=bar_k, pos=pos, token=labels[pos]),
                                   t("view.next_token.lines", lang), t("view.next_token.ranks", lang, V=V)])
    plot_h = (HEIGHT - MARGIN["t"] - MARGIN["b"]) * (1 - SPACING * 3)
    width_px = axis_px(APP_WIDTH, MARGIN["l"], MARGIN["r"])
    z = s["top_p"][lo:hi, :k]
    full = np.array([names[p][:k] for p in range(lo, hi)], dtype=object)
    cell = np.vectorize(lambda name: fit_label(name, CELL_UNITS), otypes=[object])(full)
    ranks = np.arange(1, z.shape[1] + 1)
    fig.add_trace(go.Heatmap(z=z, x=ranks, y=np.arange(lo, hi), text=cell, customdata=full, texttemplate="%{text}",
                             textfont=dict(size=9), colorscale="Blues", zmin=0, zmax=1, showscale=False,
                             hovertemplate=hover("view.next_token.hover", lang)), row=1, col=1)
    # Outline the actual next token where it is one of the k shown (found by id: a tied token's rank is not a column).
    hit = [(p, int(c) + 1) for p in range(lo, min(hi, T - 1)) for c in np.flatnonzero(s["top_ids"][p, :k] == nxt[p])]
    if hit:
        fig.add_trace(go.Scatter(x=[r for _, r in hit], y=[p for p, _ in hit], mode="markers",
                                 marker=dict(symbol="square-open", size=16, color="#d93025", line=dict(width=2)),
                                 name=t("view.next_token.actual", lang), hoverinfo="skip"), row=1, col=1)
    fig.update_yaxes(dict(position_axis(list(range(lo, hi)), labels, max_ticks=window_size, angle=0,
                                        axis_px=plot_h * ROWS[0]), autorange="reversed"), row=1, col=1)
    fig.update_xaxes(title_text=t("view.next_token.rank", lang), dtick=1, row=1, col=1)
    top_ids, top_p = s["top_ids"][pos, :bar_k], s["top_p"][pos, :bar_k]
    colors = ["#d93025" if pos + 1 < T and i == ids[pos + 1] else "#1a73e8" for i in top_ids]
    bars = np.arange(len(top_p))
    fig.add_trace(go.Bar(x=bars, y=top_p, marker_color=colors, showlegend=False,
                         customdata=names[pos][:bar_k], hovertemplate="%{customdata}: %{y}<extra></extra>"),
                  row=2, col=1)
    fig.update_xaxes(position_axis(list(bars), [fit_label(n, 10) for n in names[pos][:bar_k]], max_ticks=bar_k,
                                   axis_px=width_px), row=2, col=1)
    fig.update_yaxes(title_text="p", row=2, col=1)
    x = np.arange(T)
    fig.add_trace(go.Scatter(x=x, y=s["entropy"], name=t("view.next_token.entropy", lang), line=dict(color="#9334e6")),
                  row=3, col=1)
    fig.add_trace(go.Scatter(x=x[:-1], y=s["p_next"], name=t("view.next_token.p_next", lang), mode="lines+markers",
                             marker=dict(size=4), line=dict(color="#d93025")), row=3, col=1, secondary_y=True)
    fig.update_xaxes(range=[-0.5, T - 0.5], showticklabels=False, row=3, col=1)  # the rank plot below labels both
    fig.update_yaxes(title_text=t("view.next_token.entropy", lang), row=3, col=1)
    fig.update_yaxes(title_text=t("view.next_token.p_next", lang), range=[0, 1], row=3, col=1, secondary_y=True)
    ranks, tied = s["rank_next"], s["tied_next"]
    fig.add_trace(go.Scatter(x=x[:-1], y=ranks, name=t("view.next_token.rank_next", lang), mode="lines+markers",
                             marker=dict(size=5), line=dict(color="#188038"),
                             error_y=dict(type="data", symmetric=False, array=tied, arrayminus=np.zeros_like(tied),
                                          visible=bool(tied.any()), thickness=1),
                             text=[rank_text(int(r), int(n), V, lang) for r, n in zip(ranks, tied)],
                             hovertemplate=hover("view.next_token.hover_rank", lang)), row=4, col=1)
    fig.update_xaxes(position_axis(list(x), labels, max_ticks=48, axis_px=width_px), range=[-0.5, T - 0.5], row=4,
                     col=1)
    fig.update_yaxes(type="log", range=[-0.05, np.log10(V) + 0.05], dtick=1,  # powers of 10 only: no crowded minor labels
                     title_text=t("view.next_token.rank", lang), row=4, col=1)
    fig.update_layout(base_layout(title, height=HEIGHT, legend=dict(orientation="h", y=-0.06),
                                  margin=dict(MARGIN)))
    fig = fit_titles(fig).figure()
    known = s["p_next"]
    text = t("view.next_token.body", lang, T=T, V=V, max_entropy=float(np.log(V)),
             mean_p=float(known.mean()) if known.size else float("nan"),
             top1=int(((ranks == 1) & (tied == 0)).sum()), n=int(known.size))
    if tied.any():
        text += t("view.next_token.ties", lang, n=int((tied > 0).sum()))
    return ViewResult("next_token", title, df, fig,
                      text + bytes_note(df, fig, lang, labels, (trace.raw_labels or [None])[row]))
