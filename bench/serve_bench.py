"""Does one heavy request stall the chats, and does the server stay small? `python3 bench/serve_bench.py`.

Issue #14's bars, on the default model and a 2-core CPU:
1. while the heaviest request the limits allow runs, a concurrent 8-token chat finishes in at most 3x its idle time,
   and the server's RSS stays under 2 GB;
2. after 500 mixed requests, RSS and disk are back within 10% of their level after the first 50.

It starts the real app (`python app.py`, the default model) in a child process with its own temp dir (where both
Gradio's cache and the app's download folders live: that folder's size is "disk") and talks to it as any API client
does (gradio_client). "Heaviest" is not guessed: for each kind of heavy request (every Inside view of the largest
batch the work budget admits, on each model the tab offers; then-and-now; the cost comparison; 64 Generate steps) the
parameters are the largest that rules/inputs.py's own checks accept, and every one is measured. The chat is timed
from the client (request sent -> last event), alone (median of IDLE_CHATS), then again and again while the heavy
request runs (each chat starts after the last one ended): the worst of those is compared with the idle median.
RSS is the server process's (VmRSS, /proc), sampled every 50 ms.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

from bench.common import RESULTS, fmt, machine_info, median, table, write_json  # noqa: E402
from rules.inputs import (GENERATE_FLOPS, MAX_GEN_STEPS, MAX_ROWS, SETTINGS, forward_fits,  # noqa: E402
                            generate_cost, max_forward_tokens)
from explain.shapes import TUTORIAL_CONFIG  # noqa: E402 - the Inside tab's tutorial models have this config
from gpt.checkpoint import load_default  # noqa: E402

CHAT_TOKENS = 8
IDLE_CHATS = 5
STALL_BAR = 3.0  # a chat during the heavy request / the idle chat
RSS_BAR = 2 * 2**30
GROWTH_BAR = 0.10
PROMPT = "Once upon a time, there was a little"


# ---- the server -----------------------------------------------------------------------------------------------------
class Server:
    """`python app.py` on a free port, in its own temp dir (TMPDIR: Gradio's cache and the app's download folders)."""

    def __init__(self, extra: list[str]):
        self.tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = dict(os.environ, TMPDIR=str(self.tmp), GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
        env.pop("GRADIO_TEMP_DIR", None)
        self.log = open(self.tmp.parent / f"{self.tmp.name}.log", "w")
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(self.port), *extra],
                                     cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}/"

    def wait_ready(self, timeout: float = 300) -> None:
        import urllib.request
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited ({self.proc.returncode}); see {self.log.name}")
            try:
                urllib.request.urlopen(self.url + "config", timeout=2)
                return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError("the app did not start")

    def rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def disk(self) -> int:
        total = 0
        for path in self.tmp.rglob("*"):
            try:
                if path.is_file() and not path.is_symlink():
                    total += path.stat().st_size
            except FileNotFoundError:  # deleted while we walked
                pass
        return total

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


class PeakRss:
    """The server's peak RSS while the `with` block runs (sampled every 50 ms)."""

    def __init__(self, server: Server):
        self.server, self.peak, self._done = server, 0, threading.Event()

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self.server.rss())
            self._done.wait(0.05)

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()


# ---- requests -------------------------------------------------------------------------------------------------------
def user(text: str) -> list[dict]:
    """A chat history holding one user message, in the Chatbot's API format."""
    return [{"role": "user", "content": [{"type": "text", "text": text}]}]


def chat(client, seed: int = 0) -> float:
    """Seconds for an 8-token greedy reply (the client sees its last event)."""
    t0 = time.perf_counter()
    client.predict(user("Tell me a story."), 0.0, 0, 1.0, CHAT_TOKENS, str(seed), api_name="/respond")
    return time.perf_counter() - t0


def random_ids(rows: int, T: int) -> str:
    return f"random {rows}x{T}"


def largest_batch(config) -> tuple[int, int]:
    """(rows, T): the longest prompt one request may run on this config, in as many rows as the budgets admit."""
    T = max_forward_tokens(config)
    return max(b for b in range(1, MAX_ROWS + 1) if forward_fits(config, b, T)), T


def heaviest_requests(config, tutorial_config) -> list[dict]:
    """The largest request of each heavy kind that the work budgets admit (rules/inputs.py decides, not us)."""
    out = []
    for which, c in (("loaded", config), ("tutorial", tutorial_config), ("tutorial_2026", tutorial_config)):
        rows, T = largest_batch(c)
        out.append(dict(name=f"inside all views, {which}, {rows}x{T}", api="/inside",
                        args=[which, "", random_ids(rows, T), 0, 0, -1, "all"]))
    rows, T = largest_batch(config)
    out.append(dict(name=f"then and now, loaded, {rows}x{T}", api="/inside",
                    args=["loaded", "", random_ids(rows, T), 0, 0, -1, "then_now"]))
    s = SETTINGS["cost_len"]
    lengths = lambda most: [n for n in (4, 8, 16, 32, 64, 128, 256) if n <= most]  # noqa: E731 - as demo/generate_tab
    prompt_len = 10  # PROMPT's tokens, about: the cost grows with the prompt, so a short one admits the longest runs
    most = max(m for m in range(int(s.lo), int(s.hi) + 1, int(s.step))
               if generate_cost(config, prompt_len, lengths(m), True) <= GENERATE_FLOPS)
    out.append(dict(name=f"generate cost comparison up to {most}", api="/generate_cost", args=[PROMPT, most]))
    out.append(dict(name=f"generate, step {MAX_GEN_STEPS} of {MAX_GEN_STEPS}", api="/generate_step",
                    args=[PROMPT, 0.8, 50, 42, MAX_GEN_STEPS, MAX_GEN_STEPS - 1]))
    return out


def stall(server: Server, client_factory, heavy: dict, idle: float) -> dict:
    """The heavy request alone, then again with chats one after another beside it."""
    heavy_client = client_factory()
    t0 = time.perf_counter()
    heavy_client.predict(*heavy["args"], api_name=heavy["api"])
    alone = time.perf_counter() - t0
    chats: list[float] = []
    done = threading.Event()
    error: list[BaseException] = []

    def run_heavy() -> None:
        try:
            heavy_client.predict(*heavy["args"], api_name=heavy["api"])
        except BaseException as e:  # noqa: BLE001 - reported
            error.append(e)
        finally:
            done.set()

    chat_client = client_factory()
    with PeakRss(server) as rss:
        start = time.perf_counter()
        thread = threading.Thread(target=run_heavy)
        thread.start()
        time.sleep(min(0.2, alone / 4))  # let it start
        while not done.is_set():
            took = chat(chat_client, seed=len(chats))
            if not done.is_set() or not chats:  # one that ended after the heavy request overlapped only part of it:
                chats.append(took)  # left out, unless it is the only one
        thread.join()
        beside = time.perf_counter() - start
    if error:
        raise error[0]
    worst = max(chats)
    return dict(request=heavy["name"], alone_s=alone, with_chats_s=beside, chats=len(chats), chat_idle_s=idle,
                chat_worst_s=worst, chat_median_s=median(chats), stall=worst / idle, peak_rss_mb=rss.peak / 2**20,
                ok=worst / idle <= STALL_BAR and rss.peak < RSS_BAR)


def mixed_requests(n: int, config) -> list[tuple[str, list]]:
    """n requests of every kind a visitor makes, in a fixed shuffled order (seed 0), of ordinary sizes."""
    rng = random.Random(0)
    T = min(64, config.sequence_len)
    kinds = [
        ("/respond", lambda: [user(rng.choice(["Hi!", "Tell me a story.", "你好"])), 0.8, 50, 1.0, 16,
                              str(rng.randrange(100))]),
        ("/inside", lambda: ["loaded", rng.choice([PROMPT, "今天天气不错，我们一起去"]), "", 0, 0, -1, "all"]),
        ("/inside", lambda: ["loaded", "", random_ids(2, T), 1, 1, -1,
                             rng.choice(["attention", "logit_lens", "training", "next_token"])]),
        ("/inside", lambda: ["tutorial", "", "100, 200, 300 | 400", 0, 0, -1, "all"]),
        ("/inside", lambda: ["tutorial", "", "random 2x128", 0, 0, -1, "then_now"]),
        ("/generate_step", lambda: [PROMPT, 0.8, 50, rng.randrange(100), 16, rng.randrange(8)]),
        ("/generate_cost", lambda: [PROMPT, 16]),
        ("/shapes", lambda: ["n_layer=4,n_head=4,n_embd=128", 2, 5, 0]),
        ("/inside", lambda: ["loaded", "", "", 0, 0, -1, "all"]),  # refused (empty): errors must not leak either
    ]
    return [(api, make()) for api, make in (rng.choice(kinds) for _ in range(n))]


def soak(server: Server, client_factory, n: int, checkpoint: int, config, clients: int) -> dict:
    """n mixed requests from `clients` sessions taking turns; RSS and disk after `checkpoint` and after n."""
    pool = [client_factory() for _ in range(clients)]
    marks, errors = {}, 0
    t0 = time.perf_counter()
    for i, (api, args) in enumerate(mixed_requests(n, config), 1):
        try:
            pool[i % clients].predict(*args, api_name=api)
        except Exception:  # noqa: BLE001 - refused requests (the empty prompt) are part of the mix
            errors += 1
        if i in (checkpoint, n):
            time.sleep(1.0)  # let the server finish its post-request work (cache copies, deletions)
            marks[i] = dict(rss_mb=server.rss() / 2**20, disk_mb=server.disk() / 2**20)
    first, last = marks[checkpoint], marks[n]
    growth = {k: last[k] / first[k] - 1 if first[k] else 0.0 for k in first}
    return dict(requests=n, checkpoint=checkpoint, clients=clients, refused=errors, seconds=time.perf_counter() - t0,
                after_checkpoint=first, after_all=last, rss_growth=growth["rss_mb"], disk_growth=growth["disk_mb"],
                ok=growth["rss_mb"] <= GROWTH_BAR and growth["disk_mb"] <= GROWTH_BAR and last["rss_mb"] * 2**20 < RSS_BAR)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--checkpoint", type=int, default=50)
    p.add_argument("--clients", type=int, default=5, help="sessions the mixed requests come from")
    p.add_argument("--only", default="", help="comma-separated substrings: measure only the heavy requests named so")
    p.add_argument("--no-soak", action="store_true")
    p.add_argument("--quick", action="store_true", help="a smoke run: one heavy request, 12 mixed requests")
    p.add_argument("--out", default=str(RESULTS / "serve_cpu.json"))
    p.add_argument("app_args", nargs="*", help="extra `python app.py` arguments (after --)")
    args = p.parse_args()
    if args.quick:
        args.requests, args.checkpoint, args.clients = 12, 4, 2
    from gradio_client import Client

    info = machine_info(__import__("torch").device("cpu"))
    config = load_default(device="cpu").model.config
    heavies = heaviest_requests(config, TUTORIAL_CONFIG)
    if args.only:
        heavies = [h for h in heavies if any(s in h["name"] for s in args.only.split(","))]
    if args.quick:
        heavies = heavies[-1:]
    server = Server(args.app_args)
    try:
        server.wait_ready()
        client_factory = lambda: Client(server.url, verbose=False, download_files=False)  # noqa: E731 - one session each
        idle_client = client_factory()
        chat(idle_client)  # warm-up
        idle = median([chat(idle_client, seed=k) for k in range(IDLE_CHATS)])
        print(f"idle {CHAT_TOKENS}-token chat: {idle * 1000:.0f} ms (median of {IDLE_CHATS}); "
              f"server RSS {server.rss() / 2**20:.0f} MB", flush=True)
        stalls = []
        for heavy in heavies:
            stalls.append(stall(server, client_factory, heavy, idle))
            print(f"  {heavy['name']}: chat x{stalls[-1]['stall']:.2f}", flush=True)
        soaked = None if args.no_soak else soak(server, client_factory, args.requests, args.checkpoint, config,
                                                args.clients)
    finally:
        server.close()
    print(f"\n# A chat beside the heaviest requests ({info['nproc']} CPUs, {info['cpu_model']})\n")
    print(table(stalls, [("request", "heavy request"), ("alone_s", "alone s"), ("with_chats_s", "beside chats s"),
                         ("chats", "chats"), ("chat_idle_s", "chat idle s"), ("chat_worst_s", "chat worst s"),
                         ("stall", f"worst/idle (bar {STALL_BAR})"), ("peak_rss_mb", "peak RSS MB"), ("ok", "bar")]))
    if soaked:
        print(f"\n# {soaked['requests']} mixed requests from {soaked['clients']} sessions "
              f"({fmt(soaked['seconds'])} s, {soaked['refused']} refused as they should be)\n")
        rows = [dict(when=f"after {soaked['checkpoint']}", **soaked["after_checkpoint"]),
                dict(when=f"after {soaked['requests']}", **soaked["after_all"]),
                dict(when="growth", rss_mb=soaked["rss_growth"], disk_mb=soaked["disk_growth"])]
        print(table(rows, [("when", ""), ("rss_mb", "RSS MB"), ("disk_mb", "disk MB")]))
        print(f"\nbar (growth <= {GROWTH_BAR:.0%}, RSS < 2 GB): {fmt(soaked['ok'])}")
    path = write_json(args.out, dict(info, bench="serve_bench", chat_tokens=CHAT_TOKENS, idle_chat_s=idle,
                                     stall_bar=STALL_BAR, stalls=stalls, soak=soaked,
                                     ok=all(s["ok"] for s in stalls) and (soaked is None or soaked["ok"])))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
