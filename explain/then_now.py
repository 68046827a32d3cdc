"""Then and now — the same prompt through two members of the nanochat family (any two: the tutorial's and today's,
or any commit between), stage by stage side by side.

The table has one row per recorded name of either forward (`GPT.recording_points` of each model), in forward order,
aligned by name where both record it: its shape in each model, the RMS of the recorded tensor (the row shown), and
whether the stage is the same computation, changed, or new in the later member (decided by the two members' feature
switches, gpt/nanochat/features.py). The figure follows the residual stream's RMS through both forwards and shows how
many keys each layer's last query reads (windows vs. the whole context). The text lists what the later member adds
or changes, with its own numbers. Nothing is recomputed: every number is a recorded tensor, a parameter or a config
value.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from explain.canvas import fit_titles, subplots
from explain.common import ViewResult, base_layout, hover, window_kind
from explain.family import feature_line, feature_values
from explain.shapes import point_code
from text import t
from explain.trace import Trace, trace_forward
from gpt.nanochat import CARD, MEMBERS, GPT
from gpt.recorder import POINTS

_BLOCK = re.compile(r"^blocks\.(\d+)\.")
_INDEX = {p.name: i for i, p in enumerate(POINTS)}
_FIRST_BLOCK = min(i for name, i in _INDEX.items() if name.startswith("blocks."))
_SYMBOLIC = {p.name: p.shape for p in POINTS}
_FEATURE_OF = {p.name: p.feature for p in POINTS}
# A shared point that the later member computes differently when one of these switches differs (the reason is
# view.then_now.note.<reason>); "v" and "y" change only on some layers (value-embedding layers, S layers), decided per
# layer below.
_CHANGED = {"rotary.cos": (("rotary_base", "rotary_bf16"), "rotary"), "rotary.sin": (("rotary_base", "rotary_bf16"),
                                                                                        "rotary"),
            "blocks.{i}.input": (("lambdas",), "x0_mix"), "blocks.{i}.attn.q": (("qk_scale",), "qk_scale"),
            "blocks.{i}.attn.k": (("qk_scale",), "qk_scale"), "final_norm": (("backout",), "after_backout"),
            "logits_raw": (("pad_vocab_to", "softcap_fp32"), "padded_vocab"), "logits": (("softcap",), "softcap")}
_NEW_NOTE = {"embed_smear": "smear", "blocks.{i}.attn.ve": "ve", "blocks.{i}.attn.ve_gate": "ve_gate",
             "backout": "backout"}


def point_of(name: str) -> tuple[str, int | None]:
    """A recorded name -> (its POINTS name, block index or None): "blocks.3.attn.q" -> ("blocks.{i}.attn.q", 3)."""
    m = _BLOCK.match(name)
    if m is None:
        return name, None
    return "blocks.{i}." + name[m.end():], int(m.group(1))


def _order(name: str) -> tuple[int, int, int]:
    point, i = point_of(name)
    return (_INDEX[point], 0, 0) if i is None else (_FIRST_BLOCK, i, _INDEX[point])


def split_models(model_a: GPT, model_b: GPT) -> tuple[GPT, GPT]:
    """(the earlier member's model, the later one's) of two models in either order; ValueError when both are the same
    member (there is nothing to compare)."""
    order = [m.name for m in MEMBERS]
    if model_a.member == model_b.member:
        raise ValueError(f"then and now needs two different nanochat versions; both models are {model_a.member.name}")
    earlier = order.index(model_a.member.name) < order.index(model_b.member.name)
    return (model_a, model_b) if earlier else (model_b, model_a)


def _differs(then: GPT, now: GPT, switches: tuple[str, ...]) -> bool:
    return any(getattr(then.features, s) != getattr(now.features, s) for s in switches)


def _status_and_note(name: str, in_then: bool, in_now: bool, then: GPT, now: GPT) -> tuple[str, str | None]:
    point, i = point_of(name)
    feature = _FEATURE_OF[point]
    if in_now and not in_then and feature and not then.has_point(feature, i):
        return "new", _NEW_NOTE[point]
    if not in_now:
        return "only_then", None
    if not in_then:
        return "only_now", None
    if point == "blocks.{i}.attn.v" and now.has_value_embedding(i) and not (i < then.config.n_layer
                                                                           and then.has_value_embedding(i)):
        return "changed", "value_embed"
    if point == "blocks.{i}.attn.y" and window_kind(now.window_sizes[i], now.config.sequence_len) == "S":
        return "changed", "window"
    if point in _CHANGED and _differs(then, now, _CHANGED[point][0]):
        return "changed", _CHANGED[point][1]
    return "same", None


@torch.inference_mode()
def _rms(trace: Trace, names: list[str], row: int) -> dict[str, float]:
    """RMS of each recorded tensor (row `row`; tensors with one row, the rotary tables, are shared by every row)."""
    rec = trace.rec
    rows = [rec[n][min(row, rec[n].size(0) - 1)] for n in names]  # a reduction each: no [T, V] copy is made
    values = torch.stack([torch.linalg.vector_norm(x, dtype=torch.float32) / x.numel() ** 0.5 for x in rows])
    return dict(zip(names, values.cpu().tolist()))


def then_now_table(then: Trace, now: Trace, row: int = 0, lang: str = "en") -> pd.DataFrame:
    """One row per recorded name of either forward (`then`: the earlier member's trace, `now`: the later one's), in
    forward order: name, status, code, symbolic, shape_then, shape_now, rms_then, rms_now, note (see the module's
    docstring)."""
    return _table(then, now, row, lang)[0]


def _table(then: Trace, now: Trace, row: int, lang: str) -> tuple[pd.DataFrame, list[str]]:
    names_then, names_now = then.model.recording_points(), now.model.recording_points()
    rms_then, rms_now = _rms(then, names_then, row), _rms(now, names_now, row)
    rows, statuses = [], []
    for name in sorted(set(names_then) | set(names_now), key=_order):
        in_then, in_now = name in rms_then, name in rms_now
        status, note = _status_and_note(name, in_then, in_now, then.model, now.model)
        statuses.append(status)
        point, _ = point_of(name)
        rows.append(dict(name=name, status=t(f"view.then_now.status.{status}", lang),
                         code=point_code(point, now.model if in_now else then.model, lang), symbolic=_SYMBOLIC[point],
                         shape_then=_fmt(then.rec[name].shape) if in_then else "",
                         shape_now=_fmt(now.rec[name].shape) if in_now else "",
                         rms_then=round(rms_then[name], 5) if in_then else np.nan,
                         rms_now=round(rms_now[name], 5) if in_now else np.nan,
                         note=t(f"view.then_now.note.{note}", lang) if note else ""))
    return pd.DataFrame(rows), statuses


def _fmt(shape) -> str:
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


def _residual_stages(names: list[str]) -> list[str]:
    """The residual stream's stages among `names`: the embedding, every block's input, middle and output, the
    backout and the final norm."""
    keep = {"embed_norm", "embed_smear", "blocks.{i}.input", "blocks.{i}.resid_mid", "blocks.{i}.output", "backout",
            "final_norm"}
    return [n for n in names if point_of(n)[0] in keep]


def _keys_read(model, T: int) -> list[int]:
    """How many keys the last query of a T-token prompt reads in each layer (its window + 1, or all T)."""
    return [T if w is None else min(T, w + 1) for w in model.window_sizes]


def then_now_from_traces(trace_a: Trace, trace_b: Trace, row: int = 0, lang: str = "en") -> ViewResult:
    """The then-and-now view of two recorded forwards of the same prompt by two different members (either order)."""
    then_model, _ = split_models(trace_a.model, trace_b.model)  # raises unless two different members
    then, now = (trace_a, trace_b) if trace_a.model is then_model else (trace_b, trace_a)
    if not torch.equal(then.idx.cpu(), now.idx.cpu()):
        raise ValueError("then and now compares the same prompt: the two traces have different token ids")
    if not 0 <= row < then.B:
        raise ValueError(f"row must be in 0..{then.B - 1}")
    T = then.T
    df, statuses = _table(then, now, row, lang)
    mt, mn = then.model, now.model
    ct, cn = mt.config, mn.config
    names = df["name"].tolist()
    label_then, label_now = f"nanochat {mt.member.name}", f"nanochat {mn.member.name}"

    # The figure: the residual stream's RMS stage by stage (aligned by name), and the keys each layer reads.
    fig = subplots(rows=2, cols=1, row_heights=[0.6, 0.4], vertical_spacing=0.2,
                   subplot_titles=[t("view.then_now.rms", lang), t("view.then_now.keys", lang, T=T)])
    stages = _residual_stages(names)
    by_name = df.set_index("name")
    for label, column, color in ((label_then, "rms_then", "#1a73e8"), (label_now, "rms_now", "#d93025")):
        y = [None if np.isnan(by_name.loc[s, column]) else float(by_name.loc[s, column]) for s in stages]
        fig.add_trace(go.Scatter(x=stages, y=y, mode="lines+markers", name=label, line=dict(color=color),
                                 connectgaps=False, hovertemplate=hover("view.then_now.hover_rms", lang)),
                      row=1, col=1)
    for label, model, color in ((label_then, mt, "#1a73e8"), (label_now, mn, "#d93025")):
        keys = _keys_read(model, T)
        fig.add_trace(go.Bar(x=list(range(len(keys))), y=keys, name=label, marker_color=color, showlegend=False,
                             hovertemplate=hover("view.then_now.hover_keys", lang)), row=2, col=1)
    fig.update_xaxes(tickangle=-60, tickfont=dict(size=9), row=1, col=1)
    fig.update_yaxes(title_text=t("view.then_now.rms_axis", lang), row=1, col=1)
    fig.update_xaxes(title_text=t("view.then_now.layer_axis", lang), dtick=1, row=2, col=1)
    fig.update_yaxes(title_text=t("view.then_now.keys_axis", lang), row=2, col=1)
    title = t("view.then_now.title", lang, T=T, old=label_then, new=label_now, L_old=ct.n_layer, L_new=cn.n_layer)
    fig.update_layout(base_layout(title, height=780, barmode="group", margin=dict(l=70, r=20, t=80, b=90),
                                  legend=dict(orientation="h", y=-0.14, x=0.5, xanchor="center")))
    fit_titles(fig)

    # The text: what the later member changed, with its numbers.
    n_status = {s: statuses.count(s) for s in ("same", "changed", "new", "only_then", "only_now")}
    values = dict(T=T, old=label_then, new=label_now, date_old=mt.member.date, date_new=mn.member.date,
                  L_old=ct.n_layer, L_new=cn.n_layer, C_old=ct.n_embd, C_new=cn.n_embd,
                  names_old=len(mt.recording_points()), names_new=len(mn.recording_points()),
                  **{f"n_{k}": v for k, v in n_status.items()})
    text = t("view.then_now.body", lang, **values)
    numbers = feature_values(cn, mn.features)
    text += "".join("\n" + feature_line(name, commit, numbers, lang)
                    for name, commit in CARD if getattr(mt.features, name) != getattr(mn.features, name))
    windows = mn.window_sizes
    s_layers = [i for i, w in enumerate(windows) if window_kind(w, cn.sequence_len) == "S"]
    short = min((windows[i] for i in s_layers), default=cn.sequence_len)
    if s_layers and T - 1 > short:
        text += t("view.then_now.window_bites", lang, T=T, keys_last=min(T, short + 1))
    fig = fig.figure()
    return ViewResult("then_now", title, df, fig, text)


def then_now_view(model_a: GPT, model_b: GPT, tokenizer, text_or_ids, lang: str = "en", row: int = 0) -> ViewResult:
    """The same prompt through two different members of the nanochat family (either order), stage by stage side by
    side. text_or_ids as for build_all; the ids must fit both models' vocabularies and contexts (ValueError
    otherwise)."""
    then, now = split_models(model_a, model_b)
    return then_now_from_traces(trace_forward(then, text_or_ids, tokenizer),
                                trace_forward(now, text_or_ids, tokenizer), row, lang)
