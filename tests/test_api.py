"""The app's named API endpoints through gradio_client, checked against the served model run directly in the test."""
from __future__ import annotations

import base64
import html
import json
import threading
import time
from typing import Iterator
from urllib.parse import parse_qs

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gradio_client import Client
from gradio_client.exceptions import AppError

from demo.i18n import t
from gpt.engine import Engine, SamplingParams
from gpt.nanochat import current, tutorial
from live_app import LiveApp

MESSAGE = "What is a transformer?"
FORWARDS = (tutorial.GPT, current.GPT)  # every member's forward is one of these two classes' (gpt/nanochat/)
PROMPT = "Once upon a time"
SLOT = 4  # /inside returns the notes and the three sliders, then (plot, text, table, csv) for each view shown


@pytest.fixture(scope="module")
def client(live_app: LiveApp) -> Iterator[Client]:
    client = Client(live_app.url, verbose=False, analytics_enabled=False, download_files=False)
    yield client
    client.close()


def user(text: str) -> list[dict]:
    """A chat history holding one user message, in the Chatbot's API format."""
    return [{"role": "user", "content": [{"type": "text", "text": text}]}]


def table(data: dict) -> list[dict]:
    """A Dataframe output -> one dict per row."""
    return [dict(zip(data["headers"], row)) for row in data["data"]]


@pytest.mark.parametrize("message, temperature, top_k, top_p, seed",
                         [(MESSAGE, 0.0, 0, 1.0, 0), (MESSAGE, 1.0, 50, 0.9, 7),
                          ("Is 3 < 4 & <b>5</b> > 2?", 0.0, 0, 1.0, 0)])
def test_chat_reply_is_the_engines(client: Client, live_app: LiveApp, message: str, temperature: float, top_k: int,
                                   top_p: float, seed: int) -> None:
    """The reply is the engine's for the message as typed (the Chatbot shows '<' and '&' escaped, as text)."""
    chat, stats, _ = client.predict(user(message), temperature, top_k, top_p, 24, str(seed), api_name="/respond")
    tok = live_app.models.main.tokenizer
    prompt = tok.render_for_completion([{"role": "user", "content": message}])
    params = SamplingParams(temperature=temperature, top_k=top_k or None, top_p=top_p, seed=seed, max_tokens=24)
    events = list(Engine(live_app.models.main.model, tok, batched=False).stream(prompt, params))
    assert [m["role"] for m in chat] == ["user", "assistant"]
    shown = ["".join(part["text"] for part in m["content"]) for m in chat]
    assert "<" not in "".join(shown)
    assert html.unescape(shown[0]) == message
    assert html.unescape(shown[1]) == "".join(e.text for e in events)
    assert stats.startswith(f"**{len(events) - 1}** ")  # the token count (the last event only says why it ended)


def test_training_view_is_the_models_loss(client: Client, live_app: LiveApp) -> None:
    out = client.predict("loaded", MESSAGE, "", 0, 0, -1, "training", api_name="/inside")
    rows = table(out[SLOT + 2])
    model, tok = live_app.models.main.model, live_app.models.main.tokenizer
    ids = torch.tensor([tok.encode(MESSAGE)], device=model.get_device())
    with torch.no_grad():
        ce = F.cross_entropy(model(ids)[0, :-1].float(), ids[0, 1:], reduction="none").cpu().numpy()
    assert [r["position"] for r in rows] == list(range(ids.shape[1]))
    assert [r["target_id"] for r in rows[:-1]] == ids[0, 1:].tolist()
    np.testing.assert_allclose([r["ce"] for r in rows[:-1]], ce, rtol=1e-3, atol=1e-3)


def test_inside_cuts_a_long_prompt_to_the_context(client: Client, live_app: LiveApp) -> None:
    ctx = live_app.models.main.model.config.sequence_len
    out = client.predict("loaded", "word " * (ctx + 50), "", 0, 0, -1, "shapes", api_name="/inside")
    assert [r["concrete"] for r in table(out[SLOT + 2]) if r["name"] == "idx"] == [f"[1, {ctx}]"]  # input [B, T]
    assert out[3]["maximum"] == ctx - 1  # the position slider covers the positions kept


def test_tutorial_shapes_are_the_tutorial_models(client: Client, live_app: LiveApp) -> None:
    ids = [[100, 200, 300, 400, 500], [600, 700, 800, 900, 1000]]
    text = "; ".join(", ".join(map(str, row)) for row in ids)
    out = client.predict("tutorial", "", text, 0, 0, -1, "shapes", api_name="/inside")
    logits_rows = [r for r in table(out[SLOT + 2]) if r["name"] == "return logits"]
    model = live_app.models.tutorial().model
    with torch.no_grad():
        shape = list(model(torch.tensor(ids, device=model.get_device())).shape)
    assert shape == [2, 5, 50304]  # the tutorial's question
    assert [r["concrete"] for r in logits_rows] == [str(shape)]


def test_generate_steps_are_greedy_decoding(client: Client, live_app: LiveApp) -> None:
    model, tok = live_app.models.main.model, live_app.models.main.tokenizer
    ids = torch.tensor([tok.encode(PROMPT)], device=model.get_device())
    greedy = []
    with torch.no_grad():
        for _ in range(3):
            greedy.append(int(model(ids)[0, -1].argmax()))
            ids = torch.cat([ids, ids.new_tensor([[greedy[-1]]])], dim=1)
    step, spans, _, _, steps, at_step, _ = client.predict(PROMPT, 0, 0, 42, 16, 2, api_name="/generate_step")
    assert step == 3
    assert [s["token"] for s in spans] == [PROMPT] + [tok.decode([i]) for i in greedy]
    assert [r["step"] for r in table(steps)] == [1, 2, 3]
    assert [c[1] for c in at_step["choices"]] == [1, 2, 3]  # the steps a branch may start at


def test_link_carries_what_differs_from_the_defaults(client: Client) -> None:
    params = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/link"]["parameters"]
    values = [p.get("parameter_default", "") for p in params]
    changes = {0: "hello", 1: 0.3, 9: "a prompt", 11: 1}  # msg, temperature, inside prompt, layer
    for i, value in changes.items():
        values[i] = value
    query = client.predict(*values, api_name="/link")
    assert parse_qs(query) == {"msg": ["hello"], "temperature": ["0.3"], "prompt": ["a prompt"], "layer": ["1"]}


def plotly_array(value: list | dict) -> np.ndarray:
    """A Plotly data array: a list, or {"dtype", "bdata"} (the raw values in base64)."""
    if isinstance(value, dict):
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
    return np.asarray(value)


def test_cost_comparison_times_both_loops(client: Client, live_app: LiveApp, monkeypatch) -> None:
    """The plot times the naive loop and the cached one at the lengths asked for. The view's clock is replaced by one
    that advances 1 ms per token position a forward reads, so each plotted time is that loop's work, known here:
    the naive loop re-reads its prefix each step, the cached one reads the prompt once, then one position a step."""
    import demo.generate_tab

    positions = [0]

    def counting(forward):
        def count(self, idx, *args, **kwargs):
            positions[0] += idx.shape[1]
            return forward(self, idx, *args, **kwargs)
        return count

    for cls in FORWARDS:
        monkeypatch.setattr(cls, "forward", counting(cls.forward))
    monkeypatch.setattr(demo.generate_tab, "work_clock", lambda: positions[0] / 1000)  # the clock it passes the view
    plot, _ = client.predict(PROMPT, 32, api_name="/generate_cost")
    traces = json.loads(plot["plot"])["data"]
    assert len(traces) == 2  # the naive loop and the cached engine
    lengths = [2**k for k in range(2, 9) if 2**k <= 32]  # doubling from 4 up to the slider's 32
    P = len(live_app.models.main.tokenizer.encode(PROMPT))
    naive_ms = [sum(P + i for i in range(n)) for n in lengths]  # step i reads the prompt and i new tokens
    cached_ms = [P + n - 1 for n in lengths]  # the prompt once, then one new position per further step
    for trace, expected in zip(traces, (naive_ms, cached_ms)):
        assert plotly_array(trace["x"]).tolist() == lengths
        np.testing.assert_allclose(plotly_array(trace["y"]), expected, rtol=1e-9)


GOOD = {"/respond": (user("Hi"), 0.0, 0, 1.0, 4, "0"), "/inside": ("loaded", PROMPT, "", 0, 0, -1, "shapes"),
        "/generate_step": (PROMPT, 0.0, 0, 42, 16, 0)}


def bad_inputs(live_app: LiveApp) -> list[tuple[str, tuple, str]]:
    """(endpoint, inputs, what the error says) for inputs that cannot run."""
    tok, config = live_app.models.main.tokenizer, live_app.models.main.model.config
    ctx = config.sequence_len
    long_message = "word " * ctx
    n_long = len(tok.render_for_completion([{"role": "user", "content": long_message}]))
    return [
        ("/respond", ([], 0.8, 50, 1.0, 16, "1"), t("ui.empty_message")),
        ("/respond", (user("  "), 0.8, 50, 1.0, 16, "1"), t("ui.empty_message")),
        ("/respond", (user(long_message), 0.8, 50, 1.0, 16, "1"), t("ui.message_too_long", n=n_long, ctx=ctx)),
        ("/respond", (user(MESSAGE), 0.8, 50, 1.0, 16, "abc"), t("ui.bad_seed")),
        ("/respond", (user(MESSAGE), 0.8, 50, 1.0, 16, "1e30"), t("ui.bad_seed")),
        ("/respond", (user(MESSAGE), -1, 50, 1.0, 16, "1"), "less than minimum"),
        ("/respond", (user(MESSAGE), 0.8, 50, 0.0, 16, "1"), "less than minimum"),
        ("/inside", ("loaded", "", "", 0, 0, -1, "all"), t("ui.empty_prompt")),
        ("/inside", ("loaded", "", "1, 2, x", 0, 0, -1, "all"), t("ui.bad_ids", v=config.vocab_size, bad="x")),
        ("/inside", ("loaded", PROMPT, "", 0, 0, -1, "nonsense"), "not in the list of choices"),
        ("/inside", ("loaded", "", "random 10000x1000", 0, 0, -1, "all"), t("ui.too_big", rows=8, T=100_000)),
        ("/inside", ("loaded", "", "; ".join(["1, 2"] * 9), 0, 0, -1, "all"), t("ui.too_big", rows=8, T=100_000)),
        ("/generate_step", ("", 0.8, 50, 42, 16, 0), t("ui.empty_prompt")),
        ("/generate_step", (PROMPT, 0.8, 50, 42, 10_000, 0), "greater than maximum"),
        ("/generate_step", (PROMPT, 0.8, 50, 2**40, 16, 0), "greater than maximum"),  # the seed
    ]


def test_bad_input_gives_a_clear_error_and_the_server_keeps_serving(client: Client, live_app: LiveApp) -> None:
    for endpoint, inputs, message in bad_inputs(live_app):
        with pytest.raises(AppError) as err:
            client.predict(*inputs, api_name=endpoint)
        assert message in str(err.value), (endpoint, inputs)
        assert client.predict(*GOOD[endpoint], api_name=endpoint)  # the next good call works


def test_all_model_work_runs_on_the_one_torch_thread(client: Client, live_app: LiveApp, monkeypatch) -> None:
    """On a CPU every forward the app runs (chat, both models of Inside forward, generate) happens on its
    TorchThread, whichever request thread served it (gpt/torch_thread.py: a second live OpenMP team slows a
    2-core machine's decoding ~1.6x)."""
    if not live_app.models.worker.enabled:
        pytest.skip("the model is not on a CPU")
    threads = []

    def spying(forward):
        def spy(self, *args, **kwargs):
            threads.append(threading.current_thread().name)
            return forward(self, *args, **kwargs)
        return spy

    for cls in FORWARDS:
        monkeypatch.setattr(cls, "forward", spying(cls.forward))
    client.predict(user(MESSAGE), 0.0, 0, 1.0, 4, "0", api_name="/respond")
    client.predict("loaded", MESSAGE, "", 0, 0, -1, "attention", api_name="/inside")
    client.predict("tutorial", "", "random 1x5", 0, 0, -1, "shapes", api_name="/inside")
    client.predict(PROMPT, 0, 0, 42, 16, 2, api_name="/generate_step")
    assert len(threads) >= 4 + 1 + 1 + 3
    assert len(set(threads)) == 1 and threads[0] != threading.current_thread().name


def test_a_chat_streams_while_a_long_explainer_request_runs(live_app: LiveApp, monkeypatch) -> None:
    """Issue 14's first finding: one long Inside-forward request stalled every chat until it ended. Here the views'
    work is held running (tensor math on the torch thread, as the explainer's is) until the test lets it end; a chat
    sent meanwhile must get its whole reply before that, through the real app (Gradio queue, handler, torch thread)."""
    if not live_app.models.worker.enabled:
        pytest.skip("the model is not on a CPU")
    import demo.inside

    started, release = threading.Event(), threading.Event()
    real = demo.inside.build_all

    def long_views(*args, **kwargs):
        started.set()
        x = torch.ones(64, 64)
        while not release.is_set() and time.monotonic() < deadline:  # the test ends this (or the deadline: it fails)
            x = torch.tanh(x @ x)  # tensor math on the torch thread, where a waiting chat gets its turn
        return real(*args, **kwargs)

    deadline = time.monotonic() + 120
    monkeypatch.setattr(demo.inside, "build_all", long_views)
    views_client = Client(live_app.url, verbose=False, analytics_enabled=False, download_files=False)
    chat_client = Client(live_app.url, verbose=False, analytics_enabled=False, download_files=False)
    try:
        job = views_client.submit("loaded", PROMPT, "", 0, 0, -1, "attention", api_name="/inside")
        assert started.wait(60), "the views never started"
        chat, _, _ = chat_client.predict(user(MESSAGE), 0.0, 0, 1.0, 8, "0", api_name="/respond")
        still_running = not job.done()
        release.set()
        out = job.result(timeout=120)
    finally:
        release.set()
        views_client.close()
        chat_client.close()
    assert still_running and time.monotonic() < deadline  # the chat's reply came while the views were running
    assert chat[-1]["role"] == "assistant" and chat[-1]["content"]
    assert json.loads(out[SLOT]["plot"])["data"]  # and the views then finished as usual


@pytest.mark.parametrize("member", ["4a87a0d", "a825e63"])
def test_the_compare_picker_puts_the_chosen_version_beside(client: Client, live_app: LiveApp, member: str) -> None:
    """Focus 'compare@<commit>': the served model beside an untrained model of that version; the KL per position
    against one computed here in float64 from both models' own logits."""
    from gpt import nanochat
    out = client.predict("loaded", MESSAGE, "", 0, 0, -1, f"compare@{member}", corrupt_text="", target_text="",
                         contrast_text="", api_name="/inside")
    rows = table(out[SLOT + 2])
    models = live_app.models
    other = models.counterpart("loaded", nanochat.member(member)).model
    assert other.member.name == member and other is not models.main.model
    ids = torch.tensor([models.main.tokenizer.encode(MESSAGE)], device=models.main.model.get_device())
    with torch.no_grad():
        la = models.main.model(ids)[0].double().log_softmax(-1)
        lb = other(ids)[0].double().log_softmax(-1)
    kl = (la.exp() * (la - lb)).sum(-1).cpu().numpy()
    assert np.allclose([r[t("column.kl")] for r in rows], kl, rtol=1e-3, atol=1e-3)
