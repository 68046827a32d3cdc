"""View 7 — training: targets are the input shifted by one, and every position is a training example.

The per-position cross-entropy is read from the recorded logits (-log softmax at the target); the loss is what the
model's own forward returns with targets, and the view shows that the two agree.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from explain.canvas import Canvas, fit_titles
from explain.common import APP_WIDTH, ViewResult, axis_px, base_layout, bytes_note, hover, np32, position_axis
from text import t
from explain.trace import Trace


def shifted_targets(idx: torch.Tensor) -> torch.Tensor:
    """targets[:, i] = idx[:, i+1]; the last position has no known next token, so -1 (the loss's ignore_index)."""
    targets = torch.full_like(idx, -1)
    targets[:, :-1] = idx[:, 1:]
    return targets


def training_examples(B: int, T: int, loader: bool = False) -> int:
    """How many next-token predictions one forward of [B, T] trains on: every position but each row's last, whose
    next token is not in the input; with loader=True, as nanochat's loader feeds it (each row fetched as T + 1
    tokens: inputs the first T, targets the last T), every position."""
    return B * T if loader else B * (T - 1)


@torch.inference_mode()
def per_position_ce(trace: Trace, targets: torch.Tensor | None = None) -> torch.Tensor:
    """[B, T-1] cross-entropy of each position's prediction of the next prompt token (nats), on the device; with
    `targets` [B, T] (no -1 in them), [B, T]: each position's against its target."""
    if targets is not None:
        logp = trace.logits.float().log_softmax(-1)
        return -logp.gather(-1, targets[..., None])[..., 0]
    logp = trace.logits[:, :-1].float().log_softmax(-1)
    return -logp.gather(-1, trace.idx[:, 1:, None])[..., 0]


@torch.inference_mode()
def training_view(trace: Trace, row: int = 0, lang: str = "en", next_ids: list[int] | None = None) -> ViewResult:
    """Cross-entropy at every position of the prompt next to forward(idx, targets)'s loss (their mean).

    next_ids: the token that follows each row (nanochat's loader fetches every row as T + 1 tokens): then the last
    position has a target too, and all B × T positions train."""
    B, T = trace.B, trace.T
    targets = shifted_targets(trace.idx)
    loader = next_ids is not None
    if loader:
        if len(next_ids) != B:
            raise ValueError(f"next_ids needs one token per row ({B}), got {len(next_ids)}")
        targets[:, -1] = torch.as_tensor(next_ids, dtype=targets.dtype, device=targets.device)
    model_loss = float(trace.model(trace.idx, targets=targets)) if T > 1 or loader else float("nan")
    ce = np32(per_position_ce(trace, targets if loader else None), 6)  # [B, T] or [B, T-1]
    p_target = np.exp(-ce)
    tgt = targets.cpu().numpy()
    pad = 0 if loader else 1  # the last position has no target without the loader's extra token
    frames = []
    for b in range(B):
        labels = trace.labels[b]
        tgt_ids = tgt[b].tolist()
        after = [f"#{next_ids[b]}"] if loader else [""]
        frames.append(pd.DataFrame({
            "row": b, "position": np.arange(T), "input_token": labels,
            "target_id": tgt_ids, "target_token": labels[1:] + after,
            "ce": np.append(ce[b], [np.nan] * pad).astype(np.float32),
            "p_target": np.append(p_target[b], [np.nan] * pad).astype(np.float32)}))
    df = pd.concat(frames, ignore_index=True)
    mean_ce = float(np.nanmean(df["ce"])) if T > 1 or loader else float("nan")
    uniform = math.log(trace.config.vocab_size)

    labels = trace.labels[row]
    n = training_examples(B, T, loader)
    title = t("view.training.title", lang, n=n, loss=model_loss)
    x = np.arange(T - pad)
    pair_labels = [f"{a}→{b}" for a, b in zip(labels, df[df["row"] == row]["target_token"])]
    margin = dict(l=60, r=20, t=60, b=110)
    fig = Canvas(base_layout(title, height=460, margin=margin))
    fig.add_trace(go.Bar(x=x, y=ce[row], marker_color="#1a73e8", name=t("view.training.ce", lang),
                         customdata=np.round(p_target[row], 4), hovertemplate=hover("view.training.hover", lang)))
    fig.add_hline(y=model_loss, line=dict(color="#d93025", dash="dash"),
                  annotation_text=t("view.training.loss_line", lang, loss=model_loss), annotation_position="top left")
    fig.add_hline(y=uniform, line=dict(color="#9aa0a6", dash="dot"),
                  annotation_text=t("view.training.uniform_line", lang, u=uniform), annotation_position="bottom right")
    fig.update_xaxes(position_axis(list(x), pair_labels, max_ticks=64,
                                   axis_px=axis_px(APP_WIDTH, margin["l"], margin["r"])),
                     title=t("view.training.pair_axis", lang))
    fig.update_yaxes(title=t("view.training.ce", lang))
    fit_titles(fig)
    how = t("view.training.how_loader" if loader else "view.training.how_shift", lang, B=B, T=T, T1=T + 1, n=n)
    text = t("view.training.body", lang, how=how, loss=model_loss, mean=mean_ce,
             diff=abs(model_loss - mean_ce), u=uniform, V=trace.config.vocab_size)
    fig = fig.figure()
    return ViewResult("training", title, df, fig, text + bytes_note(df, fig, lang, labels,
                                                                    (trace.raw_labels or [None] * (row + 1))[row]))
