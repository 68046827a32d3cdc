"""Why did it say that? Input saliency: how much each token of the prompt counts for one logit.

f = the model's softcapped logit of the target at one position; the input is everything the forward reads of the
token ids: their embedding (the recording point `embed`, wte(idx)) and, in a model with value embeddings, each value
embedding layer's lookup (`blocks.{i}.attn.ve`).
- "integrated_gradients": the gradient of f averaged along the straight path from a baseline to the input (midpoint
  rule, `steps` points), times (input − baseline), summed over channels: one score per position. The baseline is the
  prompt with every token replaced by <|bos|>, as the model itself embeds it, not zero: the embedding is normalized at
  once and every block normalizes its input, so f is flat along the path from zero until the very end and then jumps
  (64 steps from zero recover a tiny share of f). Completeness: the scores add up to f(input) − f(baseline), up to
  the path's discretization; the view shows both.
- "gradient_x_input": the gradient at the input times the input.
The path runs through the model's own forward: at the input's recording points a tap writes the path's embeddings in
place (gpt/recorder.py: a tap may write); the head reads only the position asked for.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from explain.canvas import fit_titles, subplots
from explain.common import (APP_WIDTH, COLORBAR_PX, ViewResult, axis_px, base_layout, bytes_note, fit_label, hover,
                            position_axis, resolve_position)
from explain.resume import check_token, forward_last
from explain.trace import next_labels, sequence_labels, to_idx
from gpt.nanochat import GPT
from gpt.recorder import Recorder
from text import t

METHODS = ("integrated_gradients", "gradient_x_input")
BATCH_TOKENS = 2048  # path points x tokens in one forward and backward: the saved activations stay bounded
MARGIN = dict(l=70, r=20, t=70, b=90)


def input_points(model: GPT) -> list[str]:
    """The recording points where the forward reads the token ids: the embedding, and each value embedding."""
    return [n for n in model.recording_points() if n == "embed" or n.endswith(".attn.ve")]


def saliency_flops(model: GPT, T: int, steps: int) -> int:
    """About the FLOPs of a saliency of T tokens: `steps` forwards and their backward passes (the backward about
    twice a forward), plus the two recorded runs."""
    return (3 * steps + 2) * model.forward_flops(T)


class _Path:
    """A tap that writes, at each input point, base + α·(input − base) for row r's α, as a leaf whose gradient the
    caller asks for."""

    def __init__(self, alphas: torch.Tensor, inputs: Recorder, base: Recorder):
        self.alphas, self.inputs, self.base = alphas, inputs, base
        self.leaves: dict[str, torch.Tensor] = {}

    def __call__(self, name: str, tensor: torch.Tensor) -> None:
        if name in self.inputs:
            a = self.alphas.to(tensor.dtype).view(-1, *[1] * (tensor.dim() - 1))
            leaf = (self.base[name] + a * (self.inputs[name] - self.base[name])).requires_grad_(True)
            tensor.copy_(leaf)
            self.leaves[name] = leaf


def _recorded(model: GPT, idx: torch.Tensor, names: list[str]) -> tuple[Recorder, torch.Tensor]:
    rec = Recorder(names=set(names))
    with torch.no_grad():  # not inference mode: these tensors take part in the path's autograd graph
        logits = model(idx, recorder=rec)[0, -1]
    return rec, logits


def saliency_table(model: GPT, ids, position: int = -1, target: int | None = None,
                   method: str = "integrated_gradients", steps: int = 64, bos: int | None = None
                   ) -> tuple[pd.DataFrame, dict]:
    """saliency() and what the view says beside it: target, position, f (at the input), f_base (at the baseline),
    total (the scores' sum), bos."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps must be a whole number >= 1, got {steps!r}")
    check_token(model, target, "target")
    idx = to_idx([list(ids)], None, model)
    p = resolve_position(position, idx.size(1))
    idx = idx[:, : p + 1]  # later tokens cannot change the logit at p (causal)
    bos = int(idx[0, 0]) if bos is None else bos
    check_token(model, bos, "baseline token")
    names = input_points(model)
    inputs, logits = _recorded(model, idx, names)
    target = int(logits.argmax()) if target is None else target
    base, base_logits = _recorded(model, torch.full_like(idx, bos), names)
    if method == "integrated_gradients":
        alphas = (torch.arange(steps, dtype=torch.float64) + 0.5) / steps
    else:
        alphas = torch.ones(1, dtype=torch.float64)
        base = {name: torch.zeros_like(x) for name, x in inputs.items()}  # the input itself: x · ∇f(x)
    T = idx.size(1)
    chunk = max(1, BATCH_TOKENS // T)
    grads = {name: torch.zeros_like(x[0], dtype=torch.float64) for name, x in inputs.items()}
    with torch.inference_mode(False), torch.enable_grad():
        for lo in range(0, len(alphas), chunk):
            a = alphas[lo:lo + chunk].to(idx.device)
            path = _Path(a, inputs, base)
            f = forward_last(model, idx.expand(len(a), -1), path)[:, target]
            got = torch.autograd.grad(f.sum(), [path.leaves[n] for n in names])
            for name, g in zip(names, got):
                grads[name] += g.double().sum(0)
    scores = sum(((inputs[n][0].double() - base[n][0].double()) * grads[n] / len(alphas)).sum(-1) for n in names)
    df = pd.DataFrame({"position": np.arange(T), "score": scores.cpu().numpy()})
    info = dict(target=target, position=p, f=float(logits[target]), f_base=float(base_logits[target]),
                total=float(df["score"].sum()), bos=bos, method=method, steps=len(alphas))
    return df, info


def saliency(model: GPT, ids, position: int = -1, target: int | None = None, method: str = "integrated_gradients",
             steps: int = 64, bos: int | None = None) -> pd.DataFrame:
    """One row per input position up to `position`: position, score, for the softcapped logit of `target` (default:
    the model's top-1) at `position` (see the module's docstring for the methods). Integrated gradients start from
    the prompt with every token replaced by `bos` (default: the prompt's first token, <|bos|> in a nanochat prompt).
    ValueError for a method, target or position the model cannot take."""
    return saliency_table(model, ids, position, target, method, steps, bos)[0]


def saliency_view(model: GPT, tokenizer, ids, position: int = -1, target: int | None = None,
                  method: str = "integrated_gradients", steps: int = 64, lang: str = "en") -> ViewResult:
    """The prompt's tokens coloured by their score (a strip over the text), the scores as bars, and the completeness
    of integrated gradients: the scores' sum beside f(input) − f(baseline)."""
    ids = list(ids)
    bos = tokenizer.bos_token_id if tokenizer is not None else None
    df, info = saliency_table(model, ids, position, target, method, steps, bos)
    T, p = len(df), info["position"]
    labels = sequence_labels(tokenizer, ids)[:T]
    target_name = next_labels(tokenizer, ids[: p + 1], [info["target"]])[0]
    scores = df["score"].to_numpy(dtype=float)
    bound = float(np.abs(scores).max()) or 1.0
    title = t("view.saliency.title", lang, method=t(f"view.saliency.method_{method}", lang), target=target_name,
              pos=p, token=labels[p])
    fig = subplots(rows=2, cols=1, row_heights=[0.3, 0.7], vertical_spacing=0.12, shared_xaxes=True,
                   subplot_titles=[t("view.saliency.strip", lang), t("view.saliency.bars", lang)])
    cells = np.array([[fit_label(label, 8) for label in labels]], dtype=object)
    fig.add_trace(go.Heatmap(z=[scores], x=list(range(T)), y=[""], text=cells, texttemplate="%{text}" if T <= 24
                             else "", textfont=dict(size=10), colorscale="RdBu_r", zmid=0, zmin=-bound, zmax=bound,
                             colorbar=dict(title=t("view.saliency.colorbar", lang), len=0.35, y=0.85),
                             customdata=np.array([labels], dtype=object),
                             hovertemplate=hover("view.saliency.hover_strip", lang)), row=1, col=1)
    fig.add_trace(go.Bar(x=list(range(T)), y=scores, marker_color=np.where(scores >= 0, "#d93025", "#1a73e8"),
                         customdata=labels, showlegend=False, hovertemplate=hover("view.saliency.hover", lang)),
                  row=2, col=1)
    x_px = axis_px(APP_WIDTH, MARGIN["l"], MARGIN["r"] + COLORBAR_PX)
    fig.update_xaxes(position_axis(list(range(T)), labels, axis_px=x_px), row=2, col=1)
    fig.update_yaxes(title_text=t("view.saliency.score", lang), row=2, col=1)
    fig.update_layout(base_layout(title, height=460, margin=dict(MARGIN)))
    fit_titles(fig)
    df["token"] = labels
    top = int(np.argmax(np.abs(scores)))
    text = t("view.saliency.body", lang, target=target_name, pos=p, token=labels[p], top=labels[top],
             top_score=float(scores[top]))
    if method == "integrated_gradients":
        gap = info["f"] - info["f_base"]
        text += "\n\n" + t("view.saliency.completeness", lang, total=info["total"], f=info["f"], f_base=info["f_base"],
                           gap=gap, ratio=info["total"] / gap if gap else float("nan"), steps=info["steps"],
                           bos=next_labels(tokenizer, [], [info["bos"]])[0])
    else:
        text += "\n\n" + t("view.saliency.gxi", lang, total=info["total"], f=info["f"])
    fig = fig.figure()
    return ViewResult("saliency", title, df, fig, text + bytes_note(df, fig, lang))
