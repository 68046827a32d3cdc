"""View 9 — the logit lens: read every layer's residual stream as if it were the last one.

Each recorded residual (the embedding after norm, then each block's output) is pushed through the model's own head
(GPT.head: final norm, lm_head and softcap). At the last block this is exactly what forward does, so the lens ends at
the real logits. The stream starts where the model says (`GPT.residual_start`: after the smear, in a model with
one), and in a model with backout the head subtracts backout_lambda times the residual kept after block
`GPT.backout_layer` from every residual read after that block, as forward does at the end.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from explain.canvas import Canvas, fit_titles
from explain.common import (APP_WIDTH, COLORBAR_PX, GLYPH_EM, ViewResult, axis_px, base_layout, bytes_note,
                            fit_label, hover, np32, position_axis, resolve_position, window)
from text import t
from explain.trace import Trace, next_labels
from gpt.recorder import residual_points


MARGIN = dict(l=80, r=20, t=60, b=90)
CELL_FONT_PX = 9  # a cell's text

def lens_inputs(trace: Trace) -> tuple[list[str], list[str]]:
    """(names shown, recorded names) of the residual stream read by the lens: embedding, then each block's output."""
    L = trace.config.n_layer
    names = [trace.model.residual_start] + residual_points(L)[1:]
    return ["embed"] + [f"block {i}" for i in range(L)], names


def backout_from(trace: Trace) -> int | None:
    """The first lens layer (i+1 = block i's output) that the head reads with the backout subtracted: the output of
    block model.backout_layer and every later one; None for a model without backout."""
    mid = trace.model.backout_layer
    return None if mid is None else mid + 1


@torch.inference_mode()
def lens_logits(trace: Trace, layer: int, row: int = 0, positions: slice = slice(None)) -> torch.Tensor:
    """Softcapped logits [T', V] (on the device) read from residual `layer` (0 = embedding, i+1 = block i's output)
    through the model's own head (with the backout, in a model with one, from block backout_layer's output on)."""
    _, names = lens_inputs(trace)
    x = trace.rec[names[layer]][row, positions]
    first = backout_from(trace)
    if first is None or layer < first:
        return trace.model.head(x)
    return trace.model.head(x, x_backout=trace.rec[f"blocks.{first - 1}.output"][row, positions])


LENS_ELEMENTS = 1 << 24  # logits one call of lens_stack holds at most (64 MB in float32): longer prompts go in chunks


@torch.inference_mode()
def lens_stack(trace: Trace, row: int = 0, positions: slice = slice(None)) -> torch.Tensor:
    """[layers, T', V] every lens layer's softcapped logits at `positions`, as lens_logits reads them, in one call of
    the head (the residuals stacked: one matrix product instead of one per layer; the layers before the backout get
    a backout of zeros, which subtracts nothing). The last layer is the recorded output itself."""
    _, names = lens_inputs(trace)
    x = torch.stack([trace.rec[name][row, positions] for name in names[:-1]])
    first = backout_from(trace)
    if first is None:
        inner = trace.model.head(x)
    else:
        kept = trace.rec[f"blocks.{first - 1}.output"][row, positions]
        inner = trace.model.head(x, x_backout=torch.stack([kept if layer >= first else torch.zeros_like(kept)
                                                             for layer in range(len(names) - 1)]))
    return torch.cat([inner, trace.logits[row, positions][None]])


def lens_pieces(trace: Trace, row: int, lo: int, hi: int) -> Iterator[tuple[int, torch.Tensor]]:
    """lens_stack over positions lo..hi-1, in pieces of at most LENS_ELEMENTS logits: (first position, [layers,
    piece, V] float32 logits on the device) each."""
    step = max(1, LENS_ELEMENTS // (len(lens_inputs(trace)[0]) * trace.config.vocab_size))
    for a in range(lo, hi, step):
        yield a, lens_stack(trace, row, slice(a, min(a + step, hi)))


@torch.inference_mode()
def logit_lens_view(trace: Trace, row: int = 0, position: int = -1, window_size: int = 16,
                    lang: str = "en") -> ViewResult:
    """Layers x positions: each layer's top token (cell text) and the probability it already gives to the model's
    final top token (colour). Computed for a window of `window_size` positions ending at `position`. A cell's text
    is cut ("…") to what its width holds at the narrowest the app draws the plot; the table keeps labels whole."""
    T = trace.T
    lo, hi = window(T, resolve_position(position, T), window_size)
    shown, _ = lens_inputs(trace)
    final = trace.logits[row, lo:hi].argmax(-1)  # the model's answer at each position
    ar = torch.arange(hi - lo, device=final.device)
    top_ids, top_p, p_final = [], [], []
    for a, logits in lens_pieces(trace, row, lo, hi):
        p = logits.softmax(-1)  # [layers, piece, V], on the device
        best = p.max(-1)
        top_ids.append(best.indices)
        top_p.append(best.values)
        p_final.append(p[:, ar[: p.size(1)], final[a - lo: a - lo + p.size(1)]])
    top_ids = torch.cat(top_ids, 1).cpu().numpy()
    top_p, p_final = np32(torch.cat(top_p, 1), 4), np32(torch.cat(p_final, 1), 4)
    final_ids = final.cpu().numpy()
    ids = trace.ids(row)
    # each guess labelled after its own prefix, as the next-token view does: a guess that completes a character the
    # prompt began shows that character ("今(2/2)"), not its bytes
    names = []  # per position shown: token id -> label
    for i, p in enumerate(range(lo, hi)):
        guesses = sorted({int(g) for g in top_ids[:, i]} | {int(final_ids[i])})
        names.append(dict(zip(guesses, next_labels(trace.tokenizer, ids[:p + 1], guesses))))
    labels = trace.labels[row]
    n_layers, n_pos = top_ids.shape
    df = pd.DataFrame({"layer": np.repeat(shown, n_pos), "position": np.tile(np.arange(lo, hi), n_layers),
                       "top_token_id": top_ids.ravel(), "p_top": top_p.ravel(), "p_final_answer": p_final.ravel(),
                       "final_answer_id": np.tile(final_ids, n_layers)})
    df["input_token"] = [labels[p] for p in df["position"]]
    df["top_token"] = [names[p - lo][i] for p, i in zip(df["position"], df["top_token_id"])]
    df["final_answer"] = [names[p - lo][i] for p, i in zip(df["position"], df["final_answer_id"])]

    title = t("view.logit_lens.title", lang) + (t("view.logit_lens.windowed", lang, lo=lo, hi=hi - 1, T=T)
                                               if hi - lo < T else "")
    x_px = axis_px(APP_WIDTH, MARGIN["l"], MARGIN["r"] + COLORBAR_PX)
    units = max(2, int(x_px / n_pos / (CELL_FONT_PX * GLYPH_EM)))  # Latin glyphs one cell holds
    cell = np.array([[fit_label(names[k][int(i)], units) for k, i in enumerate(r)] for r in top_ids], dtype=object)
    x = np.arange(lo, hi)
    fig = Canvas(base_layout(title, height=120 + 34 * n_layers, margin=dict(MARGIN)))
    fig.add_trace(go.Heatmap(z=p_final, x=x, y=shown, text=cell, texttemplate="%{text}",
                             textfont=dict(size=CELL_FONT_PX), colorscale="Greens", zmin=0, zmax=1,
                             colorbar=dict(title=t("view.logit_lens.colorbar", lang)),
                             hovertemplate=hover("view.logit_lens.hover", lang)))
    fit_titles(fig)
    # no more tick labels than the plot holds at the narrowest width the app draws it (APP_WIDTH)
    fig.update_xaxes(position_axis(list(x), labels, max_ticks=window_size, axis_px=x_px),
                     title=t("view.logit_lens.x", lang))
    fig = fig.update_yaxes(autorange="reversed").figure()
    agree = float((top_ids[-1] == final_ids).mean())
    first = [next((shown[l] for l in range(n_layers) if top_ids[l, i] == final_ids[i]), "-") for i in range(n_pos)]
    text = t("view.logit_lens.body", lang, L=trace.config.n_layer, agree=agree,
             last=f"{labels[hi - 1]} → {names[-1][int(final_ids[-1])]}", first_layer=first[-1])
    if backout_from(trace) is not None:
        mid = backout_from(trace) - 1
        text += t("view.logit_lens.backout", lang, mid=mid, lam=float(trace.model.backout_lambda.float().item()))
    return ViewResult("logit_lens", title, df, fig, text + bytes_note(df, fig, lang))
