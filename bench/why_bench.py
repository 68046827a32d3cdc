"""How long "why did it say that?" takes: `python3 bench/why_bench.py`.

Issue 22's bars: the default model on a 2-core CPU, a 32-token prompt: the logit attribution (its recorded forward
included) < 200 ms, a patching sweep of the residual stream over every layer x position < 3 s, integrated gradients
with 64 steps < 2 s; a d20-sized model on a GPU (`--model d20 --device cuda`: random weights, nanochat's d20 shape,
bfloat16), 256 tokens: each < 1 s. Each is the function the app calls (explain.logit_attribution, patching_sweep,
saliency), timed alone (median of --repeats runs after one warm-up run); the figure of each view is timed beside it
(what the Inside tab adds: the view, its text, the default tokens). The clean prompt is <|bos|> and a text; the corrupt
one changes one token in its middle, and, for the sweep's worst case, the first token after <|bos|> (a sweep patches
only the positions from the first changed token on). Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import (D20, DTYPES, RESULTS, app_dtype, busy_warning, config_dict, loadavg,  # noqa: E402
                          machine_info, median, model_under_test, n_params, random_weights, synthetic_tokenizer,
                          table, time_by_name, write_json)
from explain.attribution import attribution_view, logit_attribution  # noqa: E402
from explain.patching import default_pair_tokens, patching_sweep, patching_view  # noqa: E402
from explain.saliency import saliency, saliency_view  # noqa: E402
from explain.trace import trace_forward  # noqa: E402

TEXT = "He is a good man, and she is a good woman. Once upon a time, a small model read a prompt one token at a time. "
BARS = {"cpu": dict(attribution=0.2, resid_sweep=3.0, resid_sweep_first_token=3.0, saliency=2.0),
        "cuda": dict(attribution=1.0, resid_sweep=1.0, resid_sweep_first_token=1.0, saliency=1.0)}


def prompts(tokenizer, T: int, changed: int) -> tuple[list[int], list[int]]:
    """<|bos|> and TEXT (repeated as needed), exactly T ids; the same with the token at `changed` changed."""
    body = tokenizer.encode(TEXT)
    clean = [tokenizer.bos_token_id]
    while len(clean) < T:
        clean += body
    clean = clean[:T]
    corrupt = list(clean)
    corrupt[changed] = (clean[changed] + 1) % tokenizer.vocab_size
    return clean, corrupt


def timed(fn, repeats: int, sync) -> dict:
    """Median wall and CPU seconds (this process, every thread) of `repeats` runs after one warm-up run, and the
    warm-up's wall seconds. On a machine other processes load, wall time grows with their load and CPU time much
    less: with one torch thread, CPU time is about what the wall time would be with the core to itself."""
    def once() -> tuple[float, float]:
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        sync()
        return time.perf_counter() - t0, time.process_time() - c0
    warm = once()[0]
    runs = [once() for _ in range(repeats)]
    return dict(seconds=median([r[0] for r in runs]), cpu_seconds=median([r[1] for r in runs]),
                warmup_seconds=warm, runs=[r[0] for r in runs])


def profile_of(fn, device: torch.device, top: int = 20) -> dict:
    """One run of fn under torch.profiler: where its time goes, by operation (on a GPU the kernels and their GPU
    time, on a CPU the ATen operations and their own CPU time), largest first: what a faster version must cut."""
    from torch.profiler import ProfilerActivity, profile
    gpu = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CUDA if gpu else ProfilerActivity.CPU]) as prof:
        fn()
        if gpu:
            torch.cuda.synchronize()
    rows = [dict(op=n, calls=c, us=t) for n, c, t in time_by_name(prof, gpu, width=80)]
    total = sum(r["us"] for r in rows)
    for r in rows:
        r["share"] = r["us"] / total if total else 0.0
    return dict(kind="GPU kernels" if gpu else "CPU operations (self time)", total_us=total,
                calls=sum(r["calls"] for r in rows), top=rows[:top])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--T", type=int, default=None, help="prompt length (default: 32 on a CPU, 256 on a GPU)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=64, help="integrated gradients' steps")
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="default", choices=("default", "d20"),
                   help="default: the shipped model; d20: random weights in nanochat's d20 shape")
    p.add_argument("--dtype", default="auto", choices=["auto", *DTYPES],
                   help="auto = what the app serves in (gpt.checkpoint.default_dtype)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quick", action="store_true", help="T=8, 1 repeat, 4 steps (for tests)")
    p.add_argument("--profile", action="store_true",
                   help="also profile one run of the worst-case sweep: its time by kernel (GPU) or operation (CPU)")
    p.add_argument("--out", default=None, help="JSON path (default: bench/results/why_<device>.json)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if args.quick:
        args.T, args.repeats, args.steps = 8, 1, 4
    T = args.T or (32 if device.type == "cpu" else 256)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = app_dtype(device, args.dtype)
    if args.model == "d20":
        model, tok, name, standin = random_weights(D20, device, dtype), synthetic_tokenizer(D20.vocab_size), \
            "random weights, nanochat d20 shape", False
    else:
        mut = model_under_test(device, dtype)
        model, tok, name, standin = mut.model, mut.tokenizer, mut.name, mut.standin
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    info = machine_info(device)
    print(f"model: {name}, {str(dtype).replace('torch.', '')}; config: {config_dict(model)}  params: "
          f"{n_params(model) / 1e6:.1f}M\nmachine: {info['nproc']} x {info['cpu_model']}, torch {info['torch']} "
          f"({info['torch_threads']} threads), device {device}")
    if busy_warning(info):
        print(busy_warning(info))

    clean, corrupt = prompts(tok, T, T // 2)
    _, early = prompts(tok, T, 1)  # the worst case: every position from the first token after <|bos|> on differs
    target, contrast = default_pair_tokens(model, clean, corrupt)
    runs = {
        "attribution": lambda: logit_attribution(model, clean),
        "attribution_view": lambda: attribution_view(trace_forward(model, [clean], tok)),
        "resid_sweep": lambda: patching_sweep(model, clean, corrupt, target, contrast, "resid"),
        "resid_sweep_first_token": lambda: patching_sweep(model, clean, early, target, contrast, "resid"),
        "patching_view": lambda: patching_view(model, tok, clean, corrupt, site="resid"),
        "saliency": lambda: saliency(model, clean, steps=args.steps),
        "saliency_view": lambda: saliency_view(model, tok, clean, steps=args.steps),
    }
    bars = BARS["cuda" if device.type == "cuda" else "cpu"]
    rows, results = [], {}
    for key, fn in runs.items():
        m = timed(fn, args.repeats, sync)
        bar = bars.get(key)
        results[key] = dict(m, bar_seconds=bar, passes=None if bar is None else m["seconds"] < bar)
        rows.append(dict(what=key, ms=m["seconds"] * 1e3, cpu_ms=m["cpu_seconds"] * 1e3,
                         warm_ms=m["warmup_seconds"] * 1e3, bar="" if bar is None else
                         f"< {bar * 1e3:.0f} ms: {'pass' if m['seconds'] < bar else 'FAIL'}"))
    print(f"\nT = {T} tokens, {model.config.n_layer} layers; sweep: {model.config.n_layer + 1} x {T} patches; "
          f"saliency: {args.steps} steps; median of {args.repeats} runs after a warm-up run")
    print(table(rows, [("what", "what"), ("ms", "wall ms"), ("cpu_ms", "CPU ms"), ("warm_ms", "warm-up ms"),
                       ("bar", "bar (wall)")]))
    prof = None
    if args.profile:
        prof = profile_of(runs["resid_sweep_first_token"], device)
        print(f"\nthe worst-case sweep, profiled once: {prof['total_us'] / 1e3:,.1f} ms of {prof['kind']}, "
              f"{prof['calls']:,} calls")
        print(table([dict(r, share=f"{r['share']:.1%}") for r in prof["top"]],
                    [("op", "operation"), ("calls", "calls"), ("us", "µs"), ("share", "share")]))
    info["loadavg_end"] = loadavg()
    out = dict(benchmark="why", machine=info, model=dict(name=name, standin=standin, config=config_dict(model),
                                                         params=n_params(model), dtype=str(dtype).replace("torch.", "")),
               T=T, steps=args.steps, repeats=args.repeats, results=results, profile=prof)
    print(f"wrote {write_json(args.out or RESULTS / f'why_{device.type}.json', out)}")
    return out


if __name__ == "__main__":
    main()
