"""The /v1 API's throughput next to the Chat tab's, on the same engine: `python3 bench/api_bench.py`.

It starts the real app (`python app.py`, the default model) in a child process and sends it, for each number of
concurrent streams k, k chat replies through the Chat tab (gradio_client, /respond, each its own session) and then the
same k replies through the OpenAI-compatible API (streamed chat completions over plain HTTP, as any client sends
them): the same prompt, settings and seeds, so both paths decode the same tokens (the JSON says whether the texts
agreed) and the numbers compare the two ways in, not two workloads. Reported per path and k: the wall time from the
first request sent to the last reply's end, the tokens decoded, their sum over the wall time (tokens/s, all streams
together) and the median of each stream's own tokens/s (request sent -> its last event). Each (path, k) runs
--repeats times, the two paths taking turns, and the run of median wall time is shown: on a shared machine the load
moves both alike.
"""
from __future__ import annotations

import argparse
import html
import json
import re
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, machine_info, median, table, write_json  # noqa: E402
from bench.serve_bench import Server, user  # noqa: E402

MESSAGE = "Tell me a long story about the sea."
SETTINGS = dict(temperature=1.0, top_p=1.0)  # top_k off: the API's default, the Chat tab's slider at 0


def chat_tab(client, seed: int, max_tokens: int) -> tuple[str, int, float]:
    """One reply through the Chat tab (`client`: a gradio_client session, made beforehand): (its text, its tokens as
    the stats line counts them, seconds)."""
    start = time.perf_counter()
    chat, stats, *_ = client.predict(user(MESSAGE), SETTINGS["temperature"], 0, SETTINGS["top_p"], max_tokens,
                                     str(seed), api_name="/respond")
    seconds = time.perf_counter() - start
    text = html.unescape("".join(part["text"] for part in chat[-1]["content"]))
    return text, int(re.match(r"\*\*(\d+)\*\*", stats)[1]), seconds


def api(url: str, model: str, seed: int, max_tokens: int) -> tuple[str, int, float]:
    """One reply through /v1/chat/completions, streamed: (its text, completion_tokens, seconds)."""
    import httpx

    body = {"model": model, "messages": [{"role": "user", "content": MESSAGE}], "max_tokens": max_tokens,
            "seed": seed, "stream": True, "stream_options": {"include_usage": True}, **SETTINGS}
    text, tokens = "", None
    start = time.perf_counter()
    with httpx.stream("POST", f"{url}v1/chat/completions", json=body, timeout=600) as response:
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            text += "".join(c["delta"].get("content") or "" for c in chunk["choices"])
            tokens = chunk["usage"]["completion_tokens"] if chunk.get("usage") else tokens
    return text, tokens, time.perf_counter() - start


def together(fns: list, seeds: list[int]) -> tuple[list[tuple[str, int, float]], float]:
    """fns[i](seeds[i]) all at once, each in its own thread: the results and the wall time."""
    results: list = [None] * len(fns)

    def run(i: int) -> None:
        results[i] = fns[i](seeds[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, time.perf_counter() - start


def row(path: str, k: int, runs: list[tuple[list, float]]) -> dict:
    """The run of median wall time among `runs` (each: the k results, the wall time)."""
    results, wall = sorted(runs, key=lambda run: run[1])[len(runs) // 2]
    tokens = sum(r[1] for r in results)
    return {"path": path, "streams": k, "runs": len(runs), "wall_s": wall, "walls_s": [w for _, w in runs],
            "tokens": tokens, "tokens_per_s": tokens / wall,
            "stream_tokens_per_s_median": median([r[1] / r[2] for r in results])}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--streams", default="1,4,8", help="numbers of concurrent replies")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3, help="runs of each (path, streams), the two paths alternating")
    p.add_argument("--quick", action="store_true", help="1 and 2 streams of 16 tokens (checks the script runs)")
    p.add_argument("--out", default=str(RESULTS / "api_cpu.json"))
    args = p.parse_args(argv)
    counts = [1, 2] if args.quick else [int(k) for k in args.streams.split(",")]
    max_tokens, repeats = (16, 1) if args.quick else (args.max_tokens, args.repeats)

    server = Server([])
    try:
        server.wait_ready()
        import httpx
        from gradio_client import Client

        model = httpx.get(f"{server.url}v1/models").json()["data"][0]["id"]
        clients = [Client(server.url, verbose=False, analytics_enabled=False, download_files=False)
                   for _ in range(max(counts))]  # one session per concurrent chat, made before any clock starts
        chat_tab(clients[0], 0, 4), api(server.url, model, 0, 4)  # warm-up: the first reply of each path
        rows, agreed = [], []
        for k in counts:
            seeds = list(range(100 * k, 100 * k + k))
            tab_fns = [lambda s, c=c: chat_tab(c, s, max_tokens) for c in clients[:k]]
            api_fns = [lambda s: api(server.url, model, s, max_tokens)] * k
            tab, via_api = [], []
            for _ in range(repeats):
                tab.append(together(tab_fns, seeds))
                via_api.append(together(api_fns, seeds))
            rows += [row("Chat tab", k, tab), row("/v1 API", k, via_api)]
            agreed.append([a[0] == b[0] for a, b in zip(tab[0][0], via_api[0][0])])
        for client in clients:
            client.close()
    finally:
        server.close()
    columns = [("path", "path"), ("streams", "streams"), ("tokens", "tokens"), ("wall_s", "wall (s)"),
               ("tokens_per_s", "tokens/s (all)"), ("stream_tokens_per_s_median", "tokens/s (a stream, median)")]
    print(table(rows, columns))
    same = all(all(a) for a in agreed)
    print(f"\nthe same seeds gave the same text through both paths: {same}")
    data = {"machine": machine_info(__import__("torch").device("cpu")), "model": model, "message": MESSAGE,
            "settings": {**SETTINGS, "max_tokens": max_tokens}, "rows": rows, "same_text": agreed}
    print(f"wrote {write_json(args.out, data)}")
    return data


if __name__ == "__main__":
    main()
