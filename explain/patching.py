"""Why did it say that? Activation patching: run the corrupt prompt, put back one piece of the clean run (one layer, one
position), and measure how much of the clean answer comes back.

The answer is m = logit(target) − logit(contrast) at the last position (the model's softcapped logits); a patch's
effect is (m_patched − m_corrupt) / (m_clean − m_corrupt): 1 when that piece alone restores the clean answer, 0 when
it changes nothing. Sites:
- "resid", layer l < n_layer: the residual stream entering block l at position p, with everything the forward still
  reads of position p from there on: the stream itself, where it started (the lambdas mix it back into every later
  block), the residual kept for the backout (once past it) and the token as the value embeddings read it. Layer 0 is
  the token itself, before anything mixes positions (the smear shares a token's embedding with the next one), so a
  one-token change at p is undone there at p alone. Layer n_layer: the residual the final norm reads.
- "attn" and "mlp", layer l: the output of block l's attention or MLP at position p.
Every patched run is the model's own: `run_blocks` resumed at block l from the corrupt run's recorded stream with row
p's position p taken from the clean run; an attention or MLP output is written into the forward at its recording
point (gpt/recorder.py: a tap may write). Rows patching different positions run as one batch, from the batch's first
patched position on: every position before it is the corrupt run's, read from its recording as a KV cache
(resume.RecordedPrefix). A piece the clean run has exactly as the corrupt run has it (at every position before the
first changed token) is not patched at all: writing what is already there changes nothing, its effect is exactly 0.
The head reads only the last position.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from explain.canvas import Canvas, fit_titles
from explain.common import APP_WIDTH, COLORBAR_PX, ViewResult, axis_px, base_layout, bytes_note, hover, position_axis
from explain.resume import (KeyBuffers, RecordedPrefix, SameTokens, check_token, final_residual, forward_last,
                            last_logits, run_from, stream_before)
from explain.trace import next_labels, sequence_labels, to_idx
from gpt.nanochat import GPT
from gpt.recorder import Recorder, no_tap
from text import t

SITES = ("resid", "attn", "mlp")
BATCH_TOKENS = 16384  # rows x tokens of one patched batch: memory stays bounded at any prompt length
# On a CPU (batch_rows): the positions of a layer are patched in up to PREFIX_CHUNKS batches, each from its first
# position on, each of at least MIN_BATCH_ROWS_TOKENS rows x tokens (fewer, larger ops: small ones cost more than
# their work on a CPU shared with other processes). A GPU takes batches of BATCH_TOKENS.
PREFIX_CHUNKS = 8
MIN_BATCH_ROWS_TOKENS = 512
MARGIN = dict(l=110, r=20, t=70, b=90)


def sweep_layers(model: GPT, site: str) -> int:
    """How many layers a sweep of `site` has: n_layer + 1 for "resid" (the last: the final residual), else n_layer."""
    if site not in SITES:
        raise ValueError(f"site must be one of {', '.join(SITES)}, got {site!r}")
    return model.config.n_layer + (site == "resid")


def sweep_flops(model: GPT, T: int, site: str) -> int:
    """At most the FLOPs of a sweep over every layer and position of T tokens: for layer l, T rows of T tokens through
    blocks l .. n_layer-1 (a share (L − l) / L of a forward; GPT.forward_flops counts it), plus the two recorded
    runs (the rows of a batch run only from its first patched position, and only the positions from the first changed
    token on are patched: a change in the middle of the prompt costs about a sixth of this)."""
    L = model.config.n_layer
    one = model.forward_flops(T)
    return 2 * one + sum(T * one * (L - layer) // L for layer in range(sweep_layers(model, site)))


def batch_rows(T: int, device: torch.device) -> int:
    """How many positions one batch of a sweep over T tokens patches (its rows), at most BATCH_TOKENS // T.

    A batch runs from its first patched position, so smaller batches waste less work on the positions before each
    row's own; but every batch costs the same ~20 operations per block whatever its size. On a CPU the work
    dominates: T / PREFIX_CHUNKS rows, and at least MIN_BATCH_ROWS_TOKENS rows x tokens. On a GPU the host issuing
    the kernels does: as many rows as memory allows (a d20's first-token sweep of 256 tokens on one H100 took
    1,103 ms in 4 batches a layer, 1,302 in 8 and 1,801 in 16: bench/results/why_cuda_h100_variants.log)."""
    floor = BATCH_TOKENS if device.type == "cuda" else MIN_BATCH_ROWS_TOKENS
    return max(1, min(BATCH_TOKENS // T, max(-(-T // PREFIX_CHUNKS), -(-floor // T))))


class NothingToRestore(ValueError):
    """The clean and corrupt prompts give the same answer (logit difference): no patch can restore anything."""

    def __init__(self) -> None:
        super().__init__("the clean and corrupt prompts give the same logit difference: there is nothing to restore")


def _pairs(model: GPT, clean_ids, corrupt_ids) -> tuple[torch.Tensor, torch.Tensor]:
    clean, corrupt = to_idx([list(clean_ids)], None, model), to_idx([list(corrupt_ids)], None, model)
    if clean.size(1) != corrupt.size(1):
        raise ValueError(f"the clean and corrupt prompts must have the same number of tokens, got {clean.size(1)} "
                         f"and {corrupt.size(1)}")
    return clean, corrupt


class _WriteAt:
    """A tap that writes clean values into one recording point of a batch: row r's position positions[r]."""

    def __init__(self, name: str, positions: torch.Tensor, values: torch.Tensor):
        self.name, self.positions, self.values = name, positions, values

    def __call__(self, name: str, tensor: torch.Tensor) -> None:
        if name == self.name:
            tensor[torch.arange(len(self.positions), device=tensor.device), self.positions] = self.values


def _with_clean(corrupt: torch.Tensor, clean: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """[R, T, ...]: the corrupt tensor [1, T, ...] once per row, row r's position positions[r] from the clean one."""
    out = corrupt.expand(len(positions), *corrupt.shape[1:]).clone()
    out[torch.arange(len(positions), device=out.device), positions] = clean[0, positions]
    return out


def _differs(model: GPT, site: str, layer: int, clean: torch.Tensor, corrupt: torch.Tensor, rec_clean: Recorder,
             rec_corrupt: Recorder) -> torch.Tensor:
    """[T] bool: the positions where the clean run's piece differs from the corrupt run's (elsewhere a patch writes
    what is already there: before the first changed token, every position of the two runs is the same)."""
    if site == "resid" and layer == 0:
        return clean[0] != corrupt[0]
    if site == "resid" and layer < model.config.n_layer:
        stream = stream_before(model, layer)
        names = [n for n in (stream.x, stream.x0, stream.kept) if n is not None]
        token = clean[0] != corrupt[0]  # the value embeddings read it
    else:
        names, token = [final_residual(model) if site == "resid" else f"blocks.{layer}.{site}.out"], False
    return torch.stack([(rec_clean[n][0] != rec_corrupt[n][0]).any(-1) for n in names]).any(0) | token


@torch.inference_mode()
def _patched_logits(model: GPT, site: str, layer: int, positions: torch.Tensor, start: int, clean: torch.Tensor,
                    corrupt: torch.Tensor, rec_clean: Recorder, rec_corrupt: Recorder, buffers: KeyBuffers
                    ) -> torch.Tensor:
    """[R, V]: the last position's logits of the corrupt run with row r patched at (layer, positions[r]) (on the
    device; start = positions[0], known to the host). Positions before the first patched one are the corrupt run's:
    they come from its recording (RecordedPrefix, its keys in `buffers`), not again."""
    L = model.config.n_layer
    if site == "resid" and layer == L:  # the residual the final norm reads: the head alone
        name = final_residual(model)
        return last_logits(model, _with_clean(rec_corrupt[name], rec_clean[name], positions), None)
    cache = RecordedPrefix(rec_corrupt, start, buffers) if start else None
    if site == "resid" and layer == 0:  # the token itself
        return forward_last(model, _with_clean(corrupt, clean, positions)[:, start:], cache=cache)
    stream = stream_before(model, layer)
    if site == "resid":  # the stream before block `layer`, row r's position positions[r] from the clean run
        take = lambda name: _with_clean(rec_corrupt[name], rec_clean[name], positions)[:, start:]  # noqa: E731
        idx, tap = _with_clean(corrupt, clean, positions)[:, start:], no_tap
    else:  # the corrupt stream; block `layer` then gets the clean attention (MLP) output written in at its point
        take = lambda name: rec_corrupt[name][:, start:].expand(len(positions), -1, -1)  # noqa: E731
        name = f"blocks.{layer}.{site}.out"
        idx = corrupt[:, start:].expand(len(positions), -1)
        tap = _WriteAt(name, positions - start, rec_clean[name][0, positions])
    return run_from(model, layer, take(stream.x), idx, take(stream.x0), take(stream.kept) if stream.kept else None,
                    tap, cache, last_only=site == "resid" or layer < L - 1)  # a write into the last block: all of it


@torch.inference_mode()
def patching_sweep(model: GPT, clean_ids, corrupt_ids, target: int, contrast: int, site: str = "resid"
                   ) -> pd.DataFrame:
    """One row per (layer, position): layer, position, effect = (patched − corrupt) / (clean − corrupt) of
    logit(target) − logit(contrast) at the last position, patching that one piece of the clean run into the corrupt
    one (see the module's docstring for the sites). ValueError for prompts of different token lengths, a token
    outside the vocabulary, or a pair whose clean and corrupt answers do not differ."""
    clean, corrupt = _pairs(model, clean_ids, corrupt_ids)
    if target is None or contrast is None:
        raise ValueError("patching needs a target and a contrast token")
    check_token(model, target, "target")
    check_token(model, contrast, "contrast")
    if target == contrast:
        raise SameTokens()
    n_layers = sweep_layers(model, site)
    rec_clean, rec_corrupt = Recorder(), Recorder()
    clean_logits, corrupt_logits = model(clean, recorder=rec_clean)[0, -1], model(corrupt, recorder=rec_corrupt)[0, -1]
    metric = lambda logits: logits[..., target].double() - logits[..., contrast].double()  # noqa: E731
    m_clean, m_corrupt = float(metric(clean_logits)), float(metric(corrupt_logits))
    if m_clean == m_corrupt:
        raise NothingToRestore()
    T = clean.size(1)
    chunk = batch_rows(T, clean.device)
    # a patch that writes what is already there changes nothing: exactly 0. Kept on the device until the end, so the
    # host queues the next batch while the device runs this one.
    effects = torch.zeros(n_layers, T, dtype=torch.float64, device=clean.device)
    for layer in range(n_layers):
        todo = _differs(model, site, layer, clean, corrupt, rec_clean, rec_corrupt).nonzero()[:, 0]
        starts = todo[::chunk].tolist()  # each batch's first position, for the host (one sync a layer)
        buffers = KeyBuffers(rec_corrupt, chunk)  # the batches of a layer share the recorded keys: latest start first
        for lo, start in reversed(list(zip(range(0, len(todo), chunk), starts))):
            positions = todo[lo:lo + chunk]
            patched = metric(_patched_logits(model, site, layer, positions, start, clean, corrupt, rec_clean,
                                             rec_corrupt, buffers))
            effects[layer, positions] = (patched - m_corrupt) / (m_clean - m_corrupt)
    df = pd.DataFrame({"layer": np.repeat(np.arange(n_layers), T), "position": np.tile(np.arange(T), n_layers),
                       "effect": effects.cpu().numpy().ravel()})
    df.attrs.update(clean=m_clean, corrupt=m_corrupt, target=target, contrast=contrast, site=site)
    return df


def default_pair_tokens(model: GPT, clean_ids, corrupt_ids) -> tuple[int, int]:
    """(target, contrast) when none are given: the clean prompt's top-1 at its last position, and the corrupt one's
    (the clean prompt's second choice when both are the same token)."""
    clean, corrupt = _pairs(model, clean_ids, corrupt_ids)
    with torch.inference_mode():
        a = forward_last(model, clean)[0].topk(2).indices.tolist()
        b = int(forward_last(model, corrupt)[0].argmax())
    return a[0], (b if b != a[0] else a[1])


def patching_view(model: GPT, tokenizer, clean_ids, corrupt_ids, target: int | None = None,
                  contrast: int | None = None, site: str = "resid", lang: str = "en") -> ViewResult:
    """Heatmap of the effect over layers × positions, the tokens that differ between the two prompts marked."""
    clean_ids, corrupt_ids = list(clean_ids), list(corrupt_ids)
    default_target, default_contrast = default_pair_tokens(model, clean_ids, corrupt_ids)
    target = default_target if target is None else target
    contrast = (default_contrast if default_contrast != target else default_target) if contrast is None else contrast
    df = patching_sweep(model, clean_ids, corrupt_ids, target, contrast, site)
    T, n_layers = len(clean_ids), sweep_layers(model, site)
    labels, corrupt_labels = sequence_labels(tokenizer, clean_ids), sequence_labels(tokenizer, corrupt_ids)
    differ = [p for p in range(T) if clean_ids[p] != corrupt_ids[p]]
    name = lambda token: next_labels(tokenizer, clean_ids, [token])[0]  # noqa: E731
    z = df["effect"].to_numpy(dtype=float).reshape(n_layers, T)
    rows = [t(f"view.patching.row_{site}", lang, i=i) for i in range(n_layers)]
    if site == "resid":
        rows[0], rows[-1] = t("view.patching.row_token", lang), t("view.patching.row_final", lang)
    bound = max(1.0, float(np.nanmax(np.abs(z))))
    x_labels = [f"{c}→{k}" if c != k else c for c, k in zip(labels, corrupt_labels)]
    title = t("view.patching.title", lang, site=t(f"view.patching.site_{site}", lang), target=name(target),
              contrast=name(contrast), T=T)
    fig = Canvas(base_layout(title, height=160 + 30 * n_layers, margin=dict(MARGIN)))
    fig.add_trace(go.Heatmap(z=z, x=list(range(T)), y=rows, colorscale="RdBu", zmid=0, zmin=-bound, zmax=bound,
                             customdata=np.array([x_labels] * n_layers, dtype=object),
                             colorbar=dict(title=t("view.patching.colorbar", lang)),
                             hovertemplate=hover("view.patching.hover", lang)))
    for p in differ:
        fig.add_vrect(x0=p - 0.5, x1=p + 0.5, line=dict(color="black", width=2))
    x_px = axis_px(APP_WIDTH, MARGIN["l"], MARGIN["r"] + COLORBAR_PX)
    fig.update_xaxes(position_axis(list(range(T)), x_labels, axis_px=x_px), title=t("view.patching.x", lang))
    fig.update_yaxes(autorange="reversed")
    fit_titles(fig)
    df["token_clean"] = [labels[p] for p in df["position"]]
    df["token_corrupt"] = [corrupt_labels[p] for p in df["position"]]
    best = df.loc[df["effect"].idxmax()]
    text = t("view.patching.body", lang, target=name(target), contrast=name(contrast), clean=df.attrs["clean"],
             corrupt=df.attrs["corrupt"], n=len(differ), T=T, site=t(f"view.patching.site_{site}", lang),
             best_layer=rows[int(best["layer"])], best_token=x_labels[int(best["position"])],
             best=float(best["effect"]))
    fig = fig.figure()
    return ViewResult("patching", title, df, fig, text + bytes_note(df, fig, lang))
