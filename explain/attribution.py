"""Why did it say that? Direct logit attribution: the pre-softcap logit of one token at one position, split into what
every part of the residual stream writes towards it.

The residual the final norm reads is a weighted sum of parts: where the stream starts (the normalized embedding, and
in a model with a smear the previous token's share, recorded as embed_smear − embed_norm) and every block's attention
and MLP output. Each part's weight is what the forward does to it after it is written: the lambdas of every later
block scale it (`GPT.mix`), and the backout subtracts λ times the residual kept after block backout_layer
(`GPT.apply_backout`). Both are linear, so the weights come from calling them on the weights themselves, as the
forward calls them on the residual. The final norm divides by the residual's RMS: its scale is read off the recorded
tensors (final_norm / the residual it normalized), and lm_head's row of the target (minus the contrast's) turns each
weighted part into a number. The rows (all but the heads) add up to the recorded pre-softcap logit; the softcap comes
after. Each attention output is split further into its heads (c_proj of one head's slice of y): the head rows of a
layer add up to its attention row. Value embeddings enter inside attention (they are added to v), so their share is
in the attention rows.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from explain.canvas import fit_titles, subplots
from explain.common import ViewResult, base_layout, bytes_note, hover, resolve_position
from explain.resume import SameTokens, check_token, final_residual
from explain.trace import Trace, next_labels, trace_forward
from gpt.nanochat import GPT
from text import t

COLUMNS = ["component", "kind", "layer", "head", "contribution", "weight"]
COLORS = {"embed": "#9aa0a6", "smear": "#5f6368", "attn": "#1a73e8", "mlp": "#d93025"}
MARGIN = dict(l=70, r=20, t=80, b=70)


def part_weights(model: GPT) -> torch.Tensor:
    """[1 + 2·n_layer] float64: the factor by which each part of the residual stream reaches the residual the final
    norm reads: x0 (where the stream starts), then attention and MLP output of each block in turn. The model's own
    mix and backout, applied to one-hot weights of the parts."""
    L = model.config.n_layer
    eye = torch.eye(1 + 2 * L, dtype=torch.float64, device=model.get_device())
    with torch.no_grad():
        w0 = w = eye[0]
        kept = None
        for i in range(L):
            w = model.mix(i, w, w0) + eye[1 + 2 * i] + eye[2 + 2 * i]  # a block adds its attention, then its MLP
            if i == model.backout_layer:
                kept = w
        if kept is not None:
            w = model.apply_backout(w, kept)
    return w.double()


@torch.no_grad()
def attribution_table(trace: Trace, position: int = -1, target: int | None = None, contrast: int | None = None,
                      row: int = 0) -> tuple[pd.DataFrame, dict]:
    """logit_attribution() of a trace you already have, and what the view says beside it: target, contrast, position,
    logit (the recorded pre-softcap logit, minus the contrast's), capped (the same after the softcap), total (the
    rows' sum), scale (the final norm's)."""
    model, rec, L = trace.model, trace.rec, trace.config.n_layer
    p = resolve_position(position, trace.T)
    check_token(model, target, "target")
    check_token(model, contrast, "contrast")
    if target is None:
        target = int(trace.logits[row, p].argmax())
    if contrast == target:
        raise SameTokens()
    unembed = model.lm_head.weight[target].double()
    if contrast is not None:
        unembed = unembed - model.lm_head.weight[contrast].double()
    x = rec[final_residual(model)][row, p].double()
    scale = float(rec["final_norm"][row, p].double() @ x / (x @ x))  # the final norm's 1 / RMS, as it was applied
    weights = part_weights(model).tolist()

    def logit_of(vectors: torch.Tensor) -> np.ndarray:  # [..., C] parts -> their logits (before the part's weight)
        return (vectors.double() @ unembed * scale).cpu().numpy()

    rows = []
    start = rec["embed_norm"][row, p]
    rows.append(("embed", "embed", -1, -1, float(logit_of(start)) * weights[0], weights[0]))
    if "embed_smear" in rec:  # the previous token's share, added to the embedding before block 0
        smear = rec["embed_smear"][row, p].double() - start.double()
        rows.append(("smear", "smear", -1, -1, float(logit_of(smear)) * weights[0], weights[0]))
    H = trace.config.n_head
    for i in range(L):
        block = model.transformer.h[i]
        w_attn, w_mlp = weights[1 + 2 * i], weights[2 + 2 * i]
        rows.append((f"L{i} attn", "attn", i, -1, float(logit_of(rec[f"blocks.{i}.attn.out"][row, p])) * w_attn,
                     w_attn))
        y = rec[f"blocks.{i}.attn.y"][row, :, p]  # [H, hd]: each head's output before c_proj
        alone = torch.block_diag(*y[:, None, :]).to(block.attn.c_proj.weight.dtype)  # [H, H·hd]: one head a row
        per_head = logit_of(block.attn.c_proj(alone)) * w_attn  # c_proj is linear: its heads add up to its output
        rows += [(f"L{i} H{h}", "head", i, h, float(per_head[h]), w_attn) for h in range(H)]
        rows.append((f"L{i} mlp", "mlp", i, -1, float(logit_of(rec[f"blocks.{i}.mlp.out"][row, p])) * w_mlp, w_mlp))
    df = pd.DataFrame(rows, columns=COLUMNS)
    raw = rec["logits_raw"][row, p].double()
    capped = rec["logits"][row, p].double()
    logit, capped_logit = float(raw[target]), float(capped[target])
    if contrast is not None:
        logit, capped_logit = logit - float(raw[contrast]), capped_logit - float(capped[contrast])
    info = dict(target=target, contrast=contrast, position=p, logit=logit, capped=capped_logit,
                total=float(df.loc[df["kind"] != "head", "contribution"].sum()), scale=scale)
    return df, info


def logit_attribution(model: GPT, ids, position: int = -1, target: int | None = None,
                      contrast: int | None = None) -> pd.DataFrame:
    """One row per part of the residual stream (`ids`: one row of token ids): component, kind ("embed", "smear",
    "attn", "head", "mlp"), layer and head (-1 where none), contribution (to the pre-softcap logit of `target` at
    `position`, minus `contrast`'s when given; target default: the model's top-1 there), weight (the factor the
    forward applies to the part after it is written: the later lambdas, the backout). The rows whose kind is not
    "head" add up to that logit; the head rows of a layer to its "attn" row. ValueError for a token outside the
    vocabulary or a position outside the prompt."""
    ids = list(ids)
    check_token(model, target, "target")
    check_token(model, contrast, "contrast")
    return attribution_table(trace_forward(model, [ids]), position, target, contrast)[0]


def attribution_view(trace: Trace, position: int = -1, target: int | None = None, contrast: int | None = None,
                     row: int = 0, lang: str = "en") -> ViewResult:
    """Contributions by layer (attention, MLP, and where the stream starts), a layer × head heatmap, and the rows'
    sum beside the real logit, before and after the softcap."""
    df, info = attribution_table(trace, position, target, contrast, row)
    model, L, H = trace.model, trace.config.n_layer, trace.config.n_head
    p = info["position"]
    ids, labels = trace.ids(row), trace.labels[row]
    name = lambda token: next_labels(trace.tokenizer, ids[: p + 1], [token])[0]  # noqa: E731
    target_name = name(info["target"])
    what = (t("view.attribution.diff", lang, target=target_name, contrast=name(info["contrast"]))
            if info["contrast"] is not None else t("view.attribution.logit", lang, target=target_name))
    title = t("view.attribution.title", lang, target=target_name, what=what, pos=p, token=labels[p])
    fig = subplots(rows=2, cols=2, specs=[[{"colspan": 2}, None], [{}, {}]], vertical_spacing=0.22,
                   horizontal_spacing=0.16, column_widths=[0.62, 0.38],
                   subplot_titles=[t("view.attribution.by_layer", lang), t("view.attribution.heads", lang),
                                   t("view.attribution.sum", lang)])
    layers = [t("view.attribution.start", lang)] + [str(i) for i in range(L)]
    for kind in ("embed", "smear", "attn", "mlp"):
        part = df[df["kind"] == kind]
        if part.empty:
            continue
        x = [layers[0]] * len(part) if kind in ("embed", "smear") else [layers[i + 1] for i in part["layer"]]
        fig.add_trace(go.Bar(x=x, y=part["contribution"], name=t(f"view.attribution.kind.{kind}", lang),
                             marker_color=COLORS[kind], customdata=part["weight"],
                             hovertemplate=hover("view.attribution.hover_bar", lang)), row=1, col=1)
    heads = df[df["kind"] == "head"]
    z = heads["contribution"].to_numpy(dtype=float).reshape(L, H)
    bound = float(np.abs(z).max()) or 1.0
    fig.add_trace(go.Heatmap(z=z, x=list(range(H)), y=list(range(L)), colorscale="RdBu", zmid=0, zmin=-bound,
                             zmax=bound, hovertemplate=hover("view.attribution.hover_head", lang)), row=2, col=1)
    sums = [t("view.attribution.rows_sum", lang), t("view.attribution.real", lang), t("view.attribution.capped", lang)]
    values = [info["total"], info["logit"], info["capped"]]
    fig.add_trace(go.Bar(x=sums, y=values, marker_color=["#1a73e8", "#188038", "#f9ab00"], showlegend=False,
                         text=[f"{v:.3f}" for v in values], textposition="inside",
                         hovertemplate=hover("view.attribution.hover_sum", lang)), row=2, col=2)
    fig.update_xaxes(title_text=t("view.attribution.layer", lang), row=1, col=1)
    fig.update_yaxes(title_text=t("view.attribution.contribution", lang), row=1, col=1)
    fig.update_xaxes(title_text=t("view.attribution.head", lang), row=2, col=1)
    fig.update_yaxes(title_text=t("view.attribution.layer", lang), autorange="reversed", row=2, col=1)
    fig.update_layout(base_layout(title, height=700, margin=dict(MARGIN), barmode="group"))
    fit_titles(fig)
    # the legend inside the bars' panel, the heatmap's colour bar beside the heatmap (not beside the sums)
    bars_top, heat_x = fig.layout["yaxis"]["domain"][1], fig.layout["xaxis2"]["domain"][1]
    heat_y = fig.layout["yaxis2"]["domain"]
    fig.update_layout(legend=dict(x=0.01, y=bars_top, yanchor="top", bgcolor="rgba(255,255,255,0.8)"))
    fig.update_traces(colorbar=dict(title=t("view.attribution.colorbar", lang), x=heat_x + 0.01, xanchor="left",
                                    len=heat_y[1] - heat_y[0], y=heat_y[0], yanchor="bottom", thickness=12),
                      selector=dict(type="heatmap"))
    body = df[df["kind"] != "head"]
    top, bottom = body.loc[body["contribution"].idxmax()], body.loc[body["contribution"].idxmin()]
    text = t("view.attribution.body", lang, what=what, pos=p, token=labels[p], total=info["total"],
             logit=info["logit"], capped=info["capped"], cap=f"{model.softcap:g}", scale=info["scale"],
             top=top["component"], top_value=top["contribution"], bottom=bottom["component"],
             bottom_value=bottom["contribution"])
    notes = [t("view.attribution.note_lambdas", lang)] if model.features.lambdas else []
    if model.backout_layer is not None:
        notes.append(t("view.attribution.note_backout", lang, mid=model.backout_layer,
                       lam=float(model.backout_lambda.float().item())))
    if any(model.has_value_embedding(i) for i in range(L)):
        notes.append(t("view.attribution.note_value_embeds", lang))
    if "embed_smear" in trace.rec:
        notes.append(t("view.attribution.note_smear", lang))
    df["target"] = info["target"]
    df["position"] = p
    fig = fig.figure()
    return ViewResult("attribution", title, df, fig, "\n\n".join([text, *notes]) + bytes_note(df, fig, lang))
