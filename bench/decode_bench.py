"""Decode speed through the app's own entry points, against the weight-read roofline: `python3 bench/decode_bench.py`.

What is measured, per model (random-weight tiny / d20 / d32 configs, and the shipped default model):
- batch-1 decode tokens/s, batch-B aggregate decode tokens/s (B = 32 on a GPU, 8 on a CPU) and time to first token (TTFT) of a 64-token
  prompt, through gpt.engine.Engine: on a GPU that is Engine -> gpt.serving.BatchServer -> gpt.fast.StaticDecoder
  (CUDA-graph replays on a GPU), exactly what the app's chat calls; on a CPU the same server runs its steps on the
  app's one torch thread (gpt/torch_thread.py: the model is loaded there too).
- baselines in the same run: the naive GPT.generate (re-runs the whole prefix every token; a few tokens only) and the
  eager cached engine (Engine(batched=False)), and on GPU optionally the compiled fast path (--compile).
- the roofline: a large copy measured in this run gives the memory bandwidth (bytes read + written / time); a decode
  step must read every weight once (one row of the embedding), so batch-1 tokens/s <= bandwidth / weight bytes, and
  a batch-B step gives B tokens for the same read. Every speed is also printed as a fraction of that limit.
- correctness (fp32: fast-path greedy tokens == eager engine's for >= 32 steps; bf16 logits vs fp32 logits within
  bf16 tolerance), pass/fail in the table and the JSON.

Timing: time.perf_counter on the host at the moment each token reaches the caller. A token reaching the caller has
been copied off the device (.item() / an event synchronize in the server), so these are synchronized times; the
device is also synchronized before each timed call. Graph capture / compilation happens in warm-up runs of the same
workload, timed and reported separately; numbers are medians over --repeats runs. Stop tokens are disabled (engine
stop_ids emptied, which costs nothing) so every stream runs exactly the requested number of tokens.

Each model runs in its own subprocess: the BatchServer's thread keeps its KV cache alive for the process's life,
and a failure (out of memory, a compile error) then loses one model's numbers, not the run. Results are written
after every phase.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import (D20, DTYPES, RESULTS, app_dtype, busy_warning, config_dict, loadavg,  # noqa: E402
                          machine_info, median, model_under_test, n_params, random_weights,
                          start_idle_torch_thread, synthetic_tokenizer, table, time_by_name,
                          weight_bytes_per_token, write_json)
from gpt.checkpoint import build_model  # noqa: E402
from gpt.engine import Engine, SamplingParams  # noqa: E402
from gpt import fused_decode  # noqa: E402
from gpt.fast import MIN_SPAN, StaticDecoder, bucket, width_bucket  # noqa: E402
from gpt.kv_cache import RowKVCache  # noqa: E402
from gpt import nanochat  # noqa: E402
from gpt.nanochat import GPT, GPTConfig  # noqa: E402
from gpt.stream import sampled_vocab  # noqa: E402
from gpt.tokenizer import SPECIAL_TOKENS  # noqa: E402
from gpt.torch_thread import TorchThread  # noqa: E402

CONFIGS = {  # the random-weight configs (n_kv_head = n_head, as nanochat)
    "tiny": GPTConfig(sequence_len=1024, vocab_size=32768, n_layer=6, n_head=6, n_kv_head=6, n_embd=384),
    "d20": D20,
    "d32": GPTConfig(sequence_len=2048, vocab_size=65536, n_layer=32, n_head=16, n_kv_head=16, n_embd=2048),
    # nanochat's current architecture (92d63d4) at d20 size: sliding windows SSSL, value embeddings, smear, backout
    "d20-2026": GPTConfig(sequence_len=2048, vocab_size=65536, n_layer=20, n_head=10, n_kv_head=10, n_embd=1280,
                          window_pattern="SSSL"),
}
QUICK_CONFIGS = {  # --quick: same code paths, toy sizes (GQA in one of them, as the tests do)
    "tiny": GPTConfig(sequence_len=256, vocab_size=1024, n_layer=2, n_head=2, n_kv_head=2, n_embd=64),
    "d20": GPTConfig(sequence_len=256, vocab_size=2048, n_layer=3, n_head=4, n_kv_head=2, n_embd=128),
    "d32": GPTConfig(sequence_len=256, vocab_size=2048, n_layer=4, n_head=4, n_kv_head=4, n_embd=128),
    "d20-2026": GPTConfig(sequence_len=512, vocab_size=2048, n_layer=3, n_head=4, n_kv_head=2, n_embd=128,
                          window_pattern="SSSL"),
}
MEMBER = {"d20-2026": nanochat.TODAY}  # the nanochat version of each config (else the tutorial's)
ALL = ("tiny", "d20", "d32", "d20-2026", "default")
NAIVE_TOKENS = {"tiny": 32, "d20": 16, "d32": 8, "d20-2026": 16, "default": 32}  # GPT.generate re-reads the prefix
APP_SAMPLING = dict(temperature=0.8, top_k=50, top_p=1.0)  # the chat tab's defaults
# (device type, config, metric, comparison, threshold): issue #25's targets ("decode at the memory-bandwidth limit"),
# checked on the app's own path and, where measured, on the compiled step (`--compile`, `python app.py --compile`) and
# the fused step (`--fused`, `python app.py --fused`).
TARGETS = [("cuda", c, metric, op, threshold) for c in ("d20", "d20-2026")
           for metric, op, threshold in (("b1_tok_s", ">=", 2200.0), ("bB_tok_s", ">=", 50000.0),
                                         ("ttft_ms", "<", 2.0), ("kernels_per_step", "<", 150.0))]
TARGETS.append(("cpu", "default", "b1_tok_s", ">=", 250.0))
TARGET_PATHS = (("server", "app"), ("compile", "compile"), ("fused", "fused"))  # (mode, its name in the targets table)
CHECK_STEPS = 32  # greedy tokens compared, and bf16 logits compared, per prompt
CHECK_ROWS = 4
SEEDED_ROWS = 16  # seeded replies compared alone vs together, in the app's dtype
BF16_REL_RMS = 2.0 ** -5  # bf16 keeps 8 significant bits (step 2^-8); allow ~8 steps of accumulated RMS error
BF16_MAX_ABS = 2.0 ** -5 * nanochat.TUTORIAL.features.softcap  # and the same fraction of the logits' range (softcap) for the worst logit


# ---- small helpers ------------------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def no_stops(engine: Engine) -> Engine:
    """Every stream runs to max_tokens: a random model may otherwise end a row early at a stop token."""
    engine.stop_ids = set()
    if engine.server is not None:
        engine.server.stop_ids = set()
    return engine


def make_prompts(n_ordinary: int, bos: int, count: int, length: int, seed: int = 0) -> list[list[int]]:
    """`count` different prompts: <|bos|> then random ordinary token ids, `length` ids each."""
    g = torch.Generator().manual_seed(seed)
    return [[bos] + torch.randint(0, n_ordinary, (length - 1,), generator=g).tolist() for _ in range(count)]


class OnTorchThread:
    """An engine whose streams are advanced on a TorchThread as urgent work, as the app's chat decodes on a CPU
    (hand-over included)."""

    def __init__(self, engine: Engine, thread: TorchThread):
        self.engine, self.thread = engine, thread

    def stream(self, prompt: list[int], params: SamplingParams):
        return self.thread.iterate(self.engine.stream(prompt, params), urgent=True)


def app_params(n: int, seed: int = 0) -> SamplingParams:
    return SamplingParams(**APP_SAMPLING, seed=seed, max_tokens=n)


def stream_stamps(engine: Engine, prompt: list[int], params: SamplingParams, device: torch.device
                  ) -> tuple[float, list[float]]:
    """(submit time, arrival time of each token) of one Engine.stream."""
    sync(device)
    t0 = time.perf_counter()
    stamps = [time.perf_counter() for event in engine.stream(prompt, params) if not event.done]
    if len(stamps) != params.max_tokens:
        raise RuntimeError(f"stream gave {len(stamps)} tokens, expected {params.max_tokens}")
    return t0, stamps


def ttft_ms(engine: Engine, prompt: list[int], device: torch.device, repeats: int) -> list[float]:
    runs = []
    for i in range(repeats):
        t0, stamps = stream_stamps(engine, prompt, app_params(1, i), device)
        runs.append((stamps[0] - t0) * 1e3)
    return runs


def decode_rates(engine: Engine, prompt: list[int], steps: int, device: torch.device, repeats: int) -> list[float]:
    """Batch-1 decode tokens/s: tokens after the first, over the time between the first and the last."""
    runs = []
    for i in range(repeats):
        _, stamps = stream_stamps(engine, prompt, app_params(steps, i), device)
        runs.append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
    return runs


def batch_seconds(engine: Engine, prompts: list[list[int]], steps: int, device: torch.device) -> float:
    """Wall time of Engine.generate_batch (all rows submitted at once, as concurrent chats): prefills + decoding."""
    params = [app_params(steps, seed=i) for i in range(len(prompts))]
    sync(device)
    t0 = time.perf_counter()
    out = engine.generate_batch(prompts, params)
    seconds = time.perf_counter() - t0
    if any(len(o) != steps for o in out):
        raise RuntimeError(f"generate_batch gave {[len(o) for o in out]} tokens, expected {steps} each")
    return seconds


# ---- correctness checks -------------------------------------------------------------------------------------------
def first_mismatch(got: list[list[int]], want: list[list[int]]) -> tuple[int, int] | None:
    """(row, step) of the first token that differs (or where one row is shorter), None if all equal."""
    for row, (g, w) in enumerate(zip(got, want)):
        for step in range(max(len(g), len(w))):
            if step >= len(g) or step >= len(w) or g[step] != w[step]:
                return row, step
    return None


@torch.inference_mode()
def describe_mismatch(m32: GPT, prompts: list[list[int]], want: list[list[int]], at: tuple[int, int] | None,
                      n_sampled: int) -> dict | None:
    """Where two greedy runs part, and the eager top-2 logit gap there: a gap near fp32 rounding (~1e-5) is a
    near-tie that any change of kernel may flip; a large gap is a real bug."""
    if at is None:
        return None
    row, step = at
    ids = prompts[row] + want[row][:step]
    top = m32(torch.tensor([ids], device=m32.get_device()))[0, -1, :n_sampled].float().topk(2).values
    return dict(row=row, step=step, eager_top2_gap=float(top[0] - top[1]))


def greedy_check(m32: GPT, tok, prompts: list[list[int]], steps: int, fused: bool = False,
                 compile: bool = False) -> dict:
    """fp32 greedy tokens of the fast path (Engine -> BatchServer, CUDA graphs on a GPU) vs the eager engine's.

    Pass/fail compares each prompt run alone (batch 1: the same matrix shapes as the eager loop). The same prompts
    decoded together in one batch are reported too: a batch changes the matrix-multiply kernels, so in floating point
    a near-tie may resolve differently; the eager top-2 gap at any mismatch says whether it was one."""
    fast = no_stops(Engine(m32, tok, batched=True, max_batch=len(prompts), fused=fused, compile=compile))
    eager = no_stops(Engine(m32, tok, batched=False))
    params = SamplingParams(temperature=0.0, top_k=None, max_tokens=steps)
    want = eager.generate_batch(prompts, params)  # the eager engine runs rows one after another
    alone = [fast.generate_batch([p], params)[0] for p in prompts]
    together = fast.generate_batch(prompts, params)
    n_sampled = sampled_vocab(m32.config.vocab_size, tok)
    miss_alone = describe_mismatch(m32, prompts, want, first_mismatch(alone, want), n_sampled)
    miss_batch = describe_mismatch(m32, prompts, want, first_mismatch(together, want), n_sampled)
    step = "fused kernels, " if fused else "compiled step, " if compile else ""
    graphs = "CUDA graphs" if fast.server.decoder.use_graphs else "BatchServer (no graphs on this device)"
    return dict(ok=miss_alone is None, steps=steps, rows=len(prompts), first_mismatch=miss_alone,
                batched_equal=miss_batch is None, batched_first_mismatch=miss_batch, fast_path=step + graphs,
                continuation=want[0])


def seeded_batch_check(run: GPT, tok, prompts: list[list[int]], steps: int, fused: bool = False,
                       compile: bool = False) -> dict:
    """Seeded sampled replies (the chat's sampling, in the app's dtype, through the app's batched server) decoded each
    alone vs all together in one batch: how many rows differ. 0 means a seeded reply does not depend on who else is
    chatting (a classroom can reproduce one)."""
    engine = no_stops(Engine(run, tok, batched=True, max_batch=len(prompts), fused=fused, compile=compile))
    params = [SamplingParams(**APP_SAMPLING, seed=1000 + i, max_tokens=steps) for i in range(len(prompts))]
    alone = [engine.generate_batch([p], [sp])[0] for p, sp in zip(prompts, params)]
    together = engine.generate_batch(prompts, params)
    return dict(rows=len(prompts), steps=steps, differ=sum(a != b for a, b in zip(alone, together)))


@torch.inference_mode()
def bf16_check(m32: GPT, m16: GPT, prompt: list[int], continuation: list[int], fused: bool = False) -> dict:
    """bf16 logits through the fast path's cache (RowKVCache: prefill, then one token per step) vs one fp32 forward
    of the same sequence. Passes if the RMS error is within BF16_REL_RMS of the logits' RMS and the worst logit is
    within BF16_MAX_ABS."""
    device, c = m32.get_device(), m32.config
    seq = prompt + continuation[:-1]
    ref = m32(torch.tensor([seq], device=device))[0, len(prompt) - 1:].float()  # [n, V]
    if fused:  # the prompt through the forward, then each token through the fused step
        dec = StaticDecoder(m16, 1, c.vocab_size, graphs=False, fused=True)
        got = [dec.fused.logits.new_tensor(m16(torch.tensor([prompt], device=device))[0, -1])]
        dec.prefill(0, prompt, None)
        for token in continuation[:-1]:
            dec.tokens[0] = token
            got.append(dec.fused.logits_of(1, dec.tokens)[0].clone())
            dec.cache.pos[0] += 1
    else:
        cache = RowKVCache.for_model(m16, 1)
        prefill = cache.step(bucket(len(prompt), MIN_SPAN, c.sequence_len),
                             rows=torch.zeros(1, dtype=torch.long, device=device))
        got = [m16(torch.tensor([prompt], device=device), kv_cache=prefill)[0, -1]]
        for i, token in enumerate(continuation[:-1]):
            step = cache.step(bucket(len(prompt) + i + 1, MIN_SPAN, c.sequence_len), batch=1)
            got.append(m16(torch.tensor([[token]], device=device), kv_cache=step)[0, -1])
    got = torch.stack(got).float()
    diff = got - ref
    rel_rms = float(diff.pow(2).mean().sqrt() / ref.pow(2).mean().sqrt())
    max_abs = float(diff.abs().max())
    top1 = float((got.argmax(-1) == ref.argmax(-1)).float().mean())
    return dict(ok=rel_rms <= BF16_REL_RMS and max_abs <= BF16_MAX_ABS, positions=len(continuation),
                rel_rms=rel_rms, max_abs=max_abs, top1_agree=top1, rel_rms_limit=BF16_REL_RMS,
                max_abs_limit=BF16_MAX_ABS)


# ---- a diagnostic: how many operations one decode step launches --------------------------------------------------
class _OpCounter(TorchDispatchMode):
    """Counts the ATen operations that do work (views and reshapes, which launch nothing, are skipped)."""

    METADATA_ONLY = {"_unsafe_view", "_reshape_alias", "lift_fresh"}

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if not getattr(func, "is_view", False) and name not in self.METADATA_ONLY:
            self.counts[name] = self.counts.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


@torch.inference_mode()
def kernel_profile(model: GPT, n_sampled: int, prompt: list[int], params: SamplingParams, fused: bool) -> dict:
    """The GPU kernels of one batch-1 decode step (each launched eagerly, the same kernels a graph replays): count,
    and per kernel name its launches and GPU time, largest first."""
    from torch.profiler import ProfilerActivity, profile
    decoder = StaticDecoder(model, 1, n_sampled, graphs=False, fused=fused)
    decoder.static_shapes = True
    decoder.set_row(0, params.temperature, params.top_k, params.top_p, params.seed or 0)
    width = width_bucket([params])
    decoder.prefill(0, prompt, width)
    for _ in range(3):  # compile Triton kernels, lazy inits
        decoder.decode(1, MIN_SPAN, width)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        decoder.decode(1, MIN_SPAN, width)
        torch.cuda.synchronize()
    rows = [dict(kernel=n, launches=c, us=t) for n, c, t in time_by_name(prof, gpu=True)]
    return dict(per_step=sum(r["launches"] for r in rows), kernel_us=sum(r["us"] for r in rows), kernels=rows)


def ops_per_step(model: GPT, n_sampled: int, prompt: list[int], params: SamplingParams) -> dict:
    """ATen operations in one batch-1 decode step of the app's path: StaticDecoder run eagerly, on a GPU with the
    static shapes of its CUDA graphs (the same ops a graph replays, each one kernel or more), on a CPU at the exact
    sizes it runs there. Under graphs a step cannot be faster than about this many kernels times the GPU's per-kernel
    floor (a few microseconds), whatever the bandwidth: this column explains a low %roof."""
    decoder = StaticDecoder(model, 1, n_sampled, graphs=False)
    decoder.static_shapes = model.get_device().type == "cuda"
    decoder.set_row(0, params.temperature, params.top_k, params.top_p, params.seed or 0)
    width = width_bucket([params])
    decoder.prefill(0, prompt, width)
    decoder.decode(1, MIN_SPAN, width)  # first step done outside the count (lazy inits)
    with _OpCounter() as counter:
        decoder.decode(1, MIN_SPAN, width)
    total = sum(counter.counts.values())
    top = dict(sorted(counter.counts.items(), key=lambda kv: -kv[1])[:12])
    return dict(per_step=total, per_layer=total / model.config.n_layer, top=top)


# ---- one model, in a worker process -------------------------------------------------------------------------------
def load(name: str, device: torch.device, run_dtype: torch.dtype, quick: bool) -> dict:
    """fp32 weights (for the checks) and the run model (in the app's dtype), same values."""
    if name == "default":
        mut = model_under_test(device, torch.float32)
        m32, tok, label, standin, note = mut.model, mut.tokenizer, mut.name, mut.standin, mut.note
    else:
        config = (QUICK_CONFIGS if quick else CONFIGS)[name]
        m32 = random_weights(config, device, torch.float32, member=MEMBER.get(name, nanochat.TUTORIAL))
        tok = synthetic_tokenizer(config.vocab_size)
        label, standin, note = f"random weights {name}", False, ""
    run = m32 if run_dtype == torch.float32 else build_model(m32.config, m32.member, m32.state_dict(), device, run_dtype)
    return dict(m32=m32, run=run, tok=tok, label=label, standin=standin, note=note)


def worker(spec: dict) -> None:
    device, name, kind = torch.device(spec["device"]), spec["config"], spec["kind"]
    run_dtype = DTYPES[spec["dtype"]]
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    res: dict = dict(config=name, kind=kind, errors={}, phase_s={})
    save = lambda: write_json(spec["out"], res)  # noqa: E731 - after every phase: a crash keeps what was measured
    log = lambda msg: print(f"[{name}/{kind}] {msg}", flush=True)  # noqa: E731

    t0 = time.perf_counter()
    # On a CPU the app loads its model and runs all model work on one thread (gpt/torch_thread.py); so does this
    # process, until the phases that show what happens without it.
    torch_thread = TorchThread(enabled=device.type == "cpu")
    m = torch_thread.run(load, name, device, run_dtype, spec["quick"])
    run, tok = m["run"], m["tok"]
    res.update(model=m["label"], standin=m["standin"], note=m["note"], model_config=config_dict(run),
               params=n_params(run), dtype=str(run_dtype).replace("torch.", ""),
               weight_bytes_per_token=weight_bytes_per_token(run))
    res["phase_s"]["load"] = time.perf_counter() - t0
    log(f"{m['label']}: {res['params'] / 1e6:.1f}M params, {res['weight_bytes_per_token'] / 1e6:.1f} MB of weights "
        f"read per token ({res['dtype']})")
    save()

    P, N, B, R = spec["prompt_len"], spec["steps"], spec["batch"], spec["repeats"]
    seq_len = run.config.sequence_len
    if P + N > seq_len:
        res["errors"]["setup"] = f"prompt {P} + steps {N} exceeds {name}'s context {seq_len}: use a smaller --steps"
        log(res["errors"]["setup"])
        save()
        return
    n_sampled = sampled_vocab(run.config.vocab_size, tok)  # as Engine: never sample an id the tokenizer lacks
    n_ordinary = n_sampled - len(SPECIAL_TOKENS)
    prompts = make_prompts(n_ordinary, tok.bos_token_id, max(B, CHECK_ROWS, SEEDED_ROWS), P)
    solo = prompts[0]

    def phase(key: str, fn: Callable[[], dict]) -> None:
        t = time.perf_counter()
        log(f"{key} ...")
        try:
            res[key] = fn()
        except Exception:  # noqa: BLE001 - record it, keep measuring the other phases
            res["errors"][key] = traceback.format_exc(limit=8)
            log(f"{key} FAILED:\n{res['errors'][key]}")
        res["phase_s"][key] = time.perf_counter() - t
        if device.type == "cuda":
            res["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        save()

    def checks(fused: bool = False, compile: bool = False) -> dict:
        steps = max(CHECK_STEPS, spec["check_steps"])
        greedy = greedy_check(m["m32"], tok, prompts[:CHECK_ROWS], steps, fused, compile)
        continuation = greedy.pop("continuation")
        seeded = seeded_batch_check(run, tok, prompts[:SEEDED_ROWS], steps, fused, compile)
        if compile:  # bf16_check reads the model's own forward through the cache: the same as the app path's check
            return dict(greedy_fp32=greedy, bf16_logits=None, seeded_batch=seeded)
        m16 = run if run_dtype == torch.bfloat16 else build_model(run.config, run.member, m["m32"].state_dict(), device,
                                                                  torch.bfloat16)
        bf16 = bf16_check(m["m32"], m16, prompts[0], continuation, fused)
        return dict(greedy_fp32=greedy, bf16_logits=bf16, seeded_batch=seeded)

    def naive() -> dict:
        n = spec["naive_tokens"]
        gen = lambda k: list(run.generate(solo, k, temperature=APP_SAMPLING["temperature"],  # noqa: E731
                                          top_k=APP_SAMPLING["top_k"], seed=0))
        gen(2)  # warm-up
        runs = []
        for _ in range(max(1, min(R, 3))):
            sync(device)
            t = time.perf_counter()
            assert len(gen(n)) == n
            runs.append(n / (time.perf_counter() - t))
        return dict(tokens=n, b1_tok_s=median(runs), b1_runs=runs)

    def eager(thread: TorchThread) -> dict:
        engine = OnTorchThread(no_stops(Engine(run, tok, batched=False)), thread)
        steps = N  # the same positions as the fast path's runs
        t = time.perf_counter()
        decode_rates(engine, solo, steps, device, 1)
        ttft_ms(engine, solo, device, 1)
        warm = time.perf_counter() - t
        ttft = ttft_ms(engine, solo, device, spec["ttft_repeats"])
        b1 = decode_rates(engine, solo, steps, device, R)
        return dict(steps=steps, warmup_s=warm, ttft_ms=median(ttft), ttft_runs=ttft, b1_tok_s=median(b1),
                    b1_runs=b1)

    def server(compile: bool, fused: bool = False) -> dict:
        # as demo.models.Models builds it: on a CPU the loop's steps run on the torch thread
        engine = no_stops(torch_thread.run(Engine, run, tok, batched=True, max_batch=B, compile=compile,
                                           run=torch_thread.urgent, fused=fused))
        decoder = engine.server.decoder
        captures = decoder.use_graphs or compile
        # Warm-up: the same workloads as measured, so every (batch bucket, attention span) graph is captured (or
        # compiled) here. Rows join one by one, so a batch-B run passes through the smaller batch buckets too.
        sizes = [1] if compile else ([2 ** i for i in range(B.bit_length()) if 2 ** i < B] + [B] if captures
                                     else [1, B])
        t = time.perf_counter()
        ttft_ms(engine, solo, device, 2)
        for b in sizes:
            batch_seconds(engine, prompts[:b], N, device)
        warm = time.perf_counter() - t
        out = dict(compile=compile, graphs=decoder.use_graphs, warmup_s=warm, warmup_batches=sizes,
                   captured=len(decoder.graphs))
        ttft = ttft_ms(engine, solo, device, spec["ttft_repeats"])
        b1 = decode_rates(engine, solo, N, device, R)
        out.update(steps=N, ttft_ms=median(ttft), ttft_runs=ttft, b1_tok_s=median(b1), b1_runs=b1)
        if compile:  # every (batch bucket, span) is a separate compile: batch 1 only, to keep the run short
            return out
        decode, e2e = [], []
        for _ in range(R):
            t_n = batch_seconds(engine, prompts[:B], N, device)
            # admission + B prefills, no decoding: a fixed cost, so the lesser of two runs (noise only adds)
            t_1 = min(batch_seconds(engine, prompts[:B], 1, device) for _ in range(2))
            decode.append(B * (N - 1) / (t_n - t_1) if t_n > t_1 else float("nan"))
            e2e.append(B * N / t_n)
        out.update(batch=B, bB_tok_s=median(decode), bB_runs=decode, bB_e2e_tok_s=median(e2e), bB_e2e_runs=e2e,
                   captured_after=len(decoder.graphs))
        return out

    # No inference_mode here: every entry point timed (GPT.generate, Engine.stream, the server's thread) enters it
    # itself, and the engines are built outside it, as in the app. Order matters on a CPU: naive, eager and the server
    # run their torch work on the torch thread, while no other thread has used torch (the app's way); then the eager
    # engine is measured again from this thread, with another idle torch thread alive (start_idle_torch_thread), as
    # it would run without the torch thread, from a pool of request threads. Diagnostics and checks come last: they
    # cannot disturb the timings.
    if kind == "main":
        phase("naive", lambda: torch_thread.run(naive))
        phase("eager", lambda: eager(torch_thread))
        phase("server", lambda: server(False))
        if device.type == "cpu":
            start_idle_torch_thread()
            phase("eager_threads", lambda: eager(TorchThread(enabled=False)))
        phase("ops", lambda: ops_per_step(run, n_sampled, solo, app_params(N)))
        if spec["checks"]:
            phase("checks", checks)
    elif kind == "fused":
        phase("server_fused", lambda: server(False, fused=True))
        if device.type == "cuda":
            phase("kernels", lambda: kernel_profile(run, n_sampled, solo, app_params(N), fused=True))
            phase("kernels_forward", lambda: kernel_profile(run, n_sampled, solo, app_params(N), fused=False))
        if spec["checks"]:
            phase("checks", lambda: checks(fused=True))
    else:
        phase("server_compile", lambda: server(True))
        if spec["checks"]:
            phase("checks", lambda: checks(compile=True))
    res["phase_s"]["total"] = time.perf_counter() - t0
    save()
    log(f"done in {res['phase_s']['total']:.1f} s")


def run_worker(spec: dict, timeout: float) -> dict:
    """Run one model in a fresh process; return what it wrote (even if it crashed or timed out part-way)."""
    fd, path = tempfile.mkstemp(prefix=f"decode_{spec['config']}_{spec['kind']}_", suffix=".json")
    os.close(fd)
    os.unlink(path)
    spec = dict(spec, out=path)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    error = None
    try:
        rc = subprocess.run(cmd, timeout=timeout).returncode
        if rc != 0:
            error = f"worker exited with code {rc}"
    except subprocess.TimeoutExpired:
        error = f"worker timed out after {timeout:.0f} s"
    try:
        res = json.loads(Path(path).read_text(encoding="utf-8"))
        Path(path).unlink()
    except (OSError, ValueError):
        res = dict(config=spec["config"], kind=spec["kind"], errors={})
    if error:
        res.setdefault("errors", {})["process"] = error
    return res


# ---- the roofline ---------------------------------------------------------------------------------------------------
@torch.inference_mode()
def copy_bandwidth(device: torch.device, nbytes: int, iters: int) -> dict:
    """Bytes read + written per second by dst.copy_(src) of `nbytes` (far larger than any cache): the memory
    bandwidth a decode step's weight reads can hope for."""
    src = torch.ones(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    sync(device)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            dst.copy_(src)
        end.record()
        end.synchronize()
        seconds = start.elapsed_time(end) / 1e3 / iters
    else:
        times = []
        for _ in range(iters):
            t = time.perf_counter()
            dst.copy_(src)
            times.append(time.perf_counter() - t)
        seconds = median(times)
    del src, dst
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return dict(bytes_per_s=2 * nbytes / seconds, buffer_bytes=nbytes, iters=iters, seconds_per_copy=seconds)


# ---- the report -----------------------------------------------------------------------------------------------------
def mode_rows(name: str, main: dict, comp: dict | None, bw: float, device: torch.device,
              fused: dict | None = None) -> list[dict]:
    """One row per way of decoding, with roofline fractions and ratios to the baselines of the same run."""
    wb = main.get("weight_bytes_per_token")
    if not wb:
        return [dict(config=name, mode="(no result: see errors)")]
    roof1 = bw / wb
    cuda = device.type == "cuda"
    eager_b1 = main.get("eager", {}).get("b1_tok_s")
    naive_b1 = main.get("naive", {}).get("b1_tok_s")
    server_label = "Engine->BatchServer, CUDA graphs" if cuda else "Engine->BatchServer, steps on the torch thread"
    eager_label = "Engine(batched=False), eager" + ("" if cuda else ", on the torch thread")
    modes = [("naive", "GPT.generate (naive)", main.get("naive")), ("eager", eager_label, main.get("eager")),
             ("server", server_label, main.get("server"))]
    if "eager_threads" in main or "eager_threads" in main.get("errors", {}):
        modes.append(("eager_threads", "Engine(batched=False), eager, not on one torch thread",
                      main.get("eager_threads")))
    if comp is not None:
        modes.append(("compile", server_label + " + compile", comp.get("server_compile")))
    if fused is not None:
        modes.append(("fused", server_label + " + fused kernels", fused.get("server_fused")))
    app = "server"  # the app's chats go through the batched server on every device (demo/models.py)
    rows = []
    # kernels per batch-1 step, from the fused run's profiles (--fused): the fused step's, and the forward's that the
    # app's graphs replay
    kernels = {"server": ((fused or {}).get("kernels_forward") or {}).get("per_step"),
               "fused": ((fused or {}).get("kernels") or {}).get("per_step")}
    for key, label, r in modes:
        if r is None:
            rows.append(dict(config=name, mode=label + " (FAILED: see errors)", app="*" if key == app else "",
                             path=key))
            continue
        b1, bB, ttft = r.get("b1_tok_s"), r.get("bB_tok_s"), r.get("ttft_ms")
        row = dict(config=name, mode=label, app="*" if key == app else "", path=key, b1_tok_s=b1,
                   b1_roof=b1 / roof1 if b1 else None,
                   b1_x_eager=b1 / eager_b1 if b1 and eager_b1 else None,
                   b1_x_naive=b1 / naive_b1 if b1 and naive_b1 else None,
                   bB_tok_s=bB, bB_roof=bB / (r["batch"] * roof1) if bB else None,
                   bB_x_eager=bB / eager_b1 if bB and eager_b1 else None, bB_e2e_tok_s=r.get("bB_e2e_tok_s"),
                   ttft_ms=ttft, ttft_roof=(wb / bw * 1e3) / ttft if ttft else None, warmup_s=r.get("warmup_s"),
                   kernels_per_step=kernels.get(key))
        rows.append(row)
    return rows


def mismatch_text(m: dict | None) -> str | None:
    return None if m is None else f"row {m['row']} step {m['step']} (eager top-2 gap {m['eager_top2_gap']:.2g})"


def pct(x: float | None) -> str | None:
    """A fraction as a percentage with 2 significant digits (0.25%, 14%): small fractions must not read as 0%."""
    if x is None:
        return None
    return f"{100 * x:.0f}%" if x >= 0.1 else f"{100 * x:.2g}%"


def target_rows(rows_by_config: dict[str, list[dict]], device: torch.device, quick: bool) -> list[dict]:
    """Each target on each path that was measured: the app's (the batched server), the compiled step's and the fused
    step's."""
    out = []
    for dev, name, metric, op, threshold in TARGETS:
        if dev != device.type or name not in rows_by_config:
            continue
        for mode, path in TARGET_PATHS:
            row = next((r for r in rows_by_config[name] if r.get("path") == mode), None)
            if row is None:
                continue
            value = row.get(metric)
            ok = None if value is None or quick else (value >= threshold if op == ">=" else value < threshold)
            out.append(dict(target=f"{name} {metric} {op} {threshold:g}", path=path, measured=value,
                            result="n/a (--quick sizes)" if quick else ("-" if ok is None else ok)))
    return out


def report(results: dict, bw: dict, device: torch.device, args) -> dict:
    bps = bw["bytes_per_s"]
    rows_by_config, roof_rows, check_rows, errors = {}, [], [], {}
    for name, r in results.items():
        main, comp, fused = r["main"], r.get("compile"), r.get("fused")
        rows_by_config[name] = mode_rows(name, main, comp, bps, device, fused)
        wb = main.get("weight_bytes_per_token")
        if wb:
            ops = main.get("ops", {}).get("per_step")
            b1 = main.get("server", {}).get("b1_tok_s")
            roof_rows.append(dict(config=name, model=main.get("model"), params_m=main["params"] / 1e6,
                                  dtype=main["dtype"], weight_mb=wb / 1e6, roof_b1=bps / wb,
                                  roof_bB=args.batch * bps / wb, ttft_floor_ms=wb / bps * 1e3, ops=ops,
                                  us_per_op=1e6 / b1 / ops if ops and b1 else None))
        for path, c in (("server", main.get("checks")), ("compile", (comp or {}).get("checks")),
                        ("fused", (fused or {}).get("checks"))):
            if not c:
                continue
            g, b, sb = c["greedy_fp32"], c["bf16_logits"] or {}, c.get("seeded_batch")  # no bf16 check: compile
            batched = "equal" if g["batched_equal"] else mismatch_text(g["batched_first_mismatch"])
            seeded = f"{sb['differ']} of {sb['rows']} differ ({main['dtype']})" if sb else "-"
            check_rows.append(dict(config=name, greedy=g["ok"], greedy_what=f"{g['rows']} rows x {g['steps']} steps, "
                                   f"{g['fast_path']}", mismatch=mismatch_text(g["first_mismatch"]),
                                   batched=batched, bf16=b.get("ok", "-"), rel_rms=b.get("rel_rms"),
                                   max_abs=b.get("max_abs"), top1=b.get("top1_agree"), seeded=seeded))
        profiles = (("fused step", (fused or {}).get("kernels")), ("forward", (fused or {}).get("kernels_forward")))
        for label, k in profiles:
            if k:
                print(f"\n{name}: GPU kernels of one batch-1 decode step, {label}: {k['per_step']} kernels, "
                      f"{k['kernel_us']:,.0f} µs of kernel time")
                print(table(k["kernels"][:16], [("kernel", "kernel"), ("launches", "launches"), ("us", "µs")]))
        for rr in (main, comp or {}, fused or {}):
            for k, v in rr.get("errors", {}).items():
                errors[f"{name}/{rr.get('kind', '?')}/{k}"] = v

    rows = [row for rs in rows_by_config.values() for row in rs]
    for row in rows:
        for k in ("b1_roof", "bB_roof", "ttft_roof"):
            row[k + "_pct"] = pct(row.get(k))
    print(f"\nmemory bandwidth (copy of {bw['buffer_bytes'] / 2**20:.0f} MiB, read + write): "
          f"{bps / 1e9:,.1f} GB/s on {device}")
    print(table(roof_rows, [("config", "config"), ("model", "model"), ("params_m", "params M"), ("dtype", "dtype"),
                            ("weight_mb", "weights MB/token"), ("roof_b1", "roofline b1 tok/s"),
                            ("roof_bB", f"roofline b{args.batch} tok/s"), ("ttft_floor_ms", "TTFT floor ms"),
                            ("ops", "ops/step"), ("us_per_op", "server b1 µs/op")]))
    print(f"\ndecode: prompt {args.prompt_len} tokens, {args.steps} new tokens, sampling {APP_SAMPLING}; "
          f"medians of {args.repeats}; * = the path the app uses on {device.type}")
    print(table(rows, [("config", "config"), ("mode", "mode"), ("app", "app"), ("b1_tok_s", "b1 tok/s"),
                       ("b1_roof_pct", "b1 %roof"), ("b1_x_eager", "b1 x eager"), ("b1_x_naive", "b1 x naive"),
                       ("bB_tok_s", f"b{args.batch} tok/s"), ("bB_roof_pct", f"b{args.batch} %roof"),
                       ("bB_x_eager", f"b{args.batch} x eager-b1"), ("bB_e2e_tok_s", f"b{args.batch} e2e tok/s"),
                       ("ttft_ms", "TTFT ms"), ("ttft_roof_pct", "TTFT %floor"), ("warmup_s", "warm-up s")]))
    if check_rows:
        print("\ncorrectness: fp32 greedy, fast path (each prompt alone) == eager engine; bf16 logits vs fp32 "
              f"(rel RMS <= {BF16_REL_RMS:.4f}, max |diff| <= {BF16_MAX_ABS:.3f})")
        print(table(check_rows, [("config", "config"), ("greedy", "greedy fp32"), ("greedy_what", "compared"),
                                 ("mismatch", "first mismatch"), ("batched", "same rows batched (info)"),
                                 ("bf16", "bf16 logits"), ("rel_rms", "rel RMS"),
                                 ("max_abs", "max |diff|"), ("top1", "top-1 agree"),
                                 ("seeded", "seeded replies alone vs batched")]))
    targets = target_rows(rows_by_config, device, args.quick)
    if targets:
        print("\ntargets (the app's path, and the compiled and fused steps where measured):")
        print(table(targets, [("target", "target"), ("path", "path"), ("measured", "measured"), ("result", "result")]))
    standins = [r["main"].get("model") for r in results.values() if r["main"].get("standin")]
    if standins:
        print("\nNOTE: 'default' is a STAND-IN (random weights, TrainConfig's default config): "
              + (results["default"]["main"].get("note") or ""))
    if errors:
        print("\nERRORS:")
        for k, v in errors.items():
            print(f"--- {k}\n{v}")
    return dict(rows=rows, roofline=roof_rows, checks=check_rows, targets=targets, errors=errors)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--configs", default=None, help=f"comma-separated from {','.join(ALL)} "
                                                    "(default: all on cuda, 'default' on cpu)")
    p.add_argument("--steps", type=int, default=256, help="new tokens per stream (default 256)")
    p.add_argument("--batch", type=int, default=None,
                   help="rows decoded together for the aggregate (default: the app's max_batch, 32 GPU / 8 CPU)")
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--repeats", type=int, default=None,
                   help="timed runs per measurement, median reported (default 3 on cuda, 5 on cpu)")
    p.add_argument("--ttft-repeats", type=int, default=10)
    p.add_argument("--compile", action="store_true", help="also measure the torch.compile'd fast path (batch 1)")
    p.add_argument("--fused", action="store_true", help="also measure the fused Triton decode step "
                   "(gpt/fused_decode.py): speed, kernels per step, and its checks")
    p.add_argument("--no-checks", action="store_true", help="skip the correctness checks")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads in the model processes")
    p.add_argument("--dtype", default="auto", choices=["auto", *DTYPES],
                   help="auto = what the app serves in: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--quick", action="store_true", help="toy sizes and few steps: exercises every path in seconds")
    p.add_argument("--worker-timeout", type=float, default=420.0, help="seconds per model process")
    p.add_argument("--out", default=None, help="JSON path (default bench/results/decode_<device>.json)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is not None:
        worker(json.loads(args.worker))
        return {}

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but CUDA is not available")
    configs = args.configs.split(",") if args.configs else (list(ALL) if device.type == "cuda" else ["default"])
    unknown = [c for c in configs if c not in ALL]
    if unknown:
        p.error(f"unknown configs {unknown}; choose from {ALL}")
    if args.repeats is None:
        args.repeats = 3 if device.type == "cuda" else 5
    if args.batch is None:
        args.batch = 32 if device.type == "cuda" else 8  # demo.models.Models: the app's max_batch
    if args.quick:
        args.steps, args.batch, args.repeats, args.ttft_repeats = min(args.steps, 32), min(args.batch, 4), 1, 2
    out_path = args.out or str(RESULTS / f"decode_{device.type}{'_quick' if args.quick else ''}.json")

    info = machine_info(device)
    if args.threads:
        torch.set_num_threads(args.threads)
        info["torch_threads"] = args.threads
    print(f"{info['date']}  {info.get('gpu', info['cpu_model'])}  torch {info['torch']}  "
          f"({info['nproc']} CPUs, {info['torch_threads']} torch threads)", flush=True)
    if device.type == "cpu" and busy_warning(info):
        print(busy_warning(info), flush=True)
    nbytes = (2**26 if args.quick else 2**28) if device.type == "cpu" else 2**30
    bw = copy_bandwidth(device, nbytes, 5 if device.type == "cpu" else 50)
    print(f"copy bandwidth: {bw['bytes_per_s'] / 1e9:,.1f} GB/s", flush=True)

    dtype = str(app_dtype(device, args.dtype)).replace("torch.", "")
    print(f"serving dtype: {dtype}", flush=True)
    if args.fused and not fused_decode.available(device):
        print(f"--fused: the fused decode step needs CUDA and Triton; not measured on {device}", flush=True)
    spec = dict(device=str(device), dtype=dtype, threads=args.threads, quick=args.quick, steps=args.steps,
                batch=args.batch, prompt_len=args.prompt_len, repeats=args.repeats, ttft_repeats=args.ttft_repeats,
                checks=not args.no_checks, check_steps=CHECK_STEPS)
    results: dict = {}
    t0 = time.perf_counter()
    for name in configs:
        naive_tokens = 3 if args.quick else NAIVE_TOKENS[name]
        results[name] = {"main": run_worker(dict(spec, config=name, kind="main", naive_tokens=naive_tokens),
                                            args.worker_timeout)}
        if args.compile:
            results[name]["compile"] = run_worker(dict(spec, config=name, kind="compile", naive_tokens=0),
                                                  args.worker_timeout)
        if args.fused and fused_decode.available(device):
            results[name]["fused"] = run_worker(dict(spec, config=name, kind="fused", naive_tokens=0),
                                                args.worker_timeout)
    wall = time.perf_counter() - t0
    info["loadavg_end"] = loadavg()
    summary = report(results, bw, device, args)
    data = dict(benchmark="decode", machine=info, args=vars(args), wall_s=wall, bandwidth=bw,
                sampling=APP_SAMPLING, targets=summary.pop("targets"), summary=summary, results=results)
    print(f"\ntotal {wall:.0f} s; wrote {write_json(out_path, data)}")
    return data


if __name__ == "__main__":
    main()
