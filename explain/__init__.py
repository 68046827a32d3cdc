"""explain/: record one forward pass of the model and turn it into tables and Plotly figures, in any language.

Entry point (what the UI calls)::

    from explain import build_all
    views = build_all(model, tokenizer, "The cat sat", lang="en", layer=0, head=0, position=-1)
    views["attention"].df, views["attention"].fig, views["attention"].text   # pandas, plotly, Markdown

`build_all(model, tokenizer, text_or_ids, lang="en", **options) -> dict[str, ViewResult]` records one forward
(`trace_forward`) and builds every view of `VIEWS`; `build_views(trace, lang, **options)` does the same for a trace
you already have (re-use it when only layer/head/position change). text_or_ids: a string (needs the tokenizer),
a list of ids, a list of lists [B][T] or a tensor [B, T]; tokenizer may be None (labels become "#id").
Options: layer, head, position (-1 = last), row (batch row shown), j and new_token (causality), kv_steps (chunk sizes),
cached (positions already in a KV cache: the tutorial's T0),
gen_tokens, temperature, top_k, seed (generate), views (a subset of VIEWS).
`ViewResult(name, title, df, fig, text)`; every function raises ValueError with a readable message on bad input.

The views, one function each (all take lang="en", or any code of text.LANGS):
 1 shapes      shapes_view(config, member, B=1, T=5, T0=0)            stages, symbolic/concrete shapes, flow diagram
               shape_table(config, member, B, T, T0, dtype) -> DataFrame;  TUTORIAL_CONFIG, TUTORIAL_EXAMPLES
 2 rotary      rotary_view(model, T, T0=0)                            cos/sin tables and the slice [T0:T0+T]
 3 mask        mask_view(labels, chunk=None, windows=None, context=None) the three causal-mask regimes (+ the
               S layers' sliding-window band over the whole prompt, for a model with windows and a prompt longer than them)
 4 attention   attention_view(trace, layer, head, row=0, position=-1) weights from recorded q, k (and the layer's
               window: S or L in a model with windows)
               attention_weights(trace, layer) -> [B, H, Tq, Tk] tensor
 5 softcap     softcap_view(trace, position=-1, row=0)                15·tanh(x/15), raw vs capped
 6 next_token  next_token_view(trace, position=-1, row=0, k=10)       top-k per position, entropy, real next token
               next_token_stats(trace, row, k) -> dict of arrays
 7 training    training_view(trace, row=0)                            per-position CE, mean == forward(idx, targets)
 8 causality   causality_view(trace, j=None, new_token=None, row=0)   change token j: exactly 0 change before j
 9 logit_lens  logit_lens_view(trace, row=0, position=-1)             every layer read through GPT.head (with the
               backout after block backout_layer in a model with one)
               lens_logits(trace, layer, row) -> [T, V] tensor
10 kv_cache    kv_cache_view(trace, steps=None)                       incremental == full, how the cache fills
               incremental_logits(model, idx, steps)
11 generate    generate_view(model, tokens, tokenizer, max_tokens=8, temperature=1.0, top_k=50, seed=42)
               generate_steps(...) watches GPT.generate step by step;
               generation_flops(model, prompt_len, n_new) (GPT.flops_per_token counts); generate_time_view(model, tokens, lengths=(4, 8, 16, 32))
               measures naive vs cached wall time (call it on request: it runs the model many times).
12 then_now    then_now_view(model_a, model_b, tokenizer, text_or_ids, lang="en", row=0)  not in VIEWS: it needs
               two different nanochat versions (either order); the same prompt through both, stage by stage: every
               recorded name of each forward aligned by name (shape, RMS, same / changed / new in the later one), the
               residual stream's RMS and each layer's keys read (windows), what the later version adds, in words.
               then_now_from_traces(trace_a, trace_b, row=0, lang="en") for two traces you already have;
               then_now_table(trace_then, trace_now, row, lang) -> DataFrame.
13 family      feature_card_md(config, member, lang) (explain/family.py): which nanochat a model is, and what it adds.
14 commitment  commitment(model, ids) -> DataFrame; commitment_view(trace, row=0): the first lens layer from which
               each position's answer is settled (top-1, top-3, p > 0.5), a strip over the text (in VIEWS)
15 compare     compare_models(model_a, model_b, ids) -> DataFrame (top-1 of each, KL(p_a || p_b), agree);
               compare_view(trace_a, trace_b, name_a, name_b, position=-1): KL per position, both top-k at one
16 attribution logit_attribution(model, ids, position=-1, target=None, contrast=None) -> DataFrame (component, kind,
               layer, head, contribution, weight): the pre-softcap logit split into what each part of the residual
               stream writes towards it (the later lambdas and the backout in each part's weight, the final norm's
               scale as it was); attribution_view(trace, position, target, contrast) (in VIEWS)
17 patching    patching_sweep(model, clean_ids, corrupt_ids, target, contrast, site="resid") -> DataFrame (layer,
               position, effect); patching_view(model, tokenizer, clean_ids, corrupt_ids, target=None, contrast=None,
               site="resid"): not in VIEWS (it needs a second prompt), a heatmap over layers × positions
18 saliency    saliency(model, ids, position=-1, target=None, method="integrated_gradients", steps=64) -> DataFrame
               (position, score); saliency_view(model, tokenizer, ids, ...): not in VIEWS (64 forwards and backwards),
               the prompt coloured by score, integrated gradients' completeness beside it
               (explain/resume.py: the model's own stages, resumed from a recorded residual stream, for these three)

Rules: explain/ never re-implements the model. It reads the recorder's tensors (gpt/recorder.py) and calls the model's
own functions and answers (forward, head, causal_mask_for, window_sizes, softcap); the one derived quantity is the
attention weights,
softmax(q·kᵀ/√hd + mask) from recorded q, k. Top-k and other reductions run on the model's device: full [T, V] logits
never leave it. Long prompts are windowed (the last positions up to `position`) or aggregated, and titles say so.
All text lives in text/: one TOML file per language, read through text.t(key, lang).
"""
from explain.attention import attention_view, attention_weights
from explain.attribution import attribution_view, logit_attribution
from explain.build import VIEWS, build_all, build_views
from explain.causality import causality_view
from explain.commitment import commitment, commitment_view
from explain.compare import compare_models, compare_view
from explain.common import ViewResult
from explain.generate import (generate_steps, generate_time_view, generate_view, generation_flops)
from explain.kvcache import incremental_logits, kv_cache_view
from explain.lens import lens_logits, logit_lens_view
from explain.mask import mask_view
from explain.nexttoken import next_token_stats, next_token_view
from explain.patching import patching_sweep, patching_view
from explain.rotary import rotary_view
from explain.saliency import saliency, saliency_view
from explain.shapes import TUTORIAL_CONFIG, TUTORIAL_EXAMPLES, shape_table, shapes_view
from explain.softcap import softcap_view
from explain.then_now import then_now_from_traces, then_now_table, then_now_view
from explain.trace import Trace, trace_forward
from explain.training import training_view

__all__ = ["VIEWS", "Trace", "ViewResult", "attention_view", "attention_weights", "attribution_view",
           "logit_attribution", "patching_sweep", "patching_view", "saliency", "saliency_view", "build_all",
           "build_views",
           "causality_view", "commitment", "commitment_view", "compare_models", "compare_view", "generate_steps", "generate_time_view", "generate_view",
           "generation_flops", "incremental_logits", "kv_cache_view", "lens_logits", "logit_lens_view", "mask_view",
           "next_token_stats", "next_token_view", "rotary_view", "shape_table", "shapes_view", "softcap_view",
           "then_now_from_traces", "then_now_table", "then_now_view", "trace_forward", "training_view",
           "TUTORIAL_CONFIG", "TUTORIAL_EXAMPLES"]
