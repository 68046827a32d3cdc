"""How long "Inside forward" takes to build, and how big its figures are: `python3 bench/explain_bench.py`.

The issue's bar: with the default model on a 2-core CPU, building the trace and every figure for a 128-token prompt
takes under 1 s, and all figures together serialize to under 3 MB of JSON. This script times exactly the calls the app
makes (explain.trace_forward, then explain.build_views one view at a time, as build_all would), serializes each figure
with fig.to_json() (what Gradio ships to the browser), and repeats for a prompt that fills the model's whole context
to show the cost stays bounded. This process runs all of that on one thread, as the app does on a CPU
(gpt/torch_thread.py); then the bar prompt again with another thread that has run torch still alive, as it would be
without that (see bench.common.start_idle_torch_thread). Reported: the median of --repeats runs after one
warm-up run (the first call in a process also pays plotly's lazy imports; that cold time is reported separately).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import (D20, DTYPES, RESULTS, ModelUnderTest, app_dtype, busy_warning, config_dict, loadavg,  # noqa: E402
                          machine_info, median, model_under_test, n_params, random_weights, repeated_ids,
                          start_idle_torch_thread, synthetic_tokenizer, table, write_json)
from explain.build import VIEWS, build_views  # noqa: E402
from explain.trace import trace_forward  # noqa: E402

BAR_SECONDS = 1.0
BAR_BYTES = 3_000_000
GPU_BARS = {128: 0.4, 1024: 0.5}  # issue 25: every view of a d20-sized model on a GPU, at T=128 and T=1024 (seconds)
TEXT = ("Once upon a time, a small model read a prompt one token at a time. "
        "今天天气不错，我们一起去公园散步吧。 "
        "It looked back at every earlier position, never forward, and wrote down what came next. ")


def prompt_ids(tokenizer, T: int) -> list[int]:
    """<|bos|> followed by the tokens of TEXT (repeated as needed), exactly T ids."""
    return repeated_ids(tokenizer, TEXT, T)


def one_run(model, tokenizer, ids: list[int], lang: str, views: tuple[str, ...]) -> dict:
    """Trace, then each view, each figure's JSON: seconds and bytes."""
    t0 = time.perf_counter()
    trace = trace_forward(model, ids, tokenizer)
    trace_s = time.perf_counter() - t0
    view_s, json_s, json_bytes = {}, {}, {}
    for name in views:
        t1 = time.perf_counter()
        result = build_views(trace, lang, views=(name,))[name]
        t2 = time.perf_counter()
        payload = result.fig.to_json()
        t3 = time.perf_counter()
        view_s[name], json_s[name], json_bytes[name] = t2 - t1, t3 - t2, len(payload.encode("utf-8"))
    return dict(trace_s=trace_s, view_s=view_s, json_s=json_s, json_bytes=json_bytes,
                build_s=trace_s + sum(view_s.values()), serialize_s=sum(json_s.values()),
                total_bytes=sum(json_bytes.values()))


def measure(model, tokenizer, T: int, repeats: int, lang: str, views: tuple[str, ...]) -> dict:
    ids = prompt_ids(tokenizer, T)
    warm = one_run(model, tokenizer, ids, lang, views)
    runs = [one_run(model, tokenizer, ids, lang, views) for _ in range(repeats)]
    med = lambda f: median([f(r) for r in runs])  # noqa: E731
    return dict(
        T=T, repeats=repeats, warmup_build_s=warm["build_s"],
        trace_s=med(lambda r: r["trace_s"]),
        view_s={v: med(lambda r: r["view_s"][v]) for v in views},
        json_s={v: med(lambda r: r["json_s"][v]) for v in views},
        json_bytes=runs[-1]["json_bytes"],  # deterministic: the same prompt gives the same figures
        build_s=med(lambda r: r["build_s"]),
        serialize_s=med(lambda r: r["serialize_s"]),
        build_and_serialize_s=med(lambda r: r["build_s"] + r["serialize_s"]),
        total_bytes=runs[-1]["total_bytes"],
        build_s_runs=[r["build_s"] for r in runs],
    )


def print_result(m: dict, label: str) -> None:
    rows = [dict(step="trace_forward", build_ms=m["trace_s"] * 1e3)]
    rows += [dict(step=v, build_ms=m["view_s"][v] * 1e3, json_ms=m["json_s"][v] * 1e3,
                  json_kb=m["json_bytes"][v] / 1e3) for v in m["view_s"]]
    rows.append(dict(step="TOTAL", build_ms=m["build_s"] * 1e3, json_ms=m["serialize_s"] * 1e3,
                     json_kb=m["total_bytes"] / 1e3))
    print(f"\n{label}: T = {m['T']}, median of {m['repeats']} runs after a warm-up run "
          f"(warm-up build {m['warmup_build_s'] * 1e3:.0f} ms; a process's first run also pays plotly's lazy imports)")
    print(table(rows, [("step", "step"), ("build_ms", "build ms"), ("json_ms", "to_json ms"),
                       ("json_kb", "JSON kB")]))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--T", type=int, default=128, help="prompt length for the bar (default 128)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--lang", default="en", choices=("en", "zh"))
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--dtype", default="auto", choices=["auto", *DTYPES],
                   help="auto = what the app serves in (gpt.checkpoint.default_dtype)")
    p.add_argument("--no-long", action="store_true", help="skip the full-context prompt")
    p.add_argument("--quick", action="store_true", help="T=32, 1 repeat, no long prompt (for tests)")
    p.add_argument("--device", default="cpu", help="cpu (the default model, the 1 s bar) or cuda (with --d20)")
    p.add_argument("--d20", action="store_true", help="a d20-sized random-weight model (issue 25's GPU bars: all "
                                                      "views < 400 ms at T=128, < 500 ms at T=1024)")
    p.add_argument("--out", default=None, help="JSON path (default: bench/results/explain_<device>[_d20].json)")
    args = p.parse_args(argv)
    if args.quick:
        args.T, args.repeats, args.no_long = 32, 1, True
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    dtype = app_dtype(device, args.dtype)
    if args.d20:
        mut = ModelUnderTest(random_weights(D20, device, dtype), synthetic_tokenizer(D20.vocab_size),
                             "random weights, nanochat d20 shape", False)
        model, tok = mut.model, mut.tokenizer
        lengths = [args.T, 1024]
    else:
        mut = model_under_test(device, dtype)
        model, tok = mut.model, mut.tokenizer
        lengths = [min(args.T, model.config.sequence_len)]
        if not args.no_long and model.config.sequence_len > lengths[0]:
            lengths.append(model.config.sequence_len)
    info = machine_info(device)
    print(f"model: {mut.name}, {str(dtype).replace('torch.', '')}" + (f"\n  ({mut.note})" if mut.note else ""))
    print(f"config: {config_dict(model)}  params: {n_params(model) / 1e6:.1f}M  "
          f"machine: {info['nproc']} x {info['cpu_model']}, torch {info['torch']} ({info['torch_threads']} threads)")
    if busy_warning(info):
        print(busy_warning(info))

    results = []
    for T in lengths:
        m = measure(model, tok, T, args.repeats, args.lang, VIEWS)
        print_result(m, "bar prompt" if T == lengths[0] else "full context")
        results.append(dict(m, torch_threads_alive=1))
    if args.d20:  # the GPU bars: all views at each length
        bars = [dict(T=m["T"], build_s=m["build_s"], bar_s=GPU_BARS.get(m["T"]),
                     passes=m["build_s"] < GPU_BARS[m["T"]] if m["T"] in GPU_BARS else None) for m in results]
        for b in bars:
            print(f"d20, T={b['T']}: every view {b['build_s'] * 1e3:.0f} ms (bar < {(b['bar_s'] or 0) * 1e3:.0f} ms: "
                  f"{'pass' if b['passes'] else 'FAIL'})")
        out = dict(benchmark="explain", machine=machine_info(device) | dict(loadavg_end=loadavg()),
                   model=dict(name=mut.name, config=config_dict(model), params=n_params(model),
                              dtype=str(dtype).replace("torch.", "")), lang=args.lang, views=list(VIEWS), bars=bars,
                   results=results)
        print(f"wrote {write_json(args.out or RESULTS / f'explain_{device.type}_d20.json', out)}")
        return out
    # Without the app's one torch thread, views would be built in a pool thread while other threads have run torch
    # too: measure that last (it cannot be undone in this process; see bench.common.start_idle_torch_thread).
    start_idle_torch_thread()
    m = measure(model, tok, lengths[0], args.repeats, args.lang, VIEWS)
    print_result(m, "bar prompt, another torch thread alive (not the app's way)")
    results.append(dict(m, torch_threads_alive=2))

    info["loadavg_end"] = loadavg()
    verdict = {}
    for key, bar in (("alone", results[0]), ("threads", results[-1])):
        verdict[key] = dict(T=bar["T"], build_s=bar["build_s"], build_pass=bar["build_s"] < BAR_SECONDS,
                            json_bytes=bar["total_bytes"], json_pass=bar["total_bytes"] < BAR_BYTES,
                            build_and_serialize_s=bar["build_and_serialize_s"])
        print(f"\nbar (T={bar['T']}, {key}): build {bar['build_s'] * 1e3:.0f} ms "
              f"({'pass' if verdict[key]['build_pass'] else 'FAIL'}, < {BAR_SECONDS * 1e3:.0f} ms); "
              f"JSON {bar['total_bytes'] / 1e6:.3f} MB ({'pass' if verdict[key]['json_pass'] else 'FAIL'}, < 3 MB); "
              f"build + to_json {bar['build_and_serialize_s'] * 1e3:.0f} ms"
              + ("  [STAND-IN model, not the trained default]" if mut.standin else ""), end="")
    print()
    verdict["standin"] = mut.standin
    out = dict(benchmark="explain", machine=info, model=dict(name=mut.name, standin=mut.standin, note=mut.note,
                                                             config=config_dict(model), params=n_params(model),
                                                             dtype=str(dtype).replace("torch.", "")),
               lang=args.lang, views=list(VIEWS), bar=verdict, results=results)
    print(f"wrote {write_json(args.out or RESULTS / f'explain_{device.type}.json', out)}")
    return out


if __name__ == "__main__":
    main()
