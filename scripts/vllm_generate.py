"""Runs in vLLM's own virtual environment, not the project's (tests/test_vllm_plugin.py starts it): serves each
exported folder of a job with vLLM's offline `LLM` in turn, in one process, and writes what vLLM generated.

    python tests/vllm_driver.py JOB.json RESULT.json

JOB: {"runs": [{"folder": str, "calls": [[{"prompt": [ids], "max_tokens": n}, ...], ...], "eager": bool}],
      "logprobs": k, "max_num_batched_tokens": n}. The calls of a run go one after another through the same engine
(a later call finds the earlier prompts in vLLM's prefix cache); the requests of a call are one batch. Greedy, EOS
ignored, the top-k logprobs of every generated and every prompt position. RESULT: per run, per call, per request:
tokens, logprobs and prompt_logprobs ({token id: logprob} per position), and the engine's start-up seconds.
"""
import gc
import json
import sys
import time


def main(job_path: str, result_path: str) -> None:
    from vllm import LLM, SamplingParams

    job = json.loads(open(job_path, encoding="utf-8").read())
    k = job["logprobs"]
    results = []
    for run in job["runs"]:
        started = time.perf_counter()
        # One process for everything ("uni", and VLLM_ENABLE_V1_MULTIPROCESSING=0 from the caller): on 2 shared cores
        # the engine and worker processes' polling costs more than the tiny models' work.
        llm = LLM(model=run["folder"], dtype="float32", seed=0, enforce_eager=run.get("eager", True),
                  distributed_executor_backend="uni", max_num_batched_tokens=job["max_num_batched_tokens"])
        start_s = time.perf_counter() - started
        calls = []
        for requests in run["calls"]:
            params = [SamplingParams(temperature=0.0, max_tokens=r["max_tokens"], ignore_eos=True, logprobs=k,
                                     prompt_logprobs=k) for r in requests]
            outputs = llm.generate([{"prompt_token_ids": r["prompt"]} for r in requests], params, use_tqdm=False)
            calls.append([{
                "tokens": list(o.outputs[0].token_ids),
                "logprobs": [{str(t): lp.logprob for t, lp in step.items()} for step in o.outputs[0].logprobs],
                "prompt_logprobs": [None if step is None else {str(t): lp.logprob for t, lp in step.items()}
                                    for step in o.prompt_logprobs],
            } for o in outputs])
        results.append({"folder": run["folder"], "start_s": start_s, "seconds": time.perf_counter() - started,
                        "calls": calls})
        del llm
        gc.collect()
    open(result_path, "w", encoding="utf-8").write(json.dumps({"runs": results}))


if __name__ == "__main__":  # vLLM's engine may start processes that import this file again
    main(sys.argv[1], sys.argv[2])
