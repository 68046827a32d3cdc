"""View 11 — generation step by step, and what naive generation costs against a KV cache.

`generate_steps` runs GPT.generate itself and watches each step through its `on_step` callback, keeping the top of
the distribution it sampled from. Cost is shown two ways: counted FLOPs (`GPT.flops_per_token`,
from the config alone) and wall time measured on the actual model (`generate_time_view`, on request).
"""
from __future__ import annotations

import contextlib
import time
from typing import Callable, ContextManager

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
import torch.nn.functional as F

from explain.canvas import Canvas, fit_titles, subplots
from explain.common import (ViewResult, base_layout, bytes_note, fit_label, hover, np32, rank_and_ties, rank_text,
                            text_units, wrap)
from text import t
from explain.trace import next_labels, sequence_labels
from gpt.detok import StreamDecoder
from gpt.nanochat import GPT, GPTConfig


@torch.inference_mode()
def generate_steps(model: GPT, tokens: list[int], max_tokens: int, temperature: float = 1.0,
                   top_k: int | None = None, seed: int = 42, show_k: int = 10) -> list[dict]:
    """Runs GPT.generate itself and keeps, per step (through its on_step callback): the sampled token, the top
    `show_k` of the distribution it was drawn from (after top-k and temperature; at temperature 0 the softmax of the
    filtered logits, and argmax picks), its rank in that distribution and how many other tokens tie with it
    (explain.common.rank_and_ties), how many tokens had non-zero probability, and the entropy. Full distributions stay
    on the device."""
    steps: list[dict] = []

    def record(logits: torch.Tensor, probs: torch.Tensor | None, token: int) -> None:
        probs = F.softmax(logits, dim=-1) if probs is None else probs
        top_p, top_ids = probs[0].topk(min(show_k, probs.size(-1)))
        rank, tied = rank_and_ties(probs[0], torch.tensor(token, device=probs.device))
        steps.append(dict(step=len(steps) + 1, context=len(tokens) + len(steps), token=token,
                          p_token=float(probs[0, token]), rank=int(rank), tied=int(tied),
                          candidates=int((probs[0] > 0).sum()), entropy=float(torch.special.entr(probs[0]).sum()),
                          top_ids=top_ids.tolist(), top_p=np32(top_p, 5)))

    for _ in model.generate(tokens, max_tokens, temperature, top_k, seed, on_step=record):
        pass
    return steps


def generation_flops(model: GPT, prompt_len: int, n_new: int) -> tuple[int, int]:
    """(naive, cached) FLOPs to generate n_new tokens after a prompt of prompt_len (the model counts its own:
    GPT.forward_flops).

    Naive (GPT.generate) runs a full forward of length P, P+1, ..., P+n-1: the prefix is recomputed every step, so
    the total grows quadratically with n. Cached: one prefill of P tokens, then n-1 one-token forwards: linear in n
    (apart from attention over the growing cache, which is the same in both).
    """
    naive = sum(model.forward_flops(prompt_len + s) for s in range(n_new))
    cached = model.forward_flops(prompt_len) + sum(model.forward_flops(1, prompt_len + s) for s in range(n_new - 1))
    return naive, cached


def _cost_lengths(config: GPTConfig, prompt_len: int, n_max: int = 64) -> list[int]:
    room = max(1, config.sequence_len - prompt_len)
    return sorted({n for n in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if n <= min(n_max, room)} | {min(n_max, room)})


def generated_pieces(tokenizer, prompt: list[int], new: list[int]) -> tuple[list[str], str]:
    """The text each of the `new` tokens completes after `prompt` (gpt.detok.StreamDecoder: "" for a token that only
    begins a character, the whole character on the token that ends it, never U+FFFD for a character the tokens
    complete), and the bytes still waiting for the rest of a character after the last one ("" when none). A token
    the tokenizer does not have (a padded vocab) is "#id"."""
    decoder = StreamDecoder(tokenizer)
    for i in prompt:
        decoder.push(i)
    pieces = []
    for i in new:
        try:
            pieces.append(decoder.push(i))
        except ValueError:  # past the tokenizer's vocabulary
            pieces.append(decoder.flush() + f"#{i}")
    return pieces, decoder.pending.hex()


def running_text(tokenizer, prompt: list[int], chosen: list[int]) -> list[tuple[str, str]]:
    """The generated tokens as the running text's spans: each token's text as it completes characters (a byte token
    that only begins a character adds nothing until the token that ends it; never "�" for a completed character), a
    special token as its name in a span of its own (category "special": the explanation says what it means), and "…"
    for the bytes of a character still incomplete after the last token."""
    pieces, pending = generated_pieces(tokenizer, prompt, chosen)
    spans = []
    for i, piece in zip(chosen, pieces):
        special = i < tokenizer.vocab_size and tokenizer.is_special(i)
        if piece:
            spans.append((piece, "special" if special else "new"))
    if pending:
        spans.append(("…", "new"))
    return spans


def specials_note(tokenizer, ids: list[int], lang: str) -> str:
    """A paragraph naming each special token among `ids` and what it means in nanochat's chat format; "" when none.
    The tutorial's generate does not stop at them: it goes on with whatever the model predicts next."""
    if tokenizer is None:
        return ""
    found = []
    for i in ids:
        if i < tokenizer.vocab_size and tokenizer.is_special(i):
            name = tokenizer.token_bytes(i).decode()
            if name not in found:
                found.append(name)
    if not found:
        return ""
    lines = "\n".join(f"- `{name}`{t('view.generate.special_sep', lang)}{t('special.' + name.strip('<|>'), lang)}" for name in found)
    return "\n\n" + t("view.generate.specials", lang) + "\n\n" + lines


LABEL_UNITS = 34  # a line of a step's row label at most (text_units): the heatmap keeps most of a 600-px figure
HEAT_PX = 310  # the heatmap's height in a figure 760 px high


def generate_view(model: GPT, tokens: list[int], tokenizer=None, max_tokens: int = 8, temperature: float = 1.0,
                  top_k: int | None = 50, seed: int = 42, show_k: int = 10, lang: str = "en") -> ViewResult:
    """Steps x top-k heatmap of what generate sampled from (the chosen token outlined), and counted FLOPs of naive
    vs cached generation for growing lengths."""
    if not tokens:
        raise ValueError("generation needs a prompt of at least one token")
    max_tokens = max(0, min(max_tokens, model.config.sequence_len - len(tokens)))
    steps = generate_steps(model, tokens, max_tokens, temperature, top_k, seed, show_k)
    chosen = [s["token"] for s in steps]
    # labels read in context: a token that completes a character the tokens before it began shows the character
    chosen_names = sequence_labels(tokenizer, tokens + chosen)[len(tokens):]
    candidates = [next_labels(tokenizer, tokens + chosen[:k], s["top_ids"]) for k, s in enumerate(steps)]
    rows = []
    for k, s in enumerate(steps):
        for r, (i, p) in enumerate(zip(s["top_ids"], s["top_p"]), start=1):
            rows.append(dict(step=s["step"], context=s["context"], rank=r, token_id=i, token=candidates[k][r - 1],
                             prob=float(p), sampled=i == s["token"], chosen_id=s["token"],
                             chosen_token=chosen_names[k], p_chosen=s["p_token"], rank_chosen=s["rank"],
                             tied_chosen=s["tied"], candidates=s["candidates"], entropy=s["entropy"]))
    df = pd.DataFrame(rows, columns=["step", "context", "rank", "token_id", "token", "prob", "sampled", "chosen_id",
                                     "chosen_token", "p_chosen", "rank_chosen", "tied_chosen", "candidates",
                                     "entropy"])
    df["temperature"], df["top_k"], df["seed"] = temperature, top_k or 0, seed

    lengths = _cost_lengths(model.config, len(tokens))
    flops = [generation_flops(model, len(tokens), n) for n in lengths]
    if tokenizer is None:
        text_so_far = "".join(chosen_names)
    else:
        pieces, pending = generated_pieces(tokenizer, tokens, chosen)
        text_so_far = "".join(pieces) + ("…" if pending else "")
    greedy = temperature == 0  # argmax: no draw, the seed plays no part (GPT.generate)
    settings = dict(seed=seed, temperature=temperature, top_k=top_k or t("view.generate.off", lang))
    title = t("view.generate.title_greedy" if greedy else "view.generate.title", lang, n=len(steps), **settings)
    fig = subplots(rows=2, cols=1, row_heights=[0.62, 0.38], vertical_spacing=0.18,
                   subplot_titles=[t("view.generate.heat", lang), t("view.generate.cost", lang, P=len(tokens))])
    left = 130  # margin for the step labels
    height = 760
    if steps:
        z = np.stack([s["top_p"] for s in steps])
        cell = np.array([[fit_label(name, 8) for name in c] for c in candidates], dtype=object)
        # a sampled token not among the shown top (below them, or tied with more than are shown) gets no red box:
        # its row label says where it was
        y = ["<br>".join(wrap(t("view.generate.step", lang, s=s["step"], token=fit_label(chosen_names[k], 12)) + (
            t("view.generate.below", lang, where=rank_text(s["rank"], s["tied"], model.config.vocab_size, lang),
              p=s["p_token"]) if s["token"] not in s["top_ids"] else ""), LABEL_UNITS)) for k, s in enumerate(steps)]
        lines = [label.split("<br>") for label in y]
        left = max(left, 7 * max(text_units(line) for label in lines for line in label) + 16)  # 7 px a Latin glyph
        # at 12 px, a CJK one 14: no label cut; and 16 px a line of every label: none overlaps the next
        height += max(0, 16 * sum(map(len, lines)) - HEAT_PX) / (0.62 * 0.82)
        fig.add_trace(go.Heatmap(z=z, x=np.arange(1, z.shape[1] + 1), y=y, text=cell, texttemplate="%{text}",
                                 textfont=dict(size=9), colorscale="Oranges", zmin=0, zmax=1,
                                 colorbar=dict(len=0.55, y=0.75),
                                 hovertemplate=hover("view.generate.hover", lang)), row=1, col=1)
        hit = [(s["top_ids"].index(s["token"]) + 1, y[k]) for k, s in enumerate(steps) if s["token"] in s["top_ids"]]
        fig.add_trace(go.Scatter(x=[h[0] for h in hit], y=[h[1] for h in hit], mode="markers",
                                 name=t("view.generate.sampled", lang), hoverinfo="skip",
                                 marker=dict(symbol="square-open", size=18, color="#d93025", line=dict(width=2))),
                      row=1, col=1)
        fig.update_yaxes(autorange="reversed", row=1, col=1)
        fig.update_xaxes(title_text=t("view.generate.rank", lang), dtick=1, row=1, col=1)
    for k, (key, color) in enumerate((("naive", "#d93025"), ("cached", "#188038"))):
        fig.add_trace(go.Scatter(x=lengths, y=[f[k] / 1e9 for f in flops], mode="lines+markers",
                                 name=t(f"view.generate.{key}", lang), line=dict(color=color)), row=2, col=1)
    fig.update_xaxes(title_text=t("view.generate.n_new", lang), row=2, col=1)
    fig.update_yaxes(title_text="GFLOP", row=2, col=1)
    fig.update_layout(base_layout(title, height=int(height), legend=dict(orientation="h", y=-0.1),
                                  margin=dict(l=left, r=20, t=70, b=80)))
    fit_titles(fig)
    n_last = lengths[-1]
    draw = t("view.generate.draw_greedy" if greedy else "view.generate.draw_sampled", lang, **settings)
    text = t("view.generate.body", lang, P=len(tokens), n=n_last, naive=flops[-1][0] / 1e9, cached=flops[-1][1] / 1e9,
             ratio=flops[-1][0] / max(1, flops[-1][1]), draw=draw, text=text_so_far)
    text += specials_note(tokenizer, chosen, lang)
    labels = sequence_labels(tokenizer, tokens + chosen)
    raw = None if tokenizer is None else tokenizer.token_labels(tokens + chosen)
    fig = fig.figure()
    return ViewResult("generate", title, df, fig, text + bytes_note(df, fig, lang, labels, raw))


def generate_time_view(model: GPT, tokens: list[int], lengths: tuple[int, ...] = (4, 8, 16, 32),
                       lang: str = "en", clock: Callable[[], float] = time.perf_counter,
                       timed: Callable[[], ContextManager] = contextlib.nullcontext) -> ViewResult:
    """Measured time (on this machine and model) of GPT.generate without and with its KV cache, both greedy, for
    growing numbers of new tokens; with their counted FLOPs alongside. `clock` reads the time and `timed()` is
    entered around each measurement: the app passes gpt.torch_thread's work_clock (the time other users' chats take
    in between is not counted) and module_pause_points (the cheaper pause points, so that their cost is not what is
    measured)."""
    if not tokens:
        raise ValueError("timing needs a prompt of at least one token")
    room = model.config.sequence_len - len(tokens)
    lengths = [n for n in lengths if 1 <= n <= room]
    if not lengths:
        raise ValueError(f"no room to generate: the prompt already fills {len(tokens)} of {room + len(tokens)}")
    list(model.generate(tokens, 1, temperature=0, use_cache=True))  # warm-up (first call allocates)
    rows = []
    for n in lengths:
        with timed():
            t0 = clock()
            naive_out = list(model.generate(tokens, n, temperature=0))
            t1 = clock()
            cached_out = list(model.generate(tokens, n, temperature=0, use_cache=True))
            t2 = clock()
        f_naive, f_cached = generation_flops(model, len(tokens), n)
        rows.append(dict(n_new=n, naive_s=t1 - t0, cached_s=t2 - t1, speedup=(t1 - t0) / max(t2 - t1, 1e-9),
                         naive_gflop=f_naive / 1e9, cached_gflop=f_cached / 1e9, same_tokens=naive_out == cached_out))
    df = pd.DataFrame(rows)
    title = t("view.generate_time.title", lang, P=len(tokens), device=str(model.get_device()))
    fig = Canvas(base_layout(title, height=420, legend=dict(orientation="h", y=-0.2)))
    for key, column, color in (("naive", "naive_s", "#d93025"), ("cached", "cached_s", "#188038")):
        fig.add_trace(go.Scatter(x=df["n_new"], y=df[column] * 1000, mode="lines+markers",
                                 name=t(f"view.generate.{key}", lang), line=dict(color=color)))
    fig.update_xaxes(title_text=t("view.generate.n_new", lang))
    fig.update_yaxes(title_text="ms")
    last = rows[-1]
    text = t("view.generate_time.body", lang, n=last["n_new"], naive=last["naive_s"] * 1000,
             cached=last["cached_s"] * 1000, speedup=last["speedup"])
    fig = fig.figure()
    return ViewResult("generate_time", title, df, fig, text)
