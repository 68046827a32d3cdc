"""Issue 21's bars, timed as the app runs them: `python3 bench/whatif_bench.py [--device cuda --d20]`.

1. a token's alternatives (explain.branching.alternatives: one forward over the tokens before it, the chat's filters);
2. a 32-token branch through the batched server: time to its first token and to all 32, with the reply's keys/values
   kept (the server's prefix reuse) and, as the baseline in the same run, cold (a fresh server: the whole prompt
   computed);
3. commitment for 200 tokens (explain.commitment);
4. a view re-rendered from a recorded trace after a layer / head / position change (explain.build_views on a trace
   already recorded; each focus view alone, as the Inside tab redraws it).
Bars: on the 2-core CPU with the default model (float32): 1 and 2 < 300 ms, 3 < 1 s, 4 < 100 ms. On a GPU, a
d20-sized model (--d20, random weights: speed does not depend on their values) at 256 tokens: each < 100 ms.
Reported: medians of --repeats runs after a warm-up run; a table and JSON (bench/results/whatif_<device>.json).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import (D20, RESULTS, app_dtype, config_dict, machine_info, median,  # noqa: E402
                          model_under_test, n_params, random_weights, repeated_ids, synthetic_tokenizer,
                          table, write_json)
from explain.branching import alternatives  # noqa: E402
from explain.build import build_views  # noqa: E402
from explain.commitment import commitment  # noqa: E402
from explain.trace import trace_forward  # noqa: E402
from gpt.engine import Engine  # noqa: E402
from gpt.stream import SamplingParams  # noqa: E402

TEXT = "Once upon a time, a small model read a prompt one token at a time, and wrote down what came next. "
RERENDER = (("attention", dict(layer=1, head=1)), ("logit_lens", dict(position=-2)),
            ("next_token", dict(position=-3)), ("softcap", dict(position=-2)), ("commitment", {}))


def ids_of(tokenizer, T: int) -> list[int]:
    return repeated_ids(tokenizer, TEXT, T)


def timed(fn, repeats: int, sync) -> tuple[float, list[float]]:
    fn()  # warm-up
    runs = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        runs.append(time.perf_counter() - t0)
    return median(runs), runs


def branch_times(engine: Engine, prompt: list[int], params: SamplingParams) -> tuple[float, float, int]:
    """(seconds to the first token, seconds to the last, prompt tokens reused) of one streamed branch."""
    t0 = time.perf_counter()
    first, cached = None, 0
    for event in engine.stream(prompt, params):
        if event.token is not None and first is None:
            first = time.perf_counter() - t0
        cached = event.cached
    return first, time.perf_counter() - t0, cached


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--d20", action="store_true", help="a d20-sized random-weight model instead of the default")
    p.add_argument("--T", type=int, default=None, help="context length (default 64 for alternatives and branches on "
                                                       "the CPU, 256 with --d20); commitment uses 200 (256 with --d20)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    dtype = app_dtype(device)
    if args.d20:
        model, tok, name = random_weights(D20, device, dtype), synthetic_tokenizer(D20.vocab_size), "d20-sized, random"
    else:
        mut = model_under_test(device, dtype)
        model, tok, name = mut.model, mut.tokenizer, mut.name
    model.eval()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    T = args.T or (256 if args.d20 else 64)
    T_commit = 256 if args.d20 else 200
    info = machine_info(device)
    print(f"model: {name}, {str(dtype).replace('torch.', '')}, {n_params(model) / 1e6:.1f}M params; device {device}")

    rows = []
    params = SamplingParams(temperature=0.8, top_k=50, top_p=0.95, seed=7, max_tokens=32)
    context = ids_of(tok, T)
    s, runs = timed(lambda: alternatives(model, tok, context, params, context[-1]), args.repeats, sync)
    rows.append(dict(what=f"alternatives of a token after {T}", ms=s * 1e3, bar_ms=300 if not args.d20 else 100,
                     runs_ms=[r * 1e3 for r in runs]))

    # A reply of 32 tokens, then 32-token branches from its 16th token: kept (the same server) vs cold (a new one).
    engine = Engine(model, tok, batched=True, max_batch=4)
    for seed in range(7, 100):  # a seed whose reply goes past its 17th token (a chat model may end sooner)
        params = SamplingParams(temperature=0.8, top_k=50, top_p=0.95, seed=seed, max_tokens=32)
        reply = [e.token for e in engine.stream(context, params) if e.token is not None]
        if len(reply) > 16:
            break
    branch_prompt = context + reply[:16] + [(reply[16] + 1) % tok.vocab_size]
    warm, cold = [], []
    for k in range(args.repeats + 1):
        list(engine.stream(context, params))  # the reply again (its row's cache as the user left it)
        warm.append(branch_times(engine, branch_prompt, params))
        fresh = Engine(model, tok, batched=True, max_batch=4)
        cold.append(branch_times(fresh, branch_prompt, params))
    warm, cold = warm[1:], cold[1:]  # the first of each is the warm-up
    for label, got, bar in (("kept prefix", warm, True), ("cold (baseline)", cold, False)):
        rows.append(dict(what=f"32-token branch, first token, {label}", ms=median([g[0] for g in got]) * 1e3,
                         bar_ms=(300 if not args.d20 else 100) if bar else None, reused=got[0][2]))
        rows.append(dict(what=f"32-token branch, all 32, {label}", ms=median([g[1] for g in got]) * 1e3,
                         reused=got[0][2]))

    commit_ids = ids_of(tok, T_commit)
    s, runs = timed(lambda: commitment(model, commit_ids), args.repeats, sync)
    rows.append(dict(what=f"commitment for {T_commit} tokens", ms=s * 1e3, bar_ms=1000 if not args.d20 else 100,
                     runs_ms=[r * 1e3 for r in runs]))

    trace = trace_forward(model, ids_of(tok, 256 if args.d20 else 128), tok)
    for view, change in RERENDER:
        s, runs = timed(lambda: build_views(trace, "en", views=[view], **change), args.repeats, sync)
        rows.append(dict(what=f"re-render {view} ({', '.join(f'{k}={v}' for k, v in change.items()) or 'again'}) "
                              f"from a trace of {trace.T}", ms=s * 1e3, bar_ms=100, runs_ms=[r * 1e3 for r in runs]))

    for r in rows:
        r["pass"] = None if r.get("bar_ms") is None else r["ms"] < r["bar_ms"]
    print(table(rows, [("what", "what"), ("ms", "ms (median)"), ("bar_ms", "bar ms"), ("pass", "pass"),
                       ("reused", "prompt tokens reused")]))
    out = dict(benchmark="whatif", machine=info, model=dict(name=name, config=config_dict(model),
                                                            params=n_params(model),
                                                            dtype=str(dtype).replace("torch.", "")),
               repeats=args.repeats, rows=rows)
    path = args.out or RESULTS / f"whatif_{device.type}{'_d20' if args.d20 else ''}.json"
    print(f"wrote {write_json(path, out)}")
    return out


if __name__ == "__main__":
    main()
