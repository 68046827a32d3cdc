"""View 10 — the KV cache: feeding the prompt in pieces through a cache gives the same logits as one full forward.

The pieces are chosen to hit all three attention regimes (prefill, a chunk after a prefix, single tokens). Each step
records where the rotary slice starts (T0 = what the cache already holds) and how the cache fills.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from explain.canvas import fit_titles, subplots
from explain.common import ViewResult, base_layout, bytes_note, constant_logits, hover, position_axis
from text import t
from explain.trace import Trace
from gpt.kv_cache import KVCache
from gpt.nanochat import GPT


def default_steps(T: int) -> list[int]:
    """Chunk sizes: half the prompt as prefill, then a chunk, then the last two tokens one at a time."""
    if T <= 1:
        return [T]
    first = max(1, T // 2)
    rest = T - first
    return [first] + ([rest - 2, 1, 1] if rest >= 3 else [1] * rest)


def regime(Tq: int, Tk: int) -> str:
    """Which of the model's three attention calls a step of Tq new tokens over Tk keys takes."""
    return "prefill" if Tq == Tk else "one_query" if Tq == 1 else "chunk"


@torch.inference_mode()
def incremental_logits(model: GPT, idx: torch.Tensor, steps: list[int]) -> tuple[torch.Tensor, list[dict]]:
    """Feed idx [B, T] through one KV cache in chunks of `steps` tokens: (logits [B, T, V] on the device, step log)."""
    if sum(steps) != idx.size(1) or min(steps) < 1:
        raise ValueError(f"steps {steps} must be positive and add up to the prompt length {idx.size(1)}")
    cache = KVCache.for_model(model, idx.size(0), idx.size(1))
    out, log, start = [], [], 0
    for n in steps:
        T0 = cache.get_pos()
        out.append(model(idx[:, start:start + n], kv_cache=cache))
        log.append(dict(T0=T0, Tq=n, Tk=T0 + n, regime=regime(n, T0 + n), rotary_slice=f"[{T0}:{T0 + n}]",
                        cache_pos_after=cache.get_pos()))
        start += n
    return torch.cat(out, dim=1), log


def kv_cache_view(trace: Trace, steps: list[int] | None = None, lang: str = "en") -> ViewResult:
    """Cache filling step by step (heatmap) and |incremental − full| logits per position (bars)."""
    T, cfg = trace.T, trace.config
    steps = default_steps(T) if steps is None else list(steps)
    logits, log = incremental_logits(trace.model, trace.idx, steps)
    diff = (logits - trace.logits).abs().amax(dim=-1).amax(dim=0).double().cpu().numpy()  # [T] scalars only
    df = pd.DataFrame(log)
    df.insert(0, "step", np.arange(1, len(log) + 1))
    df["max_abs_diff_vs_full"] = [float(diff[r["T0"]:r["Tk"]].max()) for r in log]
    df["new_tokens"] = [" ".join(trace.labels[0][r["T0"]:r["Tk"]]) for r in log]
    hd = cfg.n_embd // cfg.n_head
    bytes_per = trace.model.lm_head.weight.element_size()
    cache_bytes = cfg.n_layer * 2 * trace.B * cfg.n_kv_head * T * hd * bytes_per

    fill = np.zeros((len(log), T), dtype=np.int8)  # 0 empty, 1 already cached, 2 written by this step
    for s, r in enumerate(log):
        fill[s, :r["T0"]] = 1
        fill[s, r["T0"]:r["Tk"]] = 2
    steps_names = [t("view.kv_cache.step", lang, s=s + 1, T0=r["T0"], Tq=r["Tq"],
                     regime=t(f"view.kv_cache.{r['regime']}", lang)) for s, r in enumerate(log)]
    max_diff = float(diff.max())
    title = t("view.kv_cache.title", lang, n=len(log), diff=max_diff)
    fig = subplots(rows=2, cols=1, row_heights=[0.5, 0.5], vertical_spacing=0.16, shared_xaxes=True,
                   subplot_titles=[t("view.kv_cache.fill", lang), t("view.kv_cache.diff", lang)])
    x = np.arange(T)
    fig.add_trace(go.Heatmap(z=fill, x=x, y=steps_names, zmin=0, zmax=2, showscale=False, xgap=1, ygap=2,
                             colorscale=[[0, "#f1f3f4"], [0.5, "#aecbfa"], [1, "#1a73e8"]],
                             hovertemplate=hover("view.kv_cache.hover_fill", lang)), row=1, col=1)
    fig.add_trace(go.Bar(x=x, y=diff.astype(np.float32), marker_color="#9334e6", showlegend=False,
                         hovertemplate=hover("view.kv_cache.hover_diff", lang)), row=2, col=1)
    fig.update_yaxes(autorange="reversed", row=1, col=1)
    fig.update_yaxes(title_text=t("plot.max_dlogit", lang), row=2, col=1)
    fig.update_xaxes(position_axis(list(x), trace.labels[0], max_ticks=64), row=2, col=1)
    fig.update_layout(base_layout(title, height=560, margin=dict(l=200, r=20, t=70, b=90)))
    fit_titles(fig)
    text = t("view.kv_cache.body", lang, T=T, steps=" + ".join(map(str, steps)), diff=max_diff, L=cfg.n_layer,
             B=trace.B, Hkv=cfg.n_kv_head, hd=hd, kib=cache_bytes / 1024)
    if constant_logits(trace.logits):  # the check passes on such a model whatever the cache does: not shown as proof
        title = t("plot.vacuous_title", lang)
        fig.update_layout(title_text=title)
        text = t("plot.vacuous", lang) + "\n\n" + text
    fig = fig.figure()
    return ViewResult("kv_cache", title, df, fig, text + bytes_note(df, fig, lang, trace.labels[0],
                                                                    (trace.raw_labels or [None])[0]))
