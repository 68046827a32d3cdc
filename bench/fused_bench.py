"""The fused decode step (gpt/fused_decode.py) on the GPU: each matrix-vector product's tile sizes swept, then whole
steps at batch 1 and 32 against the weight-read roofline, every step a CUDA graph replay.

    python bench/fused_bench.py [--configs d20,d20-2026] [--out bench/results/fused_cuda.json]

Products are timed as in a real step: the n_layer different weight matrices of one kind one after another (a
layer's weights are never in L2 when it runs), 20 replays of a graph of them, median; GB/s counts the weights
read. The roofline is the measured copy bandwidth (read + write) over the bytes of weights a token reads. The app's
own path (Engine -> BatchServer, with its checks) is bench/decode_bench.py --fused.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.common import RESULTS, machine_info, random_weights, table, weight_bytes_per_token, write_json  # noqa: E402
from bench.decode_bench import CONFIGS, MEMBER, copy_bandwidth  # noqa: E402
from gpt import fused_decode  # noqa: E402
from gpt.fast import StaticDecoder  # noqa: E402
from gpt import nanochat  # noqa: E402

SWEEP = list(itertools.product((16, 32, 64), (128, 256), (4, 8), (3, 4)))  # BLOCK_N, BLOCK_K, warps, stages


def graph_ms(fn, replays: int = 20) -> float:
    """Median ms of one replay of a CUDA graph of fn (after a warm-up run outside the graph)."""
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    times = []
    for _ in range(replays):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


def sweep_products(fd: fused_decode.FusedDecode, b: int) -> list[dict]:
    """Every config of SWEEP on each kind of product of the model, all layers' matrices in a row."""
    model, rows = fd.model, []
    kinds = {"qkv": (fd.x, fd.qkv, dict(norm=True)), "out": (fd.y, fd.x, dict(resid=True)),
             "fc": (fd.x, fd.h, dict(norm=True, act=True)), "proj": (fd.h, fd.x, dict(resid=True))}
    for kind, (x, out, kw) in kinds.items():
        weights = [L[kind] for L in fd.layers]
        rows += sweep_one(fd, b, kind, weights, x, out, kw)
    rows += sweep_one(fd, b, "lm_head", [model.lm_head.weight], fd.x, fd.logits, dict(norm=True, softcap=True))
    return rows


def sweep_one(fd, b, kind, weights, x, out, kw) -> list[dict]:
    N, K = out.size(1), x.size(1)
    nbytes = sum(w[:N].numel() * w.element_size() for w in weights)
    results = []
    for cfg in SWEEP:
        fd.configs[(N, K)] = cfg
        try:
            ms = graph_ms(lambda: [fd._matvec(b, x, w, out, **kw) for w in weights])
        except Exception as e:  # noqa: BLE001 - a config that does not compile (shared memory) is skipped
            results.append(dict(kind=kind, N=N, K=K, config=str(cfg), error=type(e).__name__))
            continue
        results.append(dict(kind=kind, N=N, K=K, config=str(cfg), tiles=list(cfg),
                            us_per_matrix=ms * 1e3 / len(weights), gb_s=nbytes / (ms / 1e3) / 1e9))
    fd.configs.pop((N, K), None)
    ok = [r for r in results if "gb_s" in r]
    best = max(ok, key=lambda r: r["gb_s"])
    default = next(r for r in ok if r["config"] == str(fused_decode.matvec_config(N, K))) if any(
        r["config"] == str(fused_decode.matvec_config(N, K)) for r in ok) else None
    return [dict(best, pick="best"), *([dict(default, pick="default")] if default else [])]


@torch.inference_mode()
def step_rates(model, b: int, configs: dict, steps: int = 100) -> dict:
    """tok/s of whole fused steps (forward and sampling) at batch b, one graph per step, replayed `steps` times."""
    dec = StaticDecoder(model, b, graphs=True, fused=True)
    dec.fused.configs.update(configs)
    prompt = list(range(1, 65))
    for row in range(b):
        dec.set_row(row, 0.8, 50, 1.0, seed=row)
        dec.prefill(row, prompt, 64)
    dec.decode(b, 0, 64)  # capture
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        dec.decode(b, 0, 64)
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - t) / steps
    return dict(batch=b, ms_per_step=seconds * 1e3, tok_s=b / seconds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="d20,d20-2026")
    p.add_argument("--out", default=str(RESULTS / "fused_cuda.json"))
    args = p.parse_args()
    if not fused_decode.available("cuda") or not torch.cuda.is_available():
        raise SystemExit("fused_bench.py measures the fused decode step on a GPU: it needs CUDA and Triton")
    device = torch.device("cuda")
    bw = copy_bandwidth(device, 2**30, 50)["bytes_per_s"]
    out = dict(benchmark="fused decode", machine=machine_info(device), bandwidth_bytes_per_s=bw, models={})
    print(f"{out['machine'].get('gpu')}: copy bandwidth {bw / 1e9:,.0f} GB/s")
    for name in args.configs.split(","):
        model = random_weights(CONFIGS[name], device, torch.bfloat16, member=MEMBER.get(name, nanochat.TUTORIAL))
        model.fuse_qkv()
        wb = weight_bytes_per_token(model)
        roof = bw / wb
        res = out["models"][name] = dict(weight_bytes=wb, roofline_b1_tok_s=roof)
        dec = StaticDecoder(model, 32, graphs=False, fused=True)
        for b in (1, 32):
            rows = sweep_products(dec.fused, b)
            res[f"products_b{b}"] = rows
            print(f"\n{name}: matrix-vector products at batch {b} (per matrix; GB/s of weights read)")
            print(table(rows, [("kind", "product"), ("N", "N"), ("K", "K"), ("pick", "pick"), ("config", "config"),
                               ("us_per_matrix", "µs"), ("gb_s", "GB/s")]))
        best = {(r["N"], r["K"]): tuple(r["tiles"]) for r in res["products_b1"] if r["pick"] == "best"}
        del dec
        rates = []
        for b, configs in ((1, {}), (1, best), (32, {}), (32, best)):
            r = step_rates(model, b, configs)
            r.update(configs="swept best (batch 1)" if configs else "default",
                     roof_pct=100 * r["tok_s"] / (b * roof))
            rates.append(r)
        res["steps"] = rates
        res["best_b1"] = {f"{n}x{k}": v for (n, k), v in best.items()}
        print(f"\n{name}: whole fused steps (graph replay), weight-read roofline {roof:,.0f} tok/s at batch 1")
        print(table(rates, [("batch", "batch"), ("configs", "tile sizes"), ("ms_per_step", "ms/step"),
                            ("tok_s", "tok/s"), ("roof_pct", "% roofline")]))
        write_json(args.out, out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
