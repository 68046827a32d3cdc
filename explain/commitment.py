"""When does the model commit? For every position, the first lens layer from which the logit lens already gives the
model's final answer and keeps giving it at every later layer.

Lens layers are numbered as `explain.lens_logits` numbers them: 0 = the residual stream where it starts, i + 1 = the
output of block i, so n_layer = the last block's output, read through the head: the model's own final logits. The
answer is the final output's top-1; `first_layer` is the smallest lens layer l such that the lens's top-1 equals it at
l and at every layer after (n_layer: only the final output has it). Two looser variants: `first_layer_top3` (the
answer is among the lens's top 3 from there on) and `first_layer_p50` (the lens gives it more than 0.5 from there on;
-1 where not even the final output does). Nothing is recomputed: every layer is read through the model's own head
(explain.lens).
"""
from __future__ import annotations

import math
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from explain.canvas import Canvas, fit_titles
from explain.common import (APP_WIDTH, COLORBAR_PX, ViewResult, axis_px, base_layout, bytes_note, fit_label, hover,
                            position_axis)
from explain.lens import lens_pieces
from explain.trace import Trace, next_labels, trace_forward
from gpt.nanochat import GPT
from text import t

MARGIN = dict(l=110, r=20, t=70, b=90)
VARIANTS = ("first_layer", "first_layer_top3", "first_layer_p50")


def _first_from(holds: torch.Tensor) -> torch.Tensor:
    """holds [layers, T] bool -> per position the first layer from which it holds at every later layer (-1: never,
    not even at the last)."""
    n = holds.size(0)
    # from the last layer back: still holding at layer l = holds at l and at everything after
    tail = holds.flip(0).long().cumprod(0).flip(0).bool()
    count = tail.sum(0)  # how many trailing layers hold
    return torch.where(count > 0, n - count, torch.full_like(count, -1))


@torch.inference_mode()
def commitment_trace(trace: Trace, row: int = 0) -> pd.DataFrame:
    """commitment() of a trace you already have (one row of it). Computed once per trace and row (kept in
    trace.derived): the view drawn again at another layer, head or position reads it back."""
    key = ("commitment", row)
    if key not in trace.derived:
        final = trace.logits[row].argmax(-1)  # [T]
        top1, top3, p50 = [], [], []
        for lo, logits in lens_pieces(trace, row, 0, trace.T):  # [layers, piece, V], on the device
            answer = final[lo: lo + logits.size(1)]
            top1.append(logits.argmax(-1) == answer)  # the softmax keeps the order: no need to take it
            top3.append((logits.topk(min(3, logits.size(-1)), -1).indices == answer[:, None]).any(-1))
            mine = logits.gather(-1, answer[None, :, None].expand(logits.size(0), -1, 1))[..., 0]
            p50.append(mine - logits.logsumexp(-1) > math.log(0.5))  # p(answer) > 0.5, in log space
        firsts = [_first_from(torch.cat(h, 1)).cpu().numpy() for h in (top1, top3, p50)]
        trace.derived[key] = pd.DataFrame({"position": np.arange(trace.T), "top1": final.cpu().numpy(),
                                           **dict(zip(VARIANTS, firsts))})
    return trace.derived[key].copy()


def commitment(model: GPT, ids) -> pd.DataFrame:
    """One row per position of `ids` (one row of token ids): position, top1 (the final output's top-1 id),
    first_layer (see the module's docstring), first_layer_top3, first_layer_p50."""
    return commitment_trace(trace_forward(model, [list(ids)]), 0)


def commitment_view(trace: Trace, row: int = 0, lang: str = "en") -> ViewResult:
    """A strip over the text, one cell per token coloured by the layer where the model commits to its next token
    (three rows: top-1, top-3, p > 0.5); the cell text is the answer it commits to."""
    df = commitment_trace(trace, row)
    L = trace.config.n_layer
    labels = trace.labels[row]
    df["input_token"] = labels
    df["answer"] = _answer_labels(trace, row, df["top1"].tolist())
    answers = [fit_label(a, 6) for a in df["answer"]]
    names = [t(f"view.commitment.{v}", lang) for v in VARIANTS]
    z = np.stack([df[v].to_numpy(dtype=float) for v in VARIANTS])
    z[z < 0] = np.nan  # never (p > 0.5 not even at the end): left blank
    x_px = axis_px(APP_WIDTH, MARGIN["l"], MARGIN["r"] + COLORBAR_PX)
    title = t("view.commitment.title", lang, T=trace.T, L=L)
    fig = Canvas(base_layout(title, height=300, margin=dict(MARGIN)))
    fig.add_trace(go.Heatmap(z=z, x=df["position"], y=names, text=np.array([answers] * 3, dtype=object),
                             texttemplate="%{text}" if trace.T <= 24 else "", textfont=dict(size=9),
                             colorscale="Viridis", zmin=0, zmax=L,
                             colorbar=dict(title=t("view.commitment.colorbar", lang)),
                             hovertemplate=hover("view.commitment.hover", lang)))
    fig.update_xaxes(position_axis(df["position"].tolist(), labels, max_ticks=64, axis_px=x_px),
                     title=t("view.commitment.x", lang))
    fig.update_yaxes(autorange="reversed")
    fig = fit_titles(fig).figure()
    early = int((df["first_layer"] < L).sum())
    text = t("view.commitment.body", lang, T=trace.T, L=L, early=early,
             median=float(np.median(df["first_layer"])), last=labels[-1], answer=df["answer"].iloc[-1],
             layer=int(df["first_layer"].iloc[-1]))
    return ViewResult("commitment", title, df, fig, text + bytes_note(df, fig, lang))


def _answer_labels(trace: Trace, row: int, answers: list[int]) -> list[str]:
    """Each position's answer labelled after the tokens before it (a token completing a character shows it)."""
    ids = trace.ids(row)
    return [next_labels(trace.tokenizer, ids[: p + 1], [a])[0] for p, a in enumerate(answers)]
