"""vLLM's CPU build with the nanochat plugin next to our engine, on the same CPU, the default model:
`python3 bench/vllm_bench.py` (one run; needs the venv scripts/test.sh makes, $VLLM_VENV).

The default model is exported with `python -m gpt.export --format vllm`; the same chat prompts (questions rendered
as the Chat tab renders them) are answered greedily, up to --tokens tokens each, ending at the same stop tokens, first
one at a time, then all at once. Ours: gpt.engine.Engine, the plain cached loop one at a time and the batched server
(gpt/serving.py) for all at once. vLLM: one offline LLM (scripts/vllm_generate.py, one process, float32, no
torch.compile), one generate call per request and then one call for all. Both on --threads CPU threads. Engine
start-up is not timed, only the generation. Also reported: whether vLLM's greedy tokens are ours (the plugin's exactness on the trained model).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.common import RESULTS, busy_warning, fmt, machine_info, table, write_json  # noqa: E402
from gpt.checkpoint import load_default  # noqa: E402
from gpt.engine import Engine, SamplingParams  # noqa: E402
from gpt.vllm_format import to_vllm  # noqa: E402

QUESTIONS = ["Hello! How are you today?", "Tell me a short story about a cat.", "What is the capital of France?",
             "Write a poem about the sea.", "Why is the sky blue?", "What do you like to eat?",
             "Can you help me with my homework?", "What is your favourite season, and why?"]
VENV = Path(os.environ.get("VLLM_VENV", Path.home() / ".cache" / "inside-forward" / "vllm-venv"))


def ours(loaded, prompts: list[list[int]], tokens: int) -> dict:
    """Our engine: one at a time (the plain cached loop), then all at once (the batched server)."""
    params = SamplingParams(temperature=0.0, max_tokens=tokens)
    out = {}
    for mode, batched in (("one at a time", False), ("all at once", True)):
        engine = Engine(loaded.model, loaded.tokenizer, batched=batched, max_batch=len(prompts))
        engine.generate_batch(prompts[:1], SamplingParams(temperature=0.0, max_tokens=4))  # warm-up
        started = time.perf_counter()
        replies = engine.generate_batch(prompts, params)
        out[mode] = {"seconds": time.perf_counter() - started, "replies": replies}
    return out


def vllm(folder: Path, prompts: list[list[int]], tokens: int, threads: int) -> dict:
    """vLLM through scripts/vllm_generate.py: a warm-up call, each prompt alone, then all prompts in one call."""
    requests = [{"prompt": p, "max_tokens": tokens} for p in prompts]
    calls = [requests[:1]] + [[r] for r in requests] + [requests]
    work = Path(tempfile.mkdtemp(prefix="vllm-bench-"))
    (work / "job.json").write_text(json.dumps({"runs": [{"folder": str(folder), "calls": calls}], "logprobs": None,
                                               "ignore_eos": False}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "PYTHON"))} | {
        "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([str(VENV / "bin" / "python"), str(ROOT / "scripts" / "vllm_generate.py"),
                           str(work / "job.json"), str(work / "result.json")], env=env, cwd=work, capture_output=True,
                          text=True)
    if done.returncode:
        raise SystemExit(f"vLLM failed:\n{done.stderr[-4000:]}")
    run = json.loads((work / "result.json").read_text())["runs"][0]
    alone = run["calls"][1:-1]
    return {"start_s": run["start_s"],
            "one at a time": {"seconds": sum(c["seconds"] for c in alone),
                              "replies": [c["outputs"][0]["tokens"] for c in alone]},
            "all at once": {"seconds": run["calls"][-1]["seconds"],
                            "replies": [o["tokens"] for o in run["calls"][-1]["outputs"]]}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=64, help="the most tokens of each reply")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="CPU threads for both engines (torch's for ours, OpenMP's for vLLM's kernels)")
    parser.add_argument("--out", default=str(RESULTS / "vllm_cpu.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not (VENV / "bin" / "python").exists():
        raise SystemExit(f"no vLLM venv at {VENV}: run scripts/test.sh (or set VLLM_VENV)")
    info = machine_info(torch.device("cpu"))
    loaded = load_default("cpu", "float32")
    prompts = [loaded.tokenizer.render_for_completion([{"role": "user", "content": q}]) for q in QUESTIONS]
    folder = Path(tempfile.mkdtemp(prefix="vllm-default-"))
    to_vllm(loaded.model, loaded.tokenizer, folder)
    stops = {loaded.tokenizer.special_id(s) for s in ("<|assistant_end|>", "<|bos|>")}
    ours_out, vllm_out = ours(loaded, prompts, args.tokens), vllm(folder, prompts, args.tokens, args.threads)
    rows = []
    for mode in ("one at a time", "all at once"):
        a, b = ours_out[mode], vllm_out[mode]
        n_ours = sum(len(r) for r in a["replies"])
        # vLLM's reply includes the stop token it ended at; ours does not
        n_vllm = sum(len(r) - (1 if r and r[-1] in stops else 0) for r in b["replies"])
        same = all(r[: len(o)] == o for r, o in zip(b["replies"], a["replies"]))
        rows.append({"mode": mode, "requests": len(prompts), "ours_tokens": n_ours, "ours_tok_s": n_ours / a["seconds"],
                     "vllm_tokens": n_vllm, "vllm_tok_s": n_vllm / b["seconds"],
                     "ratio": (n_vllm / b["seconds"]) / (n_ours / a["seconds"]), "same_tokens": same})
    print(f"# vLLM (vllm-cpu, plugin) next to our engine: {loaded.name}, float32, {info['nproc']} CPUs "
          f"({info['cpu_model']}), {args.threads} thread(s) each, replies up to {args.tokens} tokens, greedy")
    warning = busy_warning(info)
    if warning:
        print(warning)
    print(table(rows, [("mode", "mode"), ("requests", "requests"), ("ours_tokens", "tokens"), ("ours_tok_s", "ours tok/s"),
                       ("vllm_tok_s", "vLLM tok/s"), ("ratio", "vLLM / ours"), ("same_tokens", "same tokens")]))
    print(f"vLLM engine start (not timed above): {fmt(vllm_out['start_s'])} s")
    write_json(args.out, {**info, "model": loaded.name, "tokens": args.tokens, "threads": args.threads,
                          "questions": QUESTIONS, "rows": rows,
                          "vllm_start_s": vllm_out["start_s"], "loadavg_end": list(os.getloadavg())})
    return 0


if __name__ == "__main__":
    sys.exit(main())
