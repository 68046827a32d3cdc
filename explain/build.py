"""build_all: one call that records a forward and builds every view (what the UI calls)."""
from __future__ import annotations

from typing import Callable

from explain.attention import attention_view
from explain.attribution import attribution_view
from explain.causality import causality_view
from explain.commitment import commitment_view
from explain.common import ViewResult
from explain.generate import generate_view
from explain.kvcache import kv_cache_view
from explain.lens import logit_lens_view
from explain.mask import mask_view
from explain.nexttoken import next_token_view
from explain.rotary import rotary_view
from explain.shapes import shapes_view
from explain.softcap import softcap_view
from explain.trace import Trace, trace_forward
from explain.training import training_view
from gpt.nanochat import GPT

VIEWS = ("shapes", "rotary", "mask", "attention", "softcap", "next_token", "training", "causality", "logit_lens",
         "commitment", "attribution", "kv_cache", "generate")


def build_views(trace: Trace, lang: str = "en", *, layer: int = 0, head: int = 0, position: int = -1, row: int = 0,
                j: int | None = None, new_token: int | None = None, kv_steps: list[int] | None = None,
                gen_tokens: int = 4, temperature: float = 1.0, top_k: int | None = 50, seed: int = 42,
                views: tuple[str, ...] | None = None, cached: int = 0,
                next_ids: list[int] | None = None, target: int | None = None, contrast: int | None = None,
                between: Callable[[], None] = lambda: None) -> dict[str, ViewResult]:
    """Every view (or only `views`) of an existing trace, in VIEWS order. `between()` runs before each view (the app
    passes gpt.torch_thread.pause_point: a chat waiting for its next tokens gets them between two views).

    cached: the first `cached` positions are already in a KV cache (the tutorial's "[100, 200, 300] then [400]"):
    the shapes and rotary views show the call that feeds the other T - cached tokens at T0 = cached, and the KV-cache
    view feeds the prompt in those two pieces (unless kv_steps says otherwise). next_ids: the token after each row (as
    nanochat's loader fetches T + 1 a row): the training view then trains all B × T positions. target, contrast: the
    token ids the attribution view explains (default: the model's top-1 at `position`, no contrast)."""
    wanted = VIEWS if views is None else tuple(views)
    unknown = set(wanted) - set(VIEWS)
    if unknown:
        raise ValueError(f"unknown views {sorted(unknown)}; known: {VIEWS}")
    if not 0 <= cached < trace.T:
        raise ValueError(f"cached must be in 0..{trace.T - 1}, got {cached}")
    if cached and kv_steps is None:
        kv_steps = [cached, trace.T - cached]
    model = trace.model
    makers = {
        "shapes": lambda: shapes_view(model.config, model.member, trace.B, trace.T - cached, cached,
                                      model.lm_head.weight.dtype, lang),
        "rotary": lambda: rotary_view(model, trace.T - cached, cached, lang=lang),
        "mask": lambda: mask_view(trace.labels[row], lang=lang, windows=model.window_sizes,
                                  context=model.config.sequence_len),
        "attention": lambda: attention_view(trace, layer, head, row, position, lang=lang),
        "softcap": lambda: softcap_view(trace, position, row, lang=lang),
        "next_token": lambda: next_token_view(trace, position, row, lang=lang),
        "training": lambda: training_view(trace, row, lang=lang, next_ids=next_ids),
        "causality": lambda: causality_view(trace, j, new_token, row, lang=lang),
        "logit_lens": lambda: logit_lens_view(trace, row, position, lang=lang),
        "commitment": lambda: commitment_view(trace, row, lang=lang),
        "attribution": lambda: attribution_view(trace, position, target, contrast, row, lang=lang),
        "kv_cache": lambda: kv_cache_view(trace, kv_steps, lang=lang),
        "generate": lambda: generate_view(model, trace.ids(row), trace.tokenizer, gen_tokens, temperature, top_k,
                                          seed, lang=lang),
    }
    views = {}
    for name in VIEWS:
        if name in wanted:
            between()
            views[name] = makers[name]()
    return views


def build_all(model: GPT, tokenizer, text_or_ids, lang: str = "en", **options) -> dict[str, ViewResult]:
    """Record one forward of `text_or_ids` and build every view; `options` are those of build_views."""
    return build_views(trace_forward(model, text_or_ids, tokenizer), lang, **options)
