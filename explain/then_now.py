"""Then and now — the same prompt through a nanochat of each version (November 2025, the tutorial's, and July 2026),
stage by stage side by side.

The table has one row per recorded name of either forward (gpt.recorder.point_names of each model), in forward
order, aligned by name where both record it: its shape in each model, the RMS of the recorded tensor (the row shown),
and whether the stage is the same computation, changed, or new in 2026. The figure follows the residual stream's RMS
through both forwards and shows how many keys each layer's last query reads (windows vs. the whole context). The text
explains what changed, with this pair of models' own numbers. Nothing is recomputed: every number is a recorded
tensor, a parameter or a config value.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from explain.common import ViewResult, base_layout, fit_titles, hover, layer_windows, subplots, window_kind
from explain.shapes import point_code
from text import t
from explain.trace import Trace, trace_forward
from gpt import model as model_2025
from gpt import model_2026
from gpt.recorder import POINTS, point_names

OLD, NEW = model_2025.ARCH, model_2026.ARCH
_BLOCK = re.compile(r"^blocks\.(\d+)\.")
_INDEX = {p.name: i for i, p in enumerate(POINTS)}
_FIRST_BLOCK = min(i for name, i in _INDEX.items() if name.startswith("blocks."))
_SYMBOLIC = {p.name: p.shape for p in POINTS}
_NEW_POINTS = {p.name for p in POINTS if p.arch == NEW}
# The shared points that the 2026 forward computes differently (the reason is view.then_now.note.<reason>); "v" and
# "y" change only on some layers (value-embedding layers, S layers), decided per layer below.
_CHANGED = {"rotary.cos": "rotary", "rotary.sin": "rotary", "blocks.{i}.input": "x0_mix",
            "blocks.{i}.attn.q": "qk_scale", "blocks.{i}.attn.k": "qk_scale", "final_norm": "after_backout",
            "logits_raw": "padded_vocab"}
_NEW_NOTE = {"embed_smear": "smear", "blocks.{i}.attn.ve_gate": "ve_gate", "backout": "backout"}


def point_of(name: str) -> tuple[str, int | None]:
    """A recorded name -> (its POINTS name, block index or None): "blocks.3.attn.q" -> ("blocks.{i}.attn.q", 3)."""
    m = _BLOCK.match(name)
    if m is None:
        return name, None
    return "blocks.{i}." + name[m.end():], int(m.group(1))


def _order(name: str) -> tuple[int, int, int]:
    point, i = point_of(name)
    return (_INDEX[point], 0, 0) if i is None else (_FIRST_BLOCK, i, _INDEX[point])


def split_models(model_a, model_b):
    """(the 2025 model, the 2026 model) of two models in either order; ValueError unless there is one of each."""
    archs = {model_a.arch, model_b.arch}
    if archs != {OLD, NEW}:
        raise ValueError(f"then and now needs one model of each architecture ({OLD} and {NEW}); "
                         f"got {model_a.arch} and {model_b.arch}")
    return (model_a, model_b) if model_a.arch == OLD else (model_b, model_a)


def _status_and_note(name: str, in_old: bool, in_new: bool, new_model) -> tuple[str, str | None]:
    point, i = point_of(name)
    if point in _NEW_POINTS:
        return "new", _NEW_NOTE[point]
    if not in_new:
        return "only_2025", None
    if not in_old:
        return "only_2026", None
    if point == "blocks.{i}.attn.v" and new_model.transformer.h[i].attn.ve_gate is not None:
        return "changed", "value_embed"
    if point == "blocks.{i}.attn.y" and window_kind(layer_windows(new_model)[i], new_model.config.sequence_len) == "S":
        return "changed", "window"
    if point in _CHANGED:
        return "changed", _CHANGED[point]
    return "same", None


@torch.inference_mode()
def _rms(trace: Trace, names: list[str], row: int) -> dict[str, float]:
    """RMS of each recorded tensor (row `row`; tensors with one row, the rotary tables, are shared by every row)."""
    rec = trace.rec
    rows = [rec[n][min(row, rec[n].size(0) - 1)] for n in names]  # a reduction each: no [T, V] copy is made
    values = torch.stack([torch.linalg.vector_norm(x, dtype=torch.float32) / x.numel() ** 0.5 for x in rows])
    return dict(zip(names, values.cpu().tolist()))


def then_now_table(old: Trace, new: Trace, row: int = 0, lang: str = "en") -> pd.DataFrame:
    """One row per recorded name of either forward (the 2025 trace `old`, the 2026 trace `new`), in forward order:
    name, status, code, symbolic, shape_2025, shape_2026, rms_2025, rms_2026, note (see the module's docstring)."""
    return _table(old, new, row, lang)[0]


def _table(old: Trace, new: Trace, row: int, lang: str) -> tuple[pd.DataFrame, list[str]]:
    names_old, names_new = point_names(old.model), point_names(new.model)
    rms_old, rms_new = _rms(old, names_old, row), _rms(new, names_new, row)
    rows, statuses = [], []
    for name in sorted(set(names_old) | set(names_new), key=_order):
        in_old, in_new = name in rms_old, name in rms_new
        status, note = _status_and_note(name, in_old, in_new, new.model)
        statuses.append(status)
        point, _ = point_of(name)
        rows.append(dict(name=name, status=t(f"view.then_now.status.{status}", lang), code=point_code(point, lang),
                         symbolic=_SYMBOLIC[point],
                         shape_2025=_fmt(old.rec[name].shape) if in_old else "",
                         shape_2026=_fmt(new.rec[name].shape) if in_new else "",
                         rms_2025=round(rms_old[name], 5) if in_old else np.nan,
                         rms_2026=round(rms_new[name], 5) if in_new else np.nan,
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
    return [T if w is None else min(T, w + 1) for w in layer_windows(model)]


def _layers(indices) -> str:
    return ", ".join(map(str, indices)) or "-"


def then_now_from_traces(trace_a: Trace, trace_b: Trace, row: int = 0, lang: str = "en") -> ViewResult:
    """The then-and-now view of two recorded forwards of the same prompt, one per architecture (either order)."""
    old, new = (trace_a, trace_b) if trace_a.model.arch == OLD else (trace_b, trace_a)
    split_models(old.model, new.model)  # raises unless one of each
    if not torch.equal(old.idx.cpu(), new.idx.cpu()):
        raise ValueError("then and now compares the same prompt: the two traces have different token ids")
    if not 0 <= row < old.B:
        raise ValueError(f"row must be in 0..{old.B - 1}")
    T = old.T
    df, statuses = _table(old, new, row, lang)
    mo, mn = old.model, new.model
    co, cn = mo.config, mn.config
    names = df["name"].tolist()

    # The figure: the residual stream's RMS stage by stage (aligned by name), and the keys each layer reads.
    fig = subplots(rows=2, cols=1, row_heights=[0.6, 0.4], vertical_spacing=0.2,
                   subplot_titles=[t("view.then_now.rms", lang), t("view.then_now.keys", lang, T=T)])
    stages = _residual_stages(names)
    by_name = df.set_index("name")
    for arch, column, color in ((OLD, "rms_2025", "#1a73e8"), (NEW, "rms_2026", "#d93025")):
        y = [None if np.isnan(by_name.loc[s, column]) else float(by_name.loc[s, column]) for s in stages]
        fig.add_trace(go.Scatter(x=stages, y=y, mode="lines+markers", name=arch, line=dict(color=color),
                                 connectgaps=False, hovertemplate=hover("view.then_now.hover_rms", lang)),
                      row=1, col=1)
    for arch, model, color in ((OLD, mo, "#1a73e8"), (NEW, mn, "#d93025")):
        keys = _keys_read(model, T)
        fig.add_trace(go.Bar(x=list(range(len(keys))), y=keys, name=arch, marker_color=color, showlegend=False,
                             hovertemplate=hover("view.then_now.hover_keys", lang)), row=2, col=1)
    fig.update_xaxes(tickangle=-60, tickfont=dict(size=9), row=1, col=1)
    fig.update_yaxes(title_text=t("view.then_now.rms_axis", lang), row=1, col=1)
    fig.update_xaxes(title_text=t("view.then_now.layer_axis", lang), dtick=1, row=2, col=1)
    fig.update_yaxes(title_text=t("view.then_now.keys_axis", lang), row=2, col=1)
    title = t("view.then_now.title", lang, T=T, old=OLD, new=NEW, L_old=co.n_layer, L_new=cn.n_layer)
    fig.update_layout(base_layout(title, height=780, barmode="group", margin=dict(l=70, r=20, t=80, b=90),
                                  legend=dict(orientation="h", y=-0.14, x=0.5, xanchor="center")))
    fit_titles(fig)

    # The text: what changed, with this pair's numbers.
    windows = layer_windows(mn)
    kinds = [window_kind(w, cn.sequence_len) for w in windows]
    s_layers = [i for i, k in enumerate(kinds) if k == "S"]
    short = min((windows[i] for i in s_layers), default=cn.sequence_len)
    ve_layers = [i for i, b in enumerate(mn.transformer.h) if b.attn.ve_gate is not None]
    gates = torch.stack([new.rec[f"blocks.{i}.attn.ve_gate"][row].float().mean() for i in ve_layers])
    smear_x, norm_x = new.rec["embed_smear"][row].float(), new.rec["embed_norm"][row].float()
    smear_change = ((smear_x - norm_x).pow(2).mean().sqrt() / norm_x.pow(2).mean().sqrt()).item()
    resid, x0 = (lam.detach().float().cpu().numpy() for lam in (mn.resid_lambdas, mn.x0_lambdas))
    n_status = {s: statuses.count(s) for s in ("same", "changed", "new", "only_2025", "only_2026")}
    q_rms = {n: by_name.loc["blocks.0.attn.q", c] for n, c in (("old", "rms_2025"), ("new", "rms_2026"))}
    values = dict(
        T=T, old=OLD, new=NEW, L_old=co.n_layer, L_new=cn.n_layer, C_old=co.n_embd, C_new=cn.n_embd,
        names_old=len(point_names(mo)), names_new=len(point_names(mn)), **{f"n_{k}": v for k, v in n_status.items()},
        pattern=cn.window_pattern, s_layers=_layers(s_layers), l_layers=_layers(i for i, k in enumerate(kinds)
                                                                               if k == "L"),
        S=short, context=cn.sequence_len, keys_last=min(T, short + 1), n_window=short + 1,
        ve_layers=_layers(ve_layers), gate=float(gates.mean()),
        smear_lambda=float(mn.smear_lambda.float().item()), smear_change=smear_change,
        resid_lo=float(resid.min()), resid_hi=float(resid.max()), x0_lo=float(x0.min()), x0_hi=float(x0.max()),
        mid=mn.backout_layer, backout_lambda=float(mn.backout_lambda.float().item()),
        V_old=co.vocab_size, V_new=cn.vocab_size, Vp=mn.lm_head.weight.size(0),
        base_old=model_2025.ROTARY_BASE, base_new=model_2026.ROTARY_BASE,
        q_old=float(q_rms["old"]), q_new=float(q_rms["new"]), qk_scale=model_2026.QK_SCALE,
        sharper=model_2026.QK_SCALE ** 2)
    text = t("view.then_now.body", lang, **values)
    which = "none" if not s_layers else "bites" if T - 1 > short else "fits"
    text += t(f"view.then_now.window_{which}", lang, **values)
    return ViewResult("then_now", title, df, fig, text)


def then_now_view(model_a, model_b, tokenizer, text_or_ids, lang: str = "en", row: int = 0) -> ViewResult:
    """The same prompt through a model of each architecture (either order: one nanochat-2025-11, one
    nanochat-2026-07), stage by stage side by side. text_or_ids as for build_all; the ids must fit both models'
    vocabularies and contexts (ValueError otherwise)."""
    old, new = split_models(model_a, model_b)
    return then_now_from_traces(trace_forward(old, text_or_ids, tokenizer), trace_forward(new, text_or_ids, tokenizer),
                                row, lang)
