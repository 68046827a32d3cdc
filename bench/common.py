"""Shared pieces of the benchmarks: the model under test, machine facts, tables and JSON.

Why a stand-in model: gpt/default/ (the trained model) may not exist yet. The benchmarks then run a random-weight model
of the same config as gpt/training/train.py's TrainConfig defaults and say so in every table and JSON file, so a
number is never mistaken for the trained model's. Speed does not depend on the weights' values, only on the config.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # scripts run as `python3 bench/x.py`: make gpt/ and explain/ importable
    sys.path.insert(0, str(ROOT))

from gpt import nanochat  # noqa: E402
from gpt.checkpoint import build_model, default_dtype, load_default  # noqa: E402
from gpt.nanochat import GPT, GPTConfig  # noqa: E402
from gpt.tokenizer import SPECIAL_TOKENS, Tokenizer  # noqa: E402

# nanochat's d20 (the speedrun's model, 561M parameters): the size every GPU figure of bench/ is measured at
D20 = GPTConfig(sequence_len=2048, vocab_size=65536, n_layer=20, n_head=10, n_kv_head=10, n_embd=1280)

RESULTS = ROOT / "bench" / "results"
# TrainConfig's model fields as of this writing; used only if gpt/training/train.py cannot be imported (another
# engineer is editing it): the JSON records which source was used.
_TRAIN_DEFAULTS_COPY = dict(sequence_len=512, vocab_size=8192, n_layer=8, n_head=5, n_kv_head=5, n_embd=320)


@dataclass
class ModelUnderTest:
    """A model and tokenizer, with an honest name: `standin` is True when it is not the trained default."""
    model: GPT
    tokenizer: Tokenizer
    name: str
    standin: bool
    note: str = ""  # why the stand-in was used


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def app_dtype(device: torch.device, override: str = "auto") -> torch.dtype:
    """The dtype the app serves in on this device (gpt.checkpoint.default_dtype: bf16 on CUDA, fp32 on a CPU), so
    the numbers are what users get; `override` forces one."""
    if override != "auto":
        return DTYPES[override]
    return default_dtype(device)


def default_config() -> tuple[GPTConfig, str]:
    """TrainConfig's default model config, and where it came from."""
    try:
        from gpt.training.train import TrainConfig
        return TrainConfig().model_config(), "gpt.training.train.TrainConfig()"
    except Exception as e:  # noqa: BLE001 - the file is being edited concurrently; fall back to a recorded copy
        return GPTConfig(**_TRAIN_DEFAULTS_COPY), f"copy of TrainConfig defaults (import failed: {type(e).__name__})"


def synthetic_tokenizer(vocab_size: int) -> Tokenizer:
    """A tokenizer with exactly `vocab_size` ids (nanochat's 9 specials last), built without training.

    Ids 0..255 are the bytes (so any text encodes); the rest are distinct placeholder strings "<id>" that encoding
    never produces but decoding prints. Random-weight configs need a tokenizer whose vocab matches the model's so
    that the engine samples over the whole vocab, as it would for a real checkpoint of that size.
    """
    n_bpe = vocab_size - len(SPECIAL_TOKENS)
    if n_bpe < 256:
        raise ValueError(f"vocab_size must be at least {256 + len(SPECIAL_TOKENS)}")
    ranks = {bytes([i]): i for i in range(256)}
    ranks.update({f"<{r}>".encode(): r for r in range(256, n_bpe)})
    return Tokenizer.from_ranks(ranks, name=f"synthetic-{vocab_size}")


@torch.no_grad()
def random_weights(config: GPTConfig, device: torch.device | str, dtype: torch.dtype, seed: int = 0,
                   member: nanochat.Member = nanochat.TUTORIAL) -> GPT:
    """nanochat's init, except lm_head and the output projections are drawn like the other matrices.

    nanochat zeroes those, which makes every logit exactly 0: greedy decoding would always pick token 0 and the
    fast-vs-eager token check would pass trivially. Drawn on `device` (a d32 initialises in a second on a GPU, not
    minutes on a CPU); build_model then casts to `dtype` and recomputes the bf16 rotary tables as a checkpoint would.
    """
    torch.manual_seed(seed)
    with torch.device(device):
        model = nanochat.new_model(config, member)
        model.init_weights()
        model.draw_zeros(seed)
    return build_model(config, member, model.state_dict(), torch.device(device), dtype, "random_weights")


def model_under_test(device: torch.device, dtype: torch.dtype) -> ModelUnderTest:
    """The shipped default model, or (if it cannot be loaded) a random-weight stand-in of TrainConfig's config."""
    try:
        loaded = load_default(device=device, dtype=dtype)
        return ModelUnderTest(loaded.model, loaded.tokenizer, f"default: {loaded.name}", False)
    except Exception as e:  # noqa: BLE001 - missing, half-written or incompatible: all mean "no default model"
        config, source = default_config()
        note = f"gpt/default/ not loadable ({type(e).__name__}: {str(e)[:160]}); config from {source}"
        model = random_weights(config, device, dtype)
        return ModelUnderTest(model, synthetic_tokenizer(config.vocab_size),
                              "STAND-IN: random weights, TrainConfig default config (not the trained model)", True,
                              note)


def config_dict(model: GPT) -> dict:
    return asdict(model.config)


def n_params(model: GPT) -> int:
    return sum(p.numel() for p in model.parameters())


def weight_bytes_per_token(model: GPT) -> int:
    """Bytes of weights one batch-1 decode step must read: every matrix once, but only one row of each embedding
    (wte, and nanochat 2026's value embeddings)."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    for emb in (m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding)):
        total -= (emb.size(0) - 1) * emb.size(1) * emb.element_size()
    return total


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "") if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_info(device: torch.device) -> dict:
    """What a reader needs to compare numbers across runs: when, where, with what."""
    info = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "git": git_commit(),
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": cpu_model(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "device": str(device),
        "loadavg_start": loadavg(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, capability=f"{props.major}.{props.minor}")
    return info


def start_idle_torch_thread() -> threading.Thread:
    """A live thread that has run a torch CPU op and now sleeps, as a request thread would without the app's torch
    thread (gpt/torch_thread.py).

    Why: with OpenMP, every thread that runs torch ops owns a team of worker threads; once the teams together have
    more threads than the machine has CPUs, libgomp stops spinning between parallel regions, and a decode made of
    hundreds of tiny ops gets markedly slower in every thread. The benchmarks measure the app's way (one torch
    thread) and then, with such a thread alive, what it avoids. Irreversible for the process: start it last.
    """
    ready = threading.Event()

    def run() -> None:
        torch.ones(256, 256) @ torch.ones(256, 256)
        ready.set()
        threading.Event().wait()  # forever (daemon thread)

    thread = threading.Thread(target=run, name="idle-torch-thread", daemon=True)
    thread.start()
    ready.wait()
    return thread


def loadavg() -> list[float] | None:
    """1/5/15-minute load: on a shared machine, a load near nproc means the CPU numbers are noisy."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def busy_warning(info: dict) -> str:
    load = info.get("loadavg_start")
    if load and load[0] > 0.5 * (info.get("nproc") or 1):
        return (f"WARNING: load average {load[0]} on {info['nproc']} CPUs before starting: other processes share "
                "this machine, CPU timings will be noisy (see the *_runs lists in the JSON)")
    return ""


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def fmt(x: Any, digits: int = 3) -> str:
    """Numbers with `digits` significant figures (thousands kept whole), None as '-'."""
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "pass" if x else "FAIL"
    if isinstance(x, float):
        if math.isnan(x):
            return "-"
        if abs(x) >= 10 ** digits:
            return f"{x:,.0f}"
        return f"{x:.{digits}g}"
    return str(x)


def table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """A Markdown table (also readable in a terminal): columns are (key, header)."""
    cells = [[fmt(r.get(k)) for k, _ in columns] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, (_, h) in enumerate(columns)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    out = [line([h for _, h in columns]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    return "\n".join(out + [line(c) for c in cells])


def time_by_name(prof, gpu: bool, width: int = 90) -> list[tuple[str, int, float]]:
    """A finished torch.profiler run grouped by event name (cut to `width`): (name, calls, µs), largest time first;
    on a GPU its kernels and their GPU time, on a CPU its operations and their own CPU time (no double count of an
    operation and the ones it calls)."""
    by_name: dict[str, list] = {}
    for e in prof.events():
        if gpu and e.device_type.name != "CUDA":
            continue
        us = (e.device_time if hasattr(e, "device_time") else e.cuda_time) if gpu else e.self_cpu_time_total
        k = by_name.setdefault(e.name[:width], [0, 0.0])
        k[0] += 1
        k[1] += us
    return [(n, c, t) for n, (c, t) in sorted(by_name.items(), key=lambda kv: -kv[1][1])]


def repeated_ids(tokenizer: Tokenizer, text: str, T: int) -> list[int]:
    """<|bos|> followed by the tokens of `text` (repeated as needed), exactly T ids: a prompt of any length."""
    body = tokenizer.encode(text)
    ids = [tokenizer.bos_token_id]
    while len(ids) < T:
        ids += body
    return ids[:T]


def write_json(path: str | Path, data: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return path
