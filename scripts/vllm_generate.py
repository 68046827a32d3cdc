"""Runs in vLLM's own virtual environment, not the project's (tests/test_vllm_plugin.py and bench/vllm_bench.py
start it): serves each folder `python -m gpt.export --format vllm` wrote with vLLM's offline `LLM` in turn, in one
process, and writes what vLLM generated.

    python scripts/vllm_generate.py JOB.json RESULT.json

JOB: {"runs": [{"folder": str, "calls": [[{"prompt": [ids], "max_tokens": n, "prompt_logprobs": bool}, ...], ...],
                "eager": bool}],
      "logprobs": k or null, "ignore_eos": bool, "max_num_batched_tokens": n or null}. The calls of a run go one after
another through the same engine (a later call finds the earlier prompts in vLLM's prefix cache); the requests of a
call are one batch. Greedy; with k, the top-k logprobs of every generated and every prompt position. RESULT: per run,
the engine's start-up seconds, and per call its seconds and per request: tokens, cached_tokens, logprobs and
prompt_logprobs ({token id: logprob} per position).
"""
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# One process for everything (with distributed_executor_backend "uni" below): on 2 shared cores, vLLM's engine and
# worker processes polling each other cost more than small models' work. One OpenMP thread unless told otherwise:
# vLLM's CPU kernels open a parallel region per call, and on a busy 2-core machine waiting for the second thread made
# each call ~5 ms (a tiny model's decode step 0.13 s instead of 0.01 s). A small KV cache; nothing fetched.
ENVIRONMENT = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_NUM_THREADS": "1", "VLLM_CPU_KVCACHE_SPACE": "1",
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}


def use_this_checkouts_plugin() -> None:
    """This checkout's vllm_nanochat/ first on the path (the venv's installed copy only registers the entry point),
    through a folder holding nothing else, so the repository's other packages stay out of vLLM's way."""
    folder = Path(tempfile.mkdtemp(prefix="vllm-nanochat-"))
    (folder / "vllm_nanochat").symlink_to(Path(__file__).resolve().parents[1] / "vllm_nanochat")
    sys.path.insert(0, str(folder))


def main(job_path: str, result_path: str) -> None:
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    use_this_checkouts_plugin()
    from vllm import LLM, SamplingParams

    job = json.loads(open(job_path, encoding="utf-8").read())
    k = job.get("logprobs")
    results = []
    for run in job["runs"]:
        started = time.perf_counter()
        llm = LLM(model=run["folder"], dtype="float32", seed=0, enforce_eager=run.get("eager", True),
                  distributed_executor_backend="uni", max_num_batched_tokens=job.get("max_num_batched_tokens"))
        start_s = time.perf_counter() - started
        calls = []
        for requests in run["calls"]:
            # prompt logprobs make vLLM skip its prefix cache for the request: a request may go without them
            params = [SamplingParams(temperature=0.0, max_tokens=r["max_tokens"], ignore_eos=job.get("ignore_eos", True),
                                     logprobs=k, prompt_logprobs=k if r.get("prompt_logprobs", True) else None)
                      for r in requests]
            call_started = time.perf_counter()
            outputs = llm.generate([{"prompt_token_ids": r["prompt"]} for r in requests], params, use_tqdm=False)
            seconds = time.perf_counter() - call_started
            calls.append({"seconds": seconds, "outputs": [{
                "tokens": list(o.outputs[0].token_ids),
                "cached_tokens": o.num_cached_tokens or 0,  # the prompt's tokens found in vLLM's prefix cache
                "logprobs": [{str(t): lp.logprob for t, lp in step.items()} for step in o.outputs[0].logprobs or []],
                "prompt_logprobs": [None if step is None else {str(t): lp.logprob for t, lp in step.items()}
                                    for step in o.prompt_logprobs or []],
            } for o in outputs]})
        results.append({"folder": run["folder"], "start_s": start_s, "seconds": time.perf_counter() - started,
                        "calls": calls})
        del llm
        gc.collect()
    open(result_path, "w", encoding="utf-8").write(json.dumps({"runs": results}))


if __name__ == "__main__":  # vLLM's engine may start processes that import this file again
    main(sys.argv[1], sys.argv[2])
