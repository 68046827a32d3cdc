"""Where a batch-1 decode step's time goes on a GPU: `python3 bench/decode_profile.py --configs tiny,d20`.

For each random-weight config (bench/decode_bench.py's), one StaticDecoder row (gpt/fast.py) is prefilled with a
64-token prompt, then:
- the step time of a CUDA-graph replay (what the app runs), eager and torch.compile'd, from 200 timed replays;
- a torch.profiler trace of 10 steps (graphs off, so every kernel is visible): kernels per step, GPU busy time per
  step, and the kernels that take the most GPU time.
Kernels per step x the per-kernel floor of a graph replay (~1.5-2.5 µs on an H100) vs the weight read (bytes /
bandwidth) says which one bounds the step. Prints tables and writes JSON (--out).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from bench.common import machine_info, random_weights, table, weight_bytes_per_token, write_json  # noqa: E402
from bench.decode_bench import CONFIGS, QUICK_CONFIGS  # noqa: E402
from gpt.fast import TOPK_BUCKET, StaticDecoder  # noqa: E402

SPAN = 128  # attention window bucket of a 64-token prompt plus the decoded tokens


def step_us(decoder: StaticDecoder, width: int | None, steps: int) -> float:
    """Mean time of `steps` decode calls, after warm-up calls (which capture the graph / compile)."""
    for _ in range(3):
        decoder.decode(1, SPAN, width)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        decoder.decode(1, SPAN, width)
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps * 1e6


def kernel_profile(decoder: StaticDecoder, width: int | None, steps: int, top: int) -> dict:
    for _ in range(3):
        decoder.decode(1, SPAN, width)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            decoder.decode(1, SPAN, width)
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    by_name: dict[str, list[float]] = {}
    for e in kernels:
        by_name.setdefault(e.name, []).append(e.device_time)
    busy = sum(e.device_time for e in kernels) / steps
    rows = sorted(((name, len(ts) / steps, sum(ts) / steps) for name, ts in by_name.items()), key=lambda r: -r[2])
    return dict(kernels_per_step=len(kernels) / steps, gpu_busy_us=busy,
                top=[dict(kernel=n[:90], per_step=c, us_per_step=u, share=u / busy) for n, c, u in rows[:top]])


def same_tokens(model, compiled: StaticDecoder, prompt: list[int], steps: int = 32) -> bool:
    """Greedy tokens of the compiled decoder vs a fresh eager one (bf16: a near-tie may flip; reported only)."""
    def greedy(d: StaticDecoder) -> list[int]:
        d.set_row(0, 0.0, 1, 1.0, 0)
        d.prefill(0, prompt, TOPK_BUCKET)
        return [int(d.decode(1, SPAN, TOPK_BUCKET)[0]) for _ in range(steps)]
    return greedy(compiled) == greedy(StaticDecoder(model, 1, graphs=False))


def profile_config(name: str, config, steps: int, top: int, modes: list[str]) -> dict:
    device = torch.device("cuda")
    model = random_weights(config, device, torch.bfloat16)
    prompt = list(range(1, 65))
    out = dict(config=name, params=sum(p.numel() for p in model.parameters()),
               weight_bytes=weight_bytes_per_token(model))
    variants = {  # mode: (graphs, compile, torch.compile kwargs replacing StaticDecoder's, math attention)
        "graphs": (True, False, None, False), "compile+graphs": (True, True, {}, False),
        "autotune+graphs": (True, True, dict(mode="max-autotune-no-cudagraphs"), False),
        "cdt+graphs": (True, True, dict(options={"coordinate_descent_tuning": True}), False),
        "cdt-math+graphs": (True, True, dict(options={"coordinate_descent_tuning": True}), True),
        "eager": (False, False, None, False), "compile": (False, True, {}, False),
        "cdt": (False, True, dict(options={"coordinate_descent_tuning": True}), False),
        "cdt-math": (False, True, dict(options={"coordinate_descent_tuning": True}), True)}
    for mode in modes:
        graphs, compile, kwargs, math = variants[mode]
        decoder = StaticDecoder(model, 1, graphs=graphs, compile=compile)
        if kwargs is not None:  # the same step, compiled with these settings ({}: torch.compile's defaults)
            step = decoder._decode_step
            if math:
                def step(b, width, _step=decoder._decode_step):
                    with sdpa_kernel(SDPBackend.MATH):
                        return _step(b, width)
            decoder._decode_fn = torch.compile(step, fullgraph=True, dynamic=False, **(kwargs or {}))
        decoder.set_row(0, 0.8, 50, 1.0, 0)
        decoder.prefill(0, prompt, TOPK_BUCKET)
        if graphs:
            out[f"{mode}_step_us"] = step_us(decoder, TOPK_BUCKET, 200)
        else:
            out[f"{mode}_profile"] = kernel_profile(decoder, TOPK_BUCKET, steps, top)
        if decoder._decode_fn is not decoder._decode_step:  # compiled: same tokens as the eager step?
            out[f"{mode}_tokens_equal"] = same_tokens(model, decoder, prompt)
        print(f"[{name}] {mode} done", flush=True)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="tiny,d20")
    p.add_argument("--steps", type=int, default=10, help="profiled steps")
    p.add_argument("--top", type=int, default=15, help="kernels listed per profile")
    p.add_argument("--modes", default="graphs,compile+graphs,autotune+graphs,eager,compile")
    p.add_argument("--quick", action="store_true", help="toy sizes")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("decode_profile.py needs a CUDA GPU")
    configs = QUICK_CONFIGS if args.quick else CONFIGS
    modes = args.modes.split(",")
    results = [profile_config(n, configs[n], args.steps, args.top, modes) for n in args.configs.split(",")]
    bw = 3.0e12  # nominal, for this print only (decode_bench.py measures it)
    rows = []
    for r in results:
        for mode in modes:
            prof = r.get(f"{mode}_profile", {})
            rows.append(dict(config=r["config"], mode=mode, weights_mb=r["weight_bytes"] / 1e6,
                             read_us=r["weight_bytes"] / bw * 1e6, step_us=r.get(f"{mode}_step_us"),
                             kernels=prof.get("kernels_per_step"), busy=prof.get("gpu_busy_us"),
                             same=r.get(f"{mode}_tokens_equal")))
    print(table(rows, [("config", "config"), ("mode", "mode"), ("weights_mb", "weights MB"),
                       ("read_us", "weight read µs @3TB/s"), ("step_us", "graph step µs"),
                       ("kernels", "kernels/step"), ("busy", "GPU busy µs/step"), ("same", "greedy = eager")]))
    for r in results:
        for mode in modes:
            if f"{mode}_profile" not in r:
                continue
            print(f"\n{r['config']} {mode}: top kernels by GPU time per step")
            print(table(r[f"{mode}_profile"]["top"], [("kernel", "kernel"), ("per_step", "calls/step"),
                                                      ("us_per_step", "µs/step"), ("share", "share of busy")]))
    out = dict(benchmark="decode_profile", machine=machine_info(torch.device("cuda")), results=results)
    if args.out:
        write_json(args.out, out)
    return out


if __name__ == "__main__":
    main()
