"""vLLM with the nanochat plugin (vllm_nanochat/) serves every member of the family as our engine does.

The trees nanochat's own code wrote (tests/fixtures/nanochat/, one per forward nanochat had) are exported with
`python -m gpt.export --format vllm` and served by vLLM's CPU build, which lives in its own virtual environment
(scripts/test.sh makes it: $VLLM_VENV, by default ~/.cache/inside-forward/vllm-venv; these tests are skipped without
it). One subprocess serves every tree with vLLM's offline `LLM` in turn (scripts/vllm_generate.py), one engine start
per tree; one tree also goes through vLLM's OpenAI-compatible HTTP server.

Held against two computations of ours: the greedy tokens of our Engine (gpt/engine.py: prefill once, then one token
per step through its KV cache), and the log-softmax of our model's full forward over the same tokens (float32, no
cache): every logprob vLLM reports (its top 5 at every generated and every prompt position) within 1e-3. The prompts
put the decode across each member's short window and run 64+ tokens past it, feed a prompt longer than the window
through chunked prefill (128 tokens a step), batch two sequences, and hit vLLM's prefix cache.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gpt import nanochat
from gpt.anywhere import load
from gpt.engine import Engine, SamplingParams
from gpt.export import main as export_main
from gpt.stream import stop_token_ids
from gpt.vllm_format import ARCHITECTURE, MODEL_TYPE

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "nanochat"
TREES = ["4a87a0d", "f1bf69d", "aa530cd", "fbc1484", "e85db6b", "aba30cb", "1076f97", "6ed7d1d", "a825e63", "92d63d4"]
HTTP_TREE = "92d63d4"  # today's nanochat
VENV = Path(os.environ.get("VLLM_VENV", Path.home() / ".cache" / "inside-forward" / "vllm-venv"))
VLLM_PYTHON = VENV / "bin" / "python"
TOP = 5  # logprobs vLLM reports per position
TOLERANCE = 1e-3
PAST_WINDOW = 64  # greedy tokens that must agree beyond the short window
BATCH_TOKENS = 128  # vLLM's tokens per engine step: longer prompts are prefilled in chunks

needs_vllm = pytest.mark.skipif(not VLLM_PYTHON.exists(), reason=f"no vLLM virtual environment at {VENV} "
                                                                  f"(scripts/test.sh makes it)")


def vllm_env(plugin_path: Path | None = None) -> dict[str, str]:
    """The environment of a vLLM process: none of this project's Python settings, and for the server (which
    scripts/vllm_generate.py's settings do not reach) this checkout's plugin first on the path (the venv's installed
    copy only registers the entry point), one OpenMP thread (see there), a small KV cache, nothing fetched."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "PYTHON"))}
    if plugin_path is None:
        return env
    return env | {"PYTHONPATH": str(plugin_path), "OMP_NUM_THREADS": "1", "VLLM_CPU_KVCACHE_SPACE": "1",
                  "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}


def short_window(model: nanochat.GPT) -> int:
    """The member's short window; a member without windows is given the smallest one of the family (256), so its
    prompts are as long."""
    windows = [w for w in model.window_sizes if w is not None]
    return min(windows) if windows else 256


def requests_for(model: nanochat.GPT, ids: list[int]) -> list[list[dict]]:
    """Two calls through one engine. First a batch of two: A's decode crosses the short window S and runs 71 tokens
    past it; B's prompt is longer than S (prefilled in chunks). Then C, B's prompt and 5 more tokens: its first full
    blocks come from vLLM's prefix cache, so the smear reads a cached previous token (no prompt logprobs for C:
    vLLM reads no cache for a request that asks for them)."""
    S = short_window(model)
    return [[{"prompt": ids[: S - 24], "max_tokens": 96}, {"prompt": ids[: S + 40], "max_tokens": 64}],
            [{"prompt": ids[: S + 45], "max_tokens": 8, "prompt_logprobs": False}]]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    """Every tree through `python -m gpt.export --format vllm` (--arch: three trees' files look like e85db6b's)."""
    out = tmp_path_factory.mktemp("vllm")
    folders = {}
    for commit in TREES:
        folders[commit] = out / commit
        assert export_main(["--model", str(FIXTURES / commit), "--format", "vllm", "--arch", commit,
                            str(folders[commit])]) == 0
    (out / "plugin").mkdir()
    (out / "plugin" / "vllm_nanochat").symlink_to(ROOT / "vllm_nanochat")
    return folders


@pytest.fixture(scope="module")
def ours() -> dict[str, object]:
    return {commit: load(FIXTURES / commit, device="cpu", dtype="float32", arch=commit) for commit in TREES}


def prompt_ids(commit: str) -> list[int]:
    return load_file(FIXTURES / commit / "reference.safetensors")["ids"][0].tolist()


@pytest.fixture(scope="module")
def served(exported, ours, tmp_path_factory) -> dict[str, dict]:
    """vLLM's outputs for every tree: one subprocess in vLLM's venv, every engine in turn."""
    work = tmp_path_factory.mktemp("driver")
    runs = [{"folder": str(exported[c]), "calls": requests_for(ours[c].model, prompt_ids(c))} for c in TREES]
    (work / "job.json").write_text(json.dumps({"runs": runs, "logprobs": TOP, "ignore_eos": True,
                                               "max_num_batched_tokens": BATCH_TOKENS}))
    started = time.perf_counter()
    done = subprocess.run([str(VLLM_PYTHON), str(ROOT / "scripts" / "vllm_generate.py"), str(work / "job.json"),
                           str(work / "result.json")], env=vllm_env(),
                          cwd=work, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    results = json.loads((work / "result.json").read_text())["runs"]
    print(f"\nvLLM driver: {len(TREES)} engines in {time.perf_counter() - started:.0f} s; starts "
          + ", ".join(f"{r['start_s']:.1f}" for r in results))
    return {c: {"run": r, "calls": runs[i]["calls"]} for i, (c, r) in enumerate(zip(TREES, results))}


def engine_tokens(loaded, prompt: list[int], n: int) -> list[int]:
    """Our Engine's greedy reply (it ends early at a stop token, which it does not yield)."""
    engine = Engine(loaded.model, loaded.tokenizer, batched=False)
    events = engine.stream(prompt, SamplingParams(temperature=0.0, max_tokens=n))
    return [e.token for e in events if not e.done]


def our_logprobs(model: nanochat.GPT, tokens: list[int]) -> torch.Tensor:
    """log-softmax of our full forward over `tokens` [T, V], float64 for the comparison."""
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([tokens]))[0].double(), -1)


def logprob_error(reported: list[dict | None], ours: torch.Tensor, first: int) -> tuple[float, int]:
    """Largest |vLLM's logprob - ours| over every token vLLM reported; reported[j] is the distribution at position
    first + j (None: vLLM reports none there). Also how many values were compared."""
    worst, count = 0.0, 0
    for j, step in enumerate(reported):
        for token, lp in (step or {}).items():
            worst = max(worst, abs(lp - float(ours[first + j, int(token)])))
            count += 1
    return worst, count


def check_greedy(loaded, prompt: list[int], got: list[int]) -> int:
    """vLLM's greedy tokens against our Engine's; returns how many agree (all of ours: up to its stop token, which
    vLLM, told to ignore EOS, must have produced next)."""
    want = engine_tokens(loaded, prompt, len(got))
    assert got[: len(want)] == want
    if len(want) < len(got):
        assert got[len(want)] in stop_token_ids(loaded.tokenizer)
    return len(want)


@needs_vllm
@pytest.mark.parametrize("commit", TREES)
def test_vllm_serves_the_member_as_our_engine(commit, served, ours):
    loaded = ours[commit]
    S = short_window(loaded.model)
    first_call = served[commit]["calls"][0]
    past = []
    worst = 0.0
    for requests, call in zip(served[commit]["calls"], served[commit]["run"]["calls"]):
        for request, out in zip(requests, call["outputs"]):
            prompt, got = request["prompt"], out["tokens"]
            assert len(got) == request["max_tokens"]
            agreed = check_greedy(loaded, prompt, got)
            past.append(sum(1 for j in range(agreed) if len(prompt) + j > S))
            lp = our_logprobs(loaded.model, prompt + got)
            gen_err, n_gen = logprob_error(out["logprobs"], lp, len(prompt) - 1)
            prompt_err, n_prompt = logprob_error(out["prompt_logprobs"][1:], lp, 0)
            assert n_gen >= TOP * len(got)
            assert n_prompt >= (TOP * (len(prompt) - 1) if request.get("prompt_logprobs", True) else 0)
            worst = max(worst, gen_err, prompt_err)
    cached = served[commit]["run"]["calls"][1]["outputs"][0]["cached_tokens"]
    print(f"{commit}: {past[0]} greedy tokens past the short window agree; largest logprob difference {worst:.1e}; "
          f"{cached} prompt tokens from the prefix cache")
    assert cached > 0  # request C's first blocks were B's
    assert len(first_call[0]["prompt"]) < S  # request A's decode starts inside the window and crosses it
    assert past[0] >= PAST_WINDOW, f"greedy agreement reached only {past[0]} tokens past the window"
    assert worst < TOLERANCE, f"largest logprob difference {worst:.2e}"


@pytest.mark.parametrize("commit", TREES)
def test_the_export_holds_nanochat_s_own_tensors_and_windows(commit, exported):
    """The folder's weights are the tensors nanochat saved (read here with torch.load, not our loader; bf16 tables
    widened to float32, nothing cropped or renamed), and its windows are the ones nanochat's code used for this tree
    (reference.json)."""
    saved = torch.load(next((FIXTURES / commit).glob("base_checkpoints/*/model_*.pt")), map_location="cpu",
                       weights_only=True)
    written = load_file(exported[commit] / "model.safetensors")
    assert sorted(written) == sorted(saved)
    assert all(torch.equal(written[k], saved[k].float()) for k in saved)
    config = json.loads((exported[commit] / "config.json").read_text())
    windows = json.loads((FIXTURES / commit / "reference.json").read_text())["features"]["windows"]
    per_layer = windows["per_layer_left_window_this_tree"] if isinstance(windows, dict) else [None] * 4
    assert config["window_sizes"] == per_layer
    assert config["vocab_size"] == 300 and config["padded_vocab_size"] == saved["lm_head.weight"].size(0)


def test_the_export_names_our_architecture_and_no_transformers_model():
    """config.json carries the plugin's architecture and a model_type transformers does not know (its own
    `nanochat` would read the folder as the tutorial's forward)."""
    sys.path.insert(0, str(ROOT))
    try:
        from vllm_nanochat.config import ARCHITECTURE as PLUGIN_ARCH, MODEL_TYPE as PLUGIN_TYPE
    finally:
        sys.path.remove(str(ROOT))
    assert (ARCHITECTURE, MODEL_TYPE) == (PLUGIN_ARCH, PLUGIN_TYPE)
    import transformers

    assert MODEL_TYPE not in transformers.CONFIG_MAPPING


# ---- the HTTP server ---------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def server(exported, tmp_path_factory):
    """`python -m vllm.entrypoints.openai.api_server` on a free local port, serving today's tree."""
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    command = [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(exported[HTTP_TREE]),
               "--served-model-name", "nanochat", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
               "--seed", "0", "--enforce-eager", "--distributed-executor-backend", "uni",
               "--max-num-batched-tokens", str(BATCH_TOKENS), "--return-tokens-as-token-ids"]
    with open(log, "w") as out:
        process = subprocess.Popen(command, env=vllm_env(exported[HTTP_TREE].parent / "plugin"), stdout=out,
                                   stderr=subprocess.STDOUT, cwd=log.parent)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            assert process.poll() is None, log.read_text()[-6000:]
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{base}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            assert time.monotonic() < deadline, "vLLM's server did not start in 10 minutes"
            time.sleep(1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def token_ids(entries: list) -> list[int]:
    """Token ids from "token_id:N" strings (the server's --return-tokens-as-token-ids)."""
    return [int(e.removeprefix("token_id:")) for e in entries]


@needs_vllm
def test_vllm_http_server_completes_as_our_engine(server, ours):
    """/v1/completions with token ids: greedy tokens and top-5 logprobs as the offline check demands."""
    loaded = ours[HTTP_TREE]
    request = requests_for(loaded.model, prompt_ids(HTTP_TREE))[0][0]
    body = post(f"{server}/v1/completions", {"model": "nanochat", "prompt": request["prompt"],
                                             "max_tokens": request["max_tokens"], "temperature": 0, "logprobs": TOP,
                                             "ignore_eos": True})
    logprobs = body["choices"][0]["logprobs"]
    got = token_ids(logprobs["tokens"])
    assert len(got) == request["max_tokens"]
    assert check_greedy(loaded, request["prompt"], got) - (short_window(loaded.model) - len(request["prompt"])) \
        >= PAST_WINDOW
    reported = [{str(i): lp for i, lp in zip(token_ids(top), top.values())} for top in logprobs["top_logprobs"]]
    worst, n = logprob_error(reported, our_logprobs(loaded.model, request["prompt"] + got), len(request["prompt"]) - 1)
    assert n >= TOP * len(got) and worst < TOLERANCE


@needs_vllm
def test_vllm_http_server_chats_in_nanochat_format(server, ours):
    """/v1/chat/completions: the folder's chat template renders the conversation as our tokenizer does (a system
    message merged into the first user turn), the reply stops where our Engine's stops, with the same tokens."""
    loaded = ours[HTTP_TREE]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sky blue?"}]
    body = post(f"{server}/v1/chat/completions", {"model": "nanochat", "messages": messages, "max_tokens": 48,
                                                  "temperature": 0, "logprobs": True, "top_logprobs": 1})
    choice = body["choices"][0]
    got = token_ids([entry["token"] for entry in choice["logprobs"]["content"]])
    prompt = loaded.tokenizer.render_for_completion(messages)
    assert body["usage"]["prompt_tokens"] == len(prompt)
    want = engine_tokens(loaded, prompt, 48)
    assert got[: len(want)] == want
    assert choice["finish_reason"] == ("length" if len(want) == 48 else "stop")


@needs_vllm
def test_the_chat_tab_streams_from_vllm(server, ours):
    """`app.py --chat-backend URL` with vLLM serving the plugin: the Chat tab's reply (through the app, as a browser's
    /respond) is vLLM's, and equals our Engine's greedy reply to the same conversation; the app's own engine decodes
    nothing."""
    import os as _os
    _os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    from gradio_client import Client

    from demo.app import serve_in_background
    from demo.models import Models
    from rules.chat_markdown import typed

    loaded = ours[HTTP_TREE]
    models = Models(main=loaded)
    models.use_chat_backend(f"{server}/v1")
    models.engine.stream = None  # not called: the backend decodes
    demo, url = serve_in_background(models, port=free_port())
    client = Client(url, verbose=False, analytics_enabled=False, download_files=False)
    try:
        message = "Why is the sky blue?"
        history = [{"role": "user", "content": [{"type": "text", "text": message}]}]
        chat = client.predict(history, 0.0, 0, 1.0, 32, "0", api_name="/respond")[0]
        prompt = loaded.tokenizer.render_for_completion([{"role": "user", "content": message}])
        want = loaded.tokenizer.decode(engine_tokens(loaded, prompt, 32))
        assert want.strip()  # a reply to compare (the tiny model does not end at once)
        assert typed("".join(part["text"] for part in chat[-1]["content"])) == want  # (the Chatbot's escaping undone)
    finally:
        client.close()
        demo.close()


@needs_vllm
def test_the_benchmark_finds_vllm_decoding_the_trained_default_model_as_ours(tmp_path):
    """bench/vllm_bench.py end to end with short replies: the shipped model (trained, 64-wide heads, no padding) served
    by vLLM with the plugin answers the chat prompts with our engine's greedy tokens, one at a time and all at once.
    No timing is asserted."""
    from bench import vllm_bench

    threads = torch.get_num_threads()
    try:
        assert vllm_bench.main(["--tokens", "16", "--threads", "1", "--out", str(tmp_path / "bench.json")]) == 0
    finally:
        torch.set_num_threads(threads)
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert [r["same_tokens"] for r in rows] == [True, True]
    assert all(r["ours_tokens"] == r["vllm_tokens"] > 0 for r in rows)
