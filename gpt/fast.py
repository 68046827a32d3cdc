"""Fast decoding for a static batch of rows (gpt-fast style): a static KV cache, and each step captured as a CUDA graph.

Why it is fast. At batch 1 a decode step is ~35 small kernels per layer; launched one by one from Python the GPU
mostly waits for the CPU. A CUDA graph records the step's kernels once and replays them with one call; torch.compile
(optional) first fuses the small elementwise kernels, so fewer remain. Both need a step whose shapes and memory
addresses never change and which never asks the CPU for a value: the cache is a RowKVCache (positions live in a
device tensor, written with index_put), sampling is tensor-only (gpt/sampling.py) and its result is fed back as the
next input on the device. The forward is still the model's own (gpt/nanochat/); nothing here re-implements it.

On a CPU, compile=True builds the step with inductor's own C++ kernels (see CPU_COMPILE): there the cost is not launch
latency but ~250 small ops a step at ~20 µs each, and MKL's batch-1 products streaming at about half of what the two
cores can read.

Graphs are kept per shape key: decode (batch, span, width) and prefill (padded prompt length, span, width), where span
is the attention window bucket (gpt/kv_cache.py) and width the sampling candidate count (gpt/sampling.py). On CPU,
or with graphs=False, the same functions run eagerly, at exact sizes instead of buckets (see `size`).
"""
from __future__ import annotations

import shutil
from typing import Callable

import torch

from gpt.fused_decode import CANDIDATES, FusedDecode
from gpt.kv_cache import RowKVCache
from gpt.nanochat import GPT
from gpt.sampling import candidate_width, sample

MIN_SPAN = 128  # smallest attention window bucket
MIN_PREFILL = 16  # smallest padded prompt length
TOPK_BUCKET = CANDIDATES  # sampling looks at the 64 largest logits when every sampling row has top_k <= 64 (the
# fused step's sampling kernels keep the same candidates)


# How inductor builds the compiled decode step, per device type.
# GPU: coordinate-descent tuning lets inductor turn batch-1 matmuls into reductions fused with the norms around them,
# tuned per shape (measured on an H100: tiny 262 -> 222 µs per step, d20 about equal).
# CPU: `freezing` makes the weights constants, so inductor packs them once for its own AVX-512/AVX2 GEMM template
# (`max_autotune` with the CPP backend picks it per shape against MKL) and fuses the norms and residual adds into the
# products' epilogues; `cpp_wrapper` calls the step's kernels from C++ instead of Python. Measured on the 2-core Zen 4
# VM, default model, batch 1, float32: the step alone 280-318 tokens/s against 99 eager (bench/README.md); the packed
# products stream at ~2x MKL's rate.
# The price: ~45 s of compiling per (batch, span, width) key on two cores, every process start (the packed weights
# are mkldnn tensors, which inductor's on-disk cache cannot pickle), and the served weights are baked in.
GPU_COMPILE = {"coordinate_descent_tuning": True}
CPU_COMPILE = {"freezing": True, "max_autotune": True, "max_autotune_gemm_backends": "CPP,ATEN",
               "cpp_wrapper": True, "autotune_num_choices_displayed": 0, "max_autotune_report_choices_stats": False}


RECOMPILE_LIMIT = 256  # compiled decode keys of one process (each decoder's keys count: its `self` is in the guards)


def cpu_compiler() -> str | None:
    """The C++ compiler inductor would call on a CPU (its `cpp.cxx` candidates, then $CXX), or None: without one
    there is no compiled CPU step."""
    names = [c for c in torch._inductor.config.cpp.cxx if c]
    return next(filter(None, map(shutil.which, names)), None)


def compiled_step(fn: Callable, device: torch.device) -> Callable:
    """torch.compile(fn) as one graph per distinct argument tuple, built with `device`'s settings. The settings are
    applied around every call, not passed as torch.compile options: dynamo decides whether parameters are frozen
    while it traces, from the global inductor config, before any option reaches inductor."""
    # fullgraph makes a graph break an error instead of a silent fall back to eager
    step = torch.compile(fn, dynamic=False, fullgraph=True)
    settings = CPU_COMPILE if device.type == "cpu" else GPU_COMPILE
    compiled: set[tuple] = set()

    def run(*args):
        if args not in compiled:
            # Every key is a recompile of the same code (6 batch x 5 span x 2 width buckets at most, per decoder in
            # the process), past dynamo's default limit of 8. Its config is per thread: set where the step runs.
            with torch._inductor.config.patch(settings), torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
                out = step(*args)
            compiled.add(args)
            return out
        # A key already compiled: the decoder's tensors never change shape or place (and frozen weights are baked
        # in), so only the guards that tell its graphs apart need to run (on the 2-core CPU 292 -> 309 tokens/s).
        with torch.compiler.set_stance("default", skip_guard_eval_unsafe=True):
            return step(*args)
    return run


def bucket(n: int, minimum: int, maximum: int) -> int:
    """The next power of two >= n (at least `minimum`), capped at `maximum`."""
    size = minimum
    while size < n:
        size *= 2
    return min(size, maximum)


def width_bucket(rows: list) -> int | None:
    """Sampling candidate width for rows with .temperature/.top_k: TOPK_BUCKET or the whole vocab (None)."""
    width = candidate_width(rows)
    return TOPK_BUCKET if width is not None and width <= TOPK_BUCKET else None


class StaticDecoder:
    """B rows decoded together. Per row: its cache positions, the token it feeds next, and its sampling settings,
    all device tensors that the owner writes between steps. `decode()` advances every row by one token."""

    def __init__(self, model: GPT, batch_size: int, n_sampled: int | None = None, graphs: bool | None = None,
                 compile: bool = False, fused: bool = False):
        model.check_fused()  # forward trusts the fusion from here on (and a graph or compile bakes it in)
        if compile and fused:
            raise ValueError("compile and fused are two ways to fuse the decode step: pick one")
        self.model, self.batch_size = model, batch_size
        self.seq_len = model.config.sequence_len
        self.n_sampled = n_sampled or model.config.vocab_size
        self.cache = RowKVCache.for_model(model, batch_size)
        dev = self.device = model.get_device()
        self.tokens = torch.zeros(batch_size, dtype=torch.long, device=dev)  # what each row feeds next
        self.temperature = torch.zeros(batch_size, device=dev)
        self.top_k = torch.ones(batch_size, dtype=torch.long, device=dev)
        self.top_p = torch.ones(batch_size, device=dev)
        self.seed = torch.zeros(batch_size, dtype=torch.long, device=dev)
        # prefill inputs (one row at a time): padded prompt, its row, its true length
        self.prompt = torch.zeros(1, self.seq_len, dtype=torch.long, device=dev)
        self.row = torch.zeros(1, dtype=torch.long, device=dev)
        self.prompt_len = torch.ones(1, dtype=torch.long, device=dev)
        self.use_graphs = (dev.type == "cuda") if graphs is None else graphs
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.pool = torch.cuda.graph_pool_handle() if self.use_graphs else None
        self._decode_fn = self._decode_step
        if compile:  # one whole-step graph per (batch, span, width) key
            if dev.type == "cpu" and cpu_compiler() is None:
                raise RuntimeError("compiling the decode step on a CPU needs a C++ compiler (g++ or $CXX); none found")
            self._decode_fn = compiled_step(self._decode_step, dev)
        # fused: decode steps in 5 kernels per layer (gpt/fused_decode.py) instead of the model's forward; prefill
        # stays the forward's (one long matrix product per weight is already what the GPU likes)
        self.fused = FusedDecode(model, self.cache, self.n_sampled) if fused else None
        self._prefill_fn = self._prefill_step  # prompts vary in length: graphs per bucket, no compile
        self.static_shapes = self.use_graphs or compile  # every distinct decode shape is a graph capture or a compile

    def size(self, n: int, minimum: int, maximum: int, static: bool | None = None) -> int:
        """The size to run for n (batch rows, attention span, prompt length): a power-of-two bucket where shapes
        must come from a small set (`static`, default: the decode step's, graphs or compile), else n itself, so that
        an eager step (the CPU) attends to exactly the keys that exist and computes no padding."""
        static = self.static_shapes if static is None else static
        return bucket(n, minimum, maximum) if static else min(max(n, 1), maximum)

    # ---- the two steps (pure tensor work: capturable) ----------------------------------------------------------

    def _decode_step(self, b: int, span: int, width: int | None) -> torch.Tensor:
        if self.fused is not None:  # every row attends to exactly its own keys: no span
            return self.fused.step(b, self.tokens, self.temperature, self.top_k, self.top_p, self.seed, width)
        tokens = self.tokens[:b]
        cache = self.cache.step(span, batch=b, mask_free=not self.static_shapes and b == 1)
        logits = self.model(tokens[:, None], kv_cache=cache)[:, -1, : self.n_sampled]
        # counter = the sampled token's position = the row's position after this step (as in Engine.stream)
        nxt = sample(logits, self.temperature[:b], self.top_k[:b], self.top_p[:b], self.seed[:b],
                     self.cache.pos[:b], width)
        tokens.copy_(nxt)
        return nxt

    def _prefill_step(self, T: int, span: int, width: int | None) -> torch.Tensor:
        row = self.row
        start = self.cache.pos[row]
        # The prompt may be padded to T: its last real token is carried (valid). Without graphs span == start + T,
        # exactly the keys there, so the model's causal rule applies (mask_free).
        cache = self.cache.step(span, rows=row, mask_free=not self.use_graphs, valid=self.prompt_len)
        logits = self.model(self.prompt[:, :T], kv_cache=cache)[0, :, : self.n_sampled]  # [T, V]
        last = logits.index_select(0, self.prompt_len - 1)  # the last real (unpadded) prompt position
        end = start + self.prompt_len
        self.cache.pos[row] = end  # padding positions hold garbage, invisible until overwritten
        nxt = sample(last, self.temperature[row], self.top_k[row], self.top_p[row], self.seed[row], end, width)
        self.tokens[row] = nxt
        return nxt

    # ---- running them: eagerly or as graph replays ---------------------------------------------------------------

    def _run(self, key: tuple, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        if not self.use_graphs:
            return fn()
        if key not in self.graphs:
            self.graphs[key] = self._capture(fn)
        graph, out = self.graphs[key]
        graph.replay()
        return out

    def _capture(self, fn: Callable[[], torch.Tensor]) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self.warm_up(fn)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            out = fn()
        return graph, out

    def warm_up(self, fn: Callable[[], torch.Tensor], runs: int = 2) -> None:
        """Run a step `runs` times and leave no trace of it (before a capture: compilation, cuBLAS workspaces). The
        runs really execute: they write K/V at the rows' current positions (harmless: the next real step overwrites
        them) and move what a step reads back: positions, tokens and each row's carried embedding (the smear's
        previous token), all restored."""
        state = (self.cache.pos, self.tokens, self.cache.prev)
        saved = [x.clone() for x in state]
        for _ in range(runs):
            fn()
            for x, before in zip(state, saved):
                x.copy_(before)

    @torch.inference_mode()
    def decode(self, batch: int, span: int, width: int | None) -> torch.Tensor:
        """One token for each of the first `batch` rows ([batch] on the device). span must cover every running
        row's position + 1. Use few distinct values (buckets): each one is a graph (and a compile). Eagerly (no
        graphs, no compile) the decoder narrows span itself to exactly the highest position + 1."""
        if self.fused is not None:
            span = 0  # the fused step reads each row's keys up to its own position: one graph per (batch, width)
        elif not self.static_shapes:  # eager: read the positions (cheap off a GPU) and attend to exactly the keys
            span = int(self.cache.pos[:batch].max()) + 1
        return self._run(("decode", batch, span, width), lambda: self._decode_fn(batch, span, width))

    @torch.inference_mode()
    def prefill(self, row: int, prompt_ids: list[int], width: int | None, start: int = 0) -> torch.Tensor:
        """Run `row`'s prompt, sample its first token ([1] on the device; also fed next by decode). The row's cache
        already holds positions [0, start) of this prompt (a kept prefix: gpt/serving.py), so only the tokens from
        `start` on are computed; the token before them gives the smear its carried embedding."""
        if not 0 <= start < len(prompt_ids):
            raise ValueError(f"start {start} must leave at least one of the {len(prompt_ids)} prompt tokens to compute")
        n = len(prompt_ids) - start
        # Prefill is never compiled (prompts vary in length), so only graphs need its shapes from buckets: on a CPU
        # with a compiled decode step it still runs at exact sizes (padded to buckets, the default model's first token
        # took 25.6 ms instead of 11 on the 2-core CPU).
        T = self.size(n, MIN_PREFILL, self.seq_len - start, self.use_graphs)  # padding must not write past the cache
        self.prompt[0, :n] = torch.tensor(prompt_ids[start:], dtype=torch.long).to(self.device, non_blocking=True)
        self.row.fill_(row)
        self.prompt_len.fill_(n)
        self.cache.pos[row] = start
        if start:
            self.cache.prev[row] = self.model.carried_embedding(prompt_ids[start - 1]).to(self.cache.prev.dtype)
        span = self.size(start + T, MIN_SPAN, self.seq_len, self.use_graphs)
        return self._run(("prefill", T, span, width), lambda: self._prefill_fn(T, span, width))

    def set_row(self, row: int, temperature: float, top_k: int | None, top_p: float, seed: int) -> None:
        """A session's sampling settings for its row (device writes, ordered before the next step)."""
        self.temperature[row] = temperature
        self.top_k[row] = top_k or 0
        self.top_p[row] = top_p
        self.seed[row] = seed

    def clear_row(self, row: int) -> None:
        """An idle row samples greedily from the 1 largest logit: it never widens the step's candidate set."""
        self.set_row(row, 0.0, 1, 1.0, 0)
