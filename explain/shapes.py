"""View 1 — shapes and stages: every tensor of forward with its symbolic shape, concrete shape and dtype.

The shapes come from running the real GPT.forward on PyTorch's "meta" device (tensors with a shape and dtype but no
data) through the model's recorder. So any config and any B, T, T0 costs nothing and cannot run out of memory, and the
shapes are the model's own, not a second description of it.
"""
from __future__ import annotations

from dataclasses import replace

import pandas as pd
import plotly.graph_objects as go
import torch

from explain.canvas import Canvas
from explain.common import ViewResult, base_layout
from explain.family import feature_card_md
from text import t
from gpt.kv_cache import KVCache
from gpt.nanochat import GPT, GPTConfig, Member, new_model
from gpt.recorder import POINTS, Recorder

# Each recording point of the model (gpt.recorder.POINTS: its name and symbolic shape) -> (stage, the code that produces
# it). Block points are shown for block 0, which stands for every block (they all have the same shapes). Code None: no
# one expression, said in words (view.shapes.code.<...>).
_STAGE_CODE = {
    "rotary.cos": (1, "cos[:, T0:T0+T]"),
    "rotary.sin": (1, "sin[:, T0:T0+T]"),
    "embed": (2, "wte(idx)"),
    "embed_norm": (2, "norm(x)"),
    "embed_smear": (2, "x + smear_lambda·σ(smear_gate(x[:24]))·x[t-1]"),
    "blocks.{i}.input": (2, None),  # view.shapes.code.block_input
    "blocks.{i}.attn.ve": (2, "value_embeds[i](idx)"),
    "blocks.{i}.attn.ve_gate": (2, "{ve_scale:g}·σ(ve_gate(x[..., :{ve_channels}]))"),
    "blocks.{i}.attn.q": (2, "norm(rotary(c_q(norm(x))))"),
    "blocks.{i}.attn.k": (2, "norm(rotary(c_k(norm(x)))) (+ cache)"),
    "blocks.{i}.attn.v": (2, "c_v(norm(x)) (+ cache)"),
    "blocks.{i}.attn.y": (2, "softmax(q·kᵀ/√hd + mask)·v"),
    "blocks.{i}.attn.out": (2, "c_proj(y)"),
    "blocks.{i}.resid_mid": (2, "x + attn"),
    "blocks.{i}.mlp.hidden": (2, "relu(c_fc(norm(x)))²"),
    "blocks.{i}.mlp.out": (2, "c_proj(hidden)"),
    "blocks.{i}.output": (2, "x + mlp"),
    "backout": (2, "x − backout_lambda·x_mid"),
    "final_norm": (2, "norm(x)"),
    "logits_raw": (3, "lm_head(x)[..., :V]"),
    "logits": (3, "{cap:g}·tanh(logits_raw/{cap:g}).float()"),
}
_ACTIVATIONS = [(p.name.format(i=0), *_STAGE_CODE[p.name], p.shape) for p in POINTS]


def point_code(point: str, model: GPT, lang: str = "en") -> str:
    """The code that produces a recording point (its gpt.recorder.POINTS name, e.g. "blocks.{i}.attn.q") in `model`
    (with its own constants), or, where no one expression does, its words in `lang`."""
    code = _STAGE_CODE[point][1]
    return _with_constants(code, model) if code else t("view.shapes.code.block_input", lang)


def _with_constants(code: str, model: GPT) -> str:
    f = model.features
    return code.format(ve_scale=f.ve_gate_scale, ve_channels=f.ve_gate_channels, cap=f.softcap)
# Per-head slices, inserted after the tensor they slice: after -> (code, which head (its text is
# view.shapes.code.head_<which>), symbolic, head count attribute).
_PER_HEAD = {
    "blocks.0.attn.q": ("q[:, h]", "query", "[B, T, hd]", "n_head"),
    "blocks.0.attn.k": ("k[:, g]", "key", "[B, Tk, hd]", "n_kv_head"),
    "blocks.0.attn.v": ("v[:, g]", "value", "[B, Tk, hd]", "n_kv_head"),
}
_PARAMS = [
    (2, "transformer.wte.weight", "[V, C]"),
    (2, "transformer.h.0.attn.c_q.weight", "[H·hd, C]"),
    (2, "transformer.h.0.attn.c_k.weight", "[Hkv·hd, C]"),
    (2, "transformer.h.0.attn.c_v.weight", "[Hkv·hd, C]"),
    (2, "transformer.h.0.mlp.c_fc.weight", "[4C, C]"),
    (3, "lm_head.weight", "[V, C]"),
    # later members only (V is padded to a multiple of 64 there)
    (2, "value_embeds.0.weight", "[V, Hkv·hd]"),
    (2, "transformer.h.0.attn.ve_gate.weight", "[Hkv, c]"),
    (2, "smear_gate.weight", "[1, 24]"),
]
_DTYPE = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16", torch.int64: "int64",
          torch.float64: "float64"}


def _fmt(shape) -> str:
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


def _meta_model(config: GPTConfig, member: Member, dtype: torch.dtype) -> GPT:
    with torch.device("meta"):
        model = new_model(config, member)
    for p in model.parameters():  # parameters only: the rotary buffers keep the dtype the model gives them
        p.data = p.data.to(dtype)
    return model


def shape_table(config: GPTConfig, member: Member, B: int = 1, T: int = 5, T0: int = 0,
                dtype: torch.dtype = torch.float32, lang: str = "en") -> pd.DataFrame:
    """Every stage of forward for input [B, T] after T0 cached positions, in the nanochat `member`'s GPT of
    `config`: name, symbolic and concrete shape, dtype (descriptions, kind and branch in `lang`).

    Runs GPT.forward on the meta device twice: inference (recorded; with a KV cache prefilled with T0 positions when
    T0 > 0) and training (targets [B, T] -> the loss; only meaningful without a cache, so T0 = 0 there).
    """
    if B < 1 or T < 1 or T0 < 0:
        raise ValueError("need B >= 1, T >= 1, T0 >= 0")
    if T0 + T > 10 * config.sequence_len:
        raise ValueError(f"T0 + T = {T0 + T} exceeds the rotary table (10 x sequence_len)")
    # Every block has the same shapes, so one block is enough to run (meta ops still cost a little Python time).
    model = _meta_model(replace(config, n_layer=1), member, dtype)
    L = config.n_layer
    kv_cache = None
    if T0 > 0:
        kv_cache = KVCache.for_model(model, B, T0 + T)
        model(torch.zeros(B, T0, dtype=torch.long, device="meta"), kv_cache=kv_cache)
    rec = Recorder()
    idx = torch.zeros(B, T, dtype=torch.long, device="meta")
    logits = model(idx, kv_cache=kv_cache, recorder=rec)
    loss = model(idx, targets=idx)
    loss_none = model(idx, targets=idx, loss_reduction="none")

    rows = [dict(stage=2, name="idx", code=t("view.shapes.code.idx", lang), symbolic="[B, T]", concrete=_fmt(idx.shape),
                 dtype="int64", kind="input", branch="both")]
    names = set(dict(model.named_parameters()))
    for stage, name, sym in (p for p in _PARAMS if p[1] in names):
        rows.append(dict(stage=stage, name=name, code=t("view.shapes.code.parameter", lang), symbolic=sym,
                         concrete=_fmt(model.get_parameter(name).shape), dtype=_DTYPE[dtype], kind="parameter",
                         branch="both"))
    for name, stage, code, sym in (a for a in _ACTIVATIONS if a[0] in rec):
        x = rec[name]
        code = _with_constants(code, model) if code else t("view.shapes.code.block_input", lang)
        rows.append(dict(stage=stage, name=name, code=code, symbolic=sym,
                         concrete=_fmt(x.shape), dtype=_DTYPE[x.dtype], kind="activation", branch="both"))
        if name in _PER_HEAD:
            code_h, which, sym_h, count = _PER_HEAD[name]
            said = t(f"view.shapes.code.head_{which}", lang, code=code_h, n=getattr(config, count))
            rows.append(dict(stage=stage, name=name + " (one head)", code=said, symbolic=sym_h,
                             concrete=_fmt(x[:, 0].shape), dtype=_DTYPE[x.dtype], kind="per_head", branch="both"))
        if name == "blocks.0.attn.v":
            q, k = rec["blocks.0.attn.q"], rec["blocks.0.attn.k"]
            rows.append(dict(stage=stage, name="attention weights", code="softmax(q·kᵀ/√hd + mask)",
                             symbolic="[B, H, T, Tk]", concrete=_fmt((*q.shape[:3], k.shape[2])),
                             dtype=_DTYPE[q.dtype], kind="inside_sdpa", branch="both"))
        if name == "blocks.0.output" and L > 1:
            rows.append(dict(stage=2, name=f"blocks.1 … blocks.{L - 1}",
                             code=t("view.shapes.code.more_blocks", lang, n=L - 1), symbolic="[B, T, C]",
                             concrete=_fmt(x.shape), dtype=_DTYPE[x.dtype], kind="activation", branch="both"))
    rows += [
        dict(stage=4, name="return logits", code="targets=None", symbolic="[B, T, V]", concrete=_fmt(logits.shape),
             dtype=_DTYPE[logits.dtype], kind="output", branch="inference"),
        dict(stage=4, name="targets", code=t("view.shapes.code.targets", lang), symbolic="[B, T]",
             concrete=_fmt(idx.shape), dtype="int64", kind="input", branch="training"),
        dict(stage=4, name="loss", code="cross_entropy(logits.view(-1, V), targets.view(-1))", symbolic="[]",
             concrete=_fmt(loss.shape), dtype=_DTYPE[loss.dtype], kind="output", branch="training"),
        dict(stage=4, name="loss (loss_reduction='none')", code=t("view.shapes.code.loss_none", lang), symbolic="[B·T]",
             concrete=_fmt(loss_none.shape), dtype=_DTYPE[loss_none.dtype], kind="output", branch="training"),
    ]
    df = pd.DataFrame(rows)
    for column in ("kind", "branch"):  # identifiers above, words of `lang` in the table
        df[column] = [t(f"view.shapes.{column}.{value}", lang) for value in df[column]]
    return df.sort_values("stage", kind="stable").reset_index(drop=True)


def _flow_figure(df: pd.DataFrame, config: GPTConfig, member: Member, title: str, lang: str) -> go.Figure:
    """A box-and-arrow picture of forward, each box showing its symbolic and concrete shape."""
    shape_of = dict(zip(df["name"], zip(df["symbolic"], df["concrete"])))
    shapes, notes = [], []

    def box(x, y, w, label, name, color="#e8f0fe", h=0.72):
        sym, conc = shape_of[name]
        shapes.append(dict(type="rect", x0=x - w / 2, x1=x + w / 2, y0=y - h / 2, y1=y + h / 2,
                           fillcolor=color, line=dict(color="#5f6368", width=1)))
        notes.append(dict(x=x, y=y, text=f"<b>{label}</b><br>{sym} = {conc}", showarrow=False, font=dict(size=11)))

    def arrow(x0, y0, x1, y1):
        notes.append(dict(x=x1, y=y1, ax=x0, ay=y0, xref="x", yref="y", axref="x", ayref="y", text="",
                          showarrow=True, arrowhead=2, arrowsize=1, arrowwidth=1.2, arrowcolor="#5f6368"))

    # Later members grow up to three rows (the tutorial's picture has d1 = d2 = d3 = 0): the smear after the
    # embedding norm, the x0/resid mix at the block input (the value-embedding gate beside it, feeding v) and the
    # backout before the final norm. d1, d2, d3: how far everything after each new row moves down.
    f = member.features
    d1 = int(f.smear)
    d2 = d1 + int(f.lambdas)
    d3 = d2 + int(f.backout)
    # Stage bands (drawn first, behind the boxes) with their names on the right.
    for stage, (y0, y1), color in [(1, (0.5, -1.5), "#fef7e0"), (2, (-1.5, -10.5 - d3), "#e6f4ea"),
                                   (3, (-10.5 - d3, -12.5 - d3), "#fce8e6"), (4, (-12.5 - d3, -14.5 - d3), "#f3e8fd")]:
        shapes.append(dict(type="rect", x0=-0.2, x1=12.2, y0=y1, y1=y0, fillcolor=color, opacity=0.6,
                           line=dict(width=0), layer="below"))
        notes.append(dict(x=12.1, y=(y0 + y1) / 2, text=t(f"view.shapes.stage{stage}", lang), showarrow=False,
                          xanchor="right", textangle=-90, font=dict(size=11, color="#5f6368")))
    X = 5.5
    NEW_COLOR = "#fde7f3"  # the stages nanochat added since the tutorial
    box(X, 0, 4.2, "idx", "idx", "#ffffff")
    box(1.6, -1.0, 2.8, "cos, sin [T0:T0+T]", "rotary.cos", "#fff3c4")
    box(X, -2, 4.2, "wte(idx)", "embed")
    box(X, -3, 4.2, "norm", "embed_norm")
    if f.smear:
        box(X, -4, 4.2, "smear: x + λ·σ·x[t−1]", "embed_smear", NEW_COLOR)
    # The block, drawn once with its repeat count.
    shapes.append(dict(type="rect", x0=0.2, x1=10.8, y0=-9.5 - d2, y1=-3.55 - d1, line=dict(color="#188038", width=2,
                                                                                            dash="dot")))
    notes.append(dict(x=0.3, y=-3.75 - d1, text=f"<b>{t('view.shapes.block_repeat', lang, n=config.n_layer)}</b>",
                      showarrow=False, xanchor="left", font=dict(size=12, color="#188038")))
    trunk_y = -3.0 - d1  # the box that feeds q, k, v
    if f.lambdas:
        trunk_y = -4.5 - d1
        box(X, trunk_y, 4.2, "λr·x + λ0·x0", "blocks.0.input", NEW_COLOR)
    if "blocks.0.attn.ve_gate" in shape_of:
        box(9.25, trunk_y, 2.5, f"v += {f.ve_gate_scale:g}σ(gate)·ve", "blocks.0.attn.ve_gate", NEW_COLOR)
        arrow(9.25, trunk_y - 0.36, 9.25, -4.14 - d2)
    box(2.3, -4.5 - d2, 3.0, "q", "blocks.0.attn.q")
    box(5.5, -4.5 - d2, 3.0, "k", "blocks.0.attn.k")
    box(8.7, -4.5 - d2, 3.0, "v", "blocks.0.attn.v")
    box(X, -5.5 - d2, 6.0, "softmax(q·kᵀ/√hd + mask)", "attention weights", "#fff3c4")
    box(X, -6.5 - d2, 4.2, "y = weights·v", "blocks.0.attn.y")
    box(X, -7.5 - d2, 4.2, "x + c_proj(y)", "blocks.0.resid_mid")
    box(X, -8.5 - d2, 4.2, "MLP relu²", "blocks.0.mlp.hidden")
    if "backout" in shape_of:
        box(X, -10 - d2, 4.2, "backout: x − λ·x_mid", "backout", NEW_COLOR)
    box(X, -10 - d3, 4.2, "final norm", "final_norm")
    box(X, -11 - d3, 4.2, "lm_head", "logits_raw")
    box(X, -12 - d3, 4.2, f"softcap {f.softcap:g}·tanh(x/{f.softcap:g})", "logits")
    box(2.8, -13.5 - d3, 4.4, t("view.shapes.inference", lang), "return logits", "#ffffff")
    box(8.2, -13.5 - d3, 4.4, t("view.shapes.training", lang), "loss", "#ffffff")
    chain = [(0, -2), (-2, -3)] + ([(-3, -4)] if f.smear else []) + ([(-3 - d1, trunk_y)] if f.lambdas else [])
    chain += [(y0 - d2, y1 - d2) for y0, y1 in [(-5.5, -6.5), (-6.5, -7.5), (-7.5, -8.5), (-8.5, -10)]]
    chain += [(-10 - d2, -10 - d3)] if d3 > d2 else []
    chain += [(y0 - d3, y1 - d3) for y0, y1 in [(-10, -11), (-11, -12)]]
    for y0, y1 in chain:
        arrow(X, y0 - 0.36, X, y1 + 0.36)
    for x in (2.3, 5.5, 8.7):
        arrow(X, trunk_y - 0.36, x, -4.14 - d2)
    for x in (2.3, 5.5, 8.7):
        arrow(x, -4.86 - d2, X, -5.14 - d2)
    arrow(1.6, -1.36, 2.3, -4.14 - d2)   # rotary slice rotates q ...
    arrow(2.2, -1.36, 5.5, -4.14 - d2)   # ... and k
    arrow(X, -12.36 - d3, 2.8, -13.14 - d3)
    arrow(X, -12.36 - d3, 8.2, -13.14 - d3)
    fig = Canvas(base_layout(title, height=820 + int(55 * d3), shapes=shapes, annotations=notes,
                             showlegend=False, xaxis=dict(visible=False, range=[-0.3, 12.3]),
                             yaxis=dict(visible=False, range=[-14.6 - d3, 0.6])))
    fig.add_trace(go.Scatter(x=[0, 12], y=[0, -14 - d3], mode="markers", marker=dict(opacity=0), hoverinfo="skip"))
    return fig.figure()


def shapes_view(config: GPTConfig, member: Member, B: int = 1, T: int = 5, T0: int = 0,
                dtype: torch.dtype = torch.float32, lang: str = "en") -> ViewResult:
    """Shapes and stages for input [B, T] after T0 cached positions, on any config of any member (a loaded model:
    `shapes_view(model.config, model.member, ..., dtype=...)`)."""
    df = shape_table(config, member, B, T, T0, dtype, lang)
    hd = config.n_embd // config.n_head
    dims = dict(B=B, T=T, T0=T0, Tk=T0 + T, C=config.n_embd, H=config.n_head, Hkv=config.n_kv_head, hd=hd,
                V=config.vocab_size, L=config.n_layer)
    title = t("view.shapes.title", lang, **dims)
    fig = _flow_figure(df, config, member, title, lang)
    text = t("view.shapes.body", lang, **dims) + feature_card_md(config, member, lang)
    return ViewResult("shapes", title, df, fig, text)


TUTORIAL_CONFIG = GPTConfig(sequence_len=1024, vocab_size=50304, n_layer=4, n_head=4, n_kv_head=4, n_embd=128)
# The tutorial's three worked examples: (B, T, T0).
TUTORIAL_EXAMPLES = {"inference [2, 5]": (2, 5, 0), "training [2, 128]": (2, 128, 0),
                     "kv cache: [100, 200, 300] then [400]": (1, 1, 3)}
