"""What if it had said something else? The distribution a generated token was drawn from, as the chat drew it.

A chat reply samples each token from the model's next-token logits after the reply's own filters (gpt.sampling:
temperature scales them, top-k keeps the k largest, top-p the smallest set of those reaching mass p). `alternatives`
recomputes that distribution for one generated token (one forward over the tokens before it, the model's own) and
gives its top candidates: what it could have said instead, and how likely each was. Picking one and continuing is a
branch (the chat does it through the batched server, which reuses the cached prefix: gpt/serving.py).
"""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import torch

from explain.canvas import Canvas, fit_titles
from explain.common import ViewResult, base_layout, hover, np32
from explain.trace import next_labels
from gpt.nanochat import GPT
from gpt.sampling import filter_logits, sampling_tensors
from gpt.stream import SamplingParams, sampled_vocab
from text import t

SHOW = 10  # candidates shown


@torch.inference_mode()
def alternatives(model: GPT, tokenizer, ids: list[int], params: SamplingParams, chosen: int | None = None,
                 k: int = SHOW) -> pd.DataFrame:
    """The top `k` of the distribution the token after `ids` was drawn from, one row per candidate, most likely first:
    rank (1 = the largest logit), token_id, token (its text after `ids`), p (the probability the reply's filters gave
    it; at temperature 0 the reply takes the top token: p is 1 there), p_model (softmax of the raw logits: the model's
    own belief, before any filter), kept (whether the filters let it be drawn) and chosen (the token the reply took).
    The chosen token has its row even when it ranks below k."""
    device = model.get_device()
    n = sampled_vocab(model.config.vocab_size, tokenizer)
    logits = model(torch.tensor([ids], dtype=torch.long, device=device))[0, -1, :n].float()  # [V]
    temperature, top_k, top_p = sampling_tensors([params], device)
    scaled, order = filter_logits(logits[None], temperature, top_k, top_p)  # sorted by logit, -inf where dropped
    scaled, order = scaled[0], order[0]
    if params.temperature > 0:
        p = scaled.softmax(-1)
    else:
        p = torch.zeros_like(scaled)
        p[0] = 1.0  # argmax: the first of the sorted order
    shown = list(range(min(k, n)))
    if chosen is not None:
        at = int((order == chosen).nonzero()[0, 0])
        if at not in shown:
            shown.append(at)
    rows = torch.tensor(shown, device=device)
    token_ids = order[rows].tolist()
    labels = next_labels(tokenizer, ids, token_ids)
    df = pd.DataFrame({"rank": [r + 1 for r in shown], "token_id": token_ids, "token": labels,
                         "p": np32(p[rows]), "p_model": np32(logits.softmax(-1)[order[rows]]),
                         "kept": torch.isfinite(scaled[rows]).tolist(),
                         "chosen": [i == chosen for i in token_ids]})
    df.attrs["kept"] = int(torch.isfinite(scaled).sum())  # how many candidates the filters left in all
    return df


def alternatives_view(model: GPT, tokenizer, ids: list[int], params: SamplingParams, chosen: int,
                      lang: str = "en") -> ViewResult:
    """A bar per candidate: the probability it was drawn with (the filters applied), the model's own probability
    beside it, the chosen token marked."""
    df = alternatives(model, tokenizer, ids, params, chosen)
    marked = [f"▶ {tok}" if c else tok for tok, c in zip(df["token"], df["chosen"])]
    colors = ["#d93025" if c else "#1a73e8" for c in df["chosen"]]
    title = t("view.branch.title", lang, n=len(ids))
    fig = Canvas(base_layout(title, height=360, margin=dict(l=110, r=20, t=70, b=50)))
    fig.add_trace(go.Bar(y=marked, x=df["p"], orientation="h", marker_color=colors, name=t("view.branch.p", lang),
                         customdata=df[["rank", "p_model"]], hovertemplate=hover("view.branch.hover", lang)))
    fig.add_trace(go.Bar(y=marked, x=df["p_model"], orientation="h", marker_color="#dadce0",
                         name=t("view.branch.p_model", lang), hovertemplate=hover("view.branch.hover_model", lang)))
    fig.update_yaxes(autorange="reversed", title=None)
    fig.update_xaxes(title=t("view.branch.x", lang), range=[0, 1])
    fig.update_layout(barmode="group", legend=dict(orientation="h", y=-0.15))
    fit_titles(fig)
    row = df[df["chosen"]].iloc[0]
    text = t("view.branch.body", lang, token=row["token"], rank=int(row["rank"]), p=float(row["p"]),
             p_model=float(row["p_model"]), kept=df.attrs["kept"], temperature=params.temperature)
    fig = fig.figure()
    return ViewResult("branch", title, df, fig, text)
