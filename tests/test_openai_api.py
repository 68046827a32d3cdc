"""The OpenAI-compatible API under /v1 (api/), through OpenAI's own Python client and plain HTTP, against the served
model decoded in the test by the plain engine loop (gpt.engine.Engine, unbatched: its own code, not the server's);
and `--chat-backend` (gpt/remote.py): the Chat tab of a second copy of the app, decoded by the first one's API."""
from __future__ import annotations

import contextlib
import html
import json
import time
import random
import threading
from typing import Iterator

import httpx
import openai
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from api.stop import StopStrings
from demo.app import serve_in_background
from demo.models import BACKEND_CHAT_STREAMS, load
from gpt.engine import Engine, SamplingParams
from gpt.remote import RemoteEngine
from live_app import LiveApp, free_port
from text import t

QUESTION = [{"role": "user", "content": "What is a transformer?"}]
PROMPT = "Once upon a time"


@pytest.fixture(scope="module")
def base(live_app: LiveApp) -> str:
    return live_app.url + "v1"


@pytest.fixture(scope="module")
def client(base: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=base, api_key="unused", max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def model(live_app: LiveApp) -> str:
    return live_app.models.main.name


def reference(live_app: LiveApp, prompt: list[int], **settings) -> tuple[list[int], str, str]:
    """(token ids, text, stop reason) of the reply the plain engine loop decodes here, with OpenAI's defaults
    (temperature 1, top_p 1, no top_k) unless `settings` says otherwise."""
    params = SamplingParams(**{"temperature": 1.0, "top_k": None, "top_p": 1.0, **settings})
    events = list(Engine(live_app.models.main.model, live_app.models.main.tokenizer, batched=False)
                  .stream(prompt, params))
    return [e.token for e in events[:-1]], "".join(e.text for e in events), events[-1].stop_reason


def chat_prompt(live_app: LiveApp, messages: list[dict]) -> list[int]:
    return live_app.models.main.tokenizer.render_for_completion(messages)


def streamed_chat(client: openai.OpenAI, **request) -> tuple[str, str, int, int]:
    """(text, finish_reason, content chunks, completion_tokens) of a streamed chat completion."""
    text, finish, chunks, usage = "", None, 0, None
    for chunk in client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **request):
        if chunk.usage is not None:
            usage = chunk.usage.completion_tokens
        for choice in chunk.choices:
            if choice.delta.content is not None and choice.delta.role is None:
                text, chunks = text + choice.delta.content, chunks + 1
            finish = choice.finish_reason or finish
    return text, finish, chunks, usage


def test_models_lists_the_served_model(client: openai.OpenAI, model: str) -> None:
    assert [m.id for m in client.models.list().data] == [model]


@pytest.mark.parametrize("settings", [dict(seed=7), dict(seed=11, temperature=0.7, top_p=0.9),
                                      dict(seed=0, temperature=0.0)])
def test_chat_is_the_engines_reply_streamed_or_whole(client, live_app, model, settings) -> None:
    tokens, text, reason = reference(live_app, chat_prompt(live_app, QUESTION), max_tokens=24, **settings)
    request = dict(model=model, messages=QUESTION, max_tokens=24, **settings)
    whole = client.chat.completions.create(**request)
    streamed, finish, chunks, usage = streamed_chat(client, **request)
    assert whole.choices[0].message.content == streamed == text  # the same seeded request: the same text
    assert whole.choices[0].finish_reason == finish == {"assistant_end": "stop", "max_tokens": "length"}[reason]
    assert whole.usage.completion_tokens == usage == chunks == len(tokens)  # one chunk a token
    assert whole.usage.prompt_tokens == len(chat_prompt(live_app, QUESTION))


def test_completions_of_text_and_of_token_ids(client, live_app, model) -> None:
    tok = live_app.models.main.tokenizer
    ids = [tok.bos_token_id] + tok.encode(PROMPT)  # text starts a document, as nanochat's and the export's tokenizer
    tokens, text, _ = reference(live_app, ids, max_tokens=20, seed=3)
    whole = client.completions.create(model=model, prompt=PROMPT, max_tokens=20, seed=3)
    by_ids = client.completions.create(model=model, prompt=ids, max_tokens=20, seed=3)
    streamed = "".join(c.choices[0].text for c in client.completions.create(model=model, prompt=[ids], max_tokens=20,
                                                                             seed=3, stream=True) if c.choices)
    assert whole.choices[0].text == by_ids.choices[0].text == streamed == text
    assert whole.usage.prompt_tokens == len(ids) and whole.usage.completion_tokens == len(tokens)


def test_max_tokens_and_return_token_ids(base, live_app, model) -> None:
    """max_tokens ends the reply with "length" after exactly that many tokens; return_token_ids (vLLM's extension)
    gives them, whole and one per chunk."""
    ids = [live_app.models.main.tokenizer.bos_token_id] + live_app.models.main.tokenizer.encode(PROMPT)
    tokens, _, reason = reference(live_app, ids, max_tokens=5, seed=1, temperature=0.0)
    assert reason == "max_tokens" and len(tokens) == 5  # (so that "length" is the answer to expect)
    request = dict(model=model, prompt=ids, max_tokens=5, seed=1, temperature=0, return_token_ids=True)
    whole = httpx.post(f"{base}/completions", json=request).json()
    assert whole["choices"][0]["token_ids"] == tokens and whole["choices"][0]["finish_reason"] == "length"
    chunks = sse(base, "/completions", {**request, "stream": True})
    assert [c["choices"][0]["token_ids"] for c in chunks] == [[t] for t in tokens] + [[]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def sse(base: str, path: str, body: dict) -> list[dict]:
    """The JSON chunks of a streamed reply, read as plain server-sent events (which must end with [DONE])."""
    with httpx.stream("POST", base + path, json=body) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    return [json.loads(line[6:]) for line in lines[:-1]]


def test_a_stop_string_ends_the_reply_before_it(client, live_app, model) -> None:
    """The reply is the engine's text cut before the first occurrence of any stop string (found here with str.find
    in the whole reply), streamed or not."""
    _, text, _ = reference(live_app, chat_prompt(live_app, QUESTION), max_tokens=40, seed=5)
    assert len(text) > 12, text
    stops = [text[8:11], text[-3:] + "never written"]
    request = dict(model=model, messages=QUESTION, max_tokens=40, seed=5, stop=stops)
    whole = client.chat.completions.create(**request)
    streamed, finish, _, _ = streamed_chat(client, **request)
    assert whole.choices[0].message.content == streamed == text[: text.find(stops[0])]
    assert whole.choices[0].finish_reason == finish == "stop"


def test_stop_strings_across_pieces_match_str_find() -> None:
    """However the text is cut into pieces, what StopStrings hands out is the text up to the first stop string (or
    all of it), found independently with str.find."""
    rng = random.Random(0)
    for _ in range(400):
        text = "".join(rng.choice("ab c") for _ in range(rng.randrange(0, 30)))
        stops = ["".join(rng.choice("abc ") for _ in range(rng.randrange(1, 5))) for _ in range(rng.randrange(1, 4))]
        found = [i for i in (text.find(s) for s in stops) if i >= 0]
        expected = text[: min(found)] if found else text
        cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, rng.randrange(1, 6))))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
        matcher, out, hit = StopStrings(stops), "", False
        for piece in pieces:
            sent, hit = matcher.push(piece)
            out += sent
            if hit:
                break
        out += "" if hit else matcher.flush()
        assert (out, hit) == (expected, bool(found)), (text, stops, pieces)


# ---- refusals ----------------------------------------------------------------------------------------------------
def chat_body(model: str, **fields) -> dict:
    return {"model": model, "messages": QUESTION, "max_tokens": 4, **fields}


def malformed(model: str, ctx: int) -> list[tuple[str, str, object, int, str | None]]:
    """(name, path, body (a dict, or raw text), the status, the param at fault)."""
    chat, done = "/chat/completions", "/completions"
    return [
        ("bad JSON", chat, '{"model": ', 400, None),
        ("not an object", chat, "[1, 2]", 400, None),
        ("unknown model", chat, chat_body("no-such-model"), 404, "model"),
        ("no model", chat, {"messages": QUESTION}, 400, "model"),
        ("empty messages", chat, chat_body(model, messages=[]), 400, "messages"),
        ("messages not a list", chat, chat_body(model, messages="hi"), 400, "messages"),
        ("a message not an object", chat, chat_body(model, messages=["hi"]), 400, "messages[0]"),
        ("unknown role", chat, chat_body(model, messages=[{"role": "robot", "content": "hi"}]), 400,
         "messages[0].role"),
        ("an image part", chat, chat_body(model, messages=[{"role": "user", "content": [{"type": "image_url"}]}]),
         400, "messages[0].content"),
        ("out of order", chat, chat_body(model, messages=QUESTION * 2), 400, "messages"),
        ("temperature a string", chat, chat_body(model, temperature="hot"), 400, "temperature"),
        ("temperature too high", chat, chat_body(model, temperature=2.5), 400, "temperature"),
        ("top_p zero", chat, chat_body(model, top_p=0), 400, "top_p"),
        ("max_tokens not whole", chat, chat_body(model, max_tokens=1.5), 400, "max_tokens"),
        ("max_tokens zero", chat, chat_body(model, max_tokens=0), 400, "max_tokens"),
        ("max_tokens a boolean", chat, chat_body(model, max_tokens=True), 400, "max_tokens"),
        ("too many tokens asked", chat, chat_body(model, max_tokens=ctx), 400, "max_tokens"),
        ("a prompt past the context", chat, chat_body(model, messages=[{"role": "user", "content": "word " * ctx}]),
         400, "messages"),
        ("too many characters", chat, chat_body(model, messages=[{"role": "user", "content": "x" * 20_001}]), 400,
         "messages"),
        ("a negative seed", chat, chat_body(model, seed=-1), 400, "seed"),
        ("stream not a boolean", chat, chat_body(model, stream="yes"), 400, "stream"),
        ("five stop strings", chat, chat_body(model, stop=list("abcde")), 400, "stop"),
        ("stop a number", chat, chat_body(model, stop=3), 400, "stop"),
        ("two choices", chat, chat_body(model, n=2), 400, "n"),
        ("tools", chat, chat_body(model, tools=[{"type": "function"}]), 400, "tools"),
        ("no prompt", done, {"model": model}, 400, "prompt"),
        ("an id past the vocabulary", done, {"model": model, "prompt": [1, 10**9]}, 400, "prompt"),
        ("no ids", done, {"model": model, "prompt": []}, 400, "prompt"),
        ("two prompts", done, {"model": model, "prompt": ["a", "b"]}, 400, "prompt"),
        ("a body too large", done, json.dumps({"model": model, "prompt": "x" * (2**20)}), 413, None),
    ]


def test_malformed_requests_get_openai_errors_and_the_server_keeps_serving(base, client, live_app, model) -> None:
    ctx = live_app.models.main.model.config.sequence_len
    for name, path, body, status, param in malformed(model, ctx):
        content = body if isinstance(body, str) else json.dumps(body)
        response = httpx.post(base + path, content=content, headers={"content-type": "application/json"})
        assert response.status_code == status, (name, response.text)
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}, name
        assert error["param"] == param and error["message"] and "Traceback" not in error["message"], (name, error)
    whole = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=3, seed=1)
    assert whole.usage.completion_tokens >= 1  # a valid request after all of them is served


def test_openai_client_sees_the_refusals(client, model) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4o", messages=QUESTION)
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model, messages=[], stream=True)
    assert e.value.body["param"] == "messages"


def test_errors_speak_the_requests_language(base, model) -> None:
    body = chat_body(model, messages=[])
    for lang, header in (("zh", "zh-CN,zh;q=0.9"), ("en", "fr, en;q=0.5")):
        error = httpx.post(f"{base}/chat/completions", json=body, headers={"accept-language": header}).json()["error"]
        assert error["message"] == t("api.empty_messages", lang)


def test_unknown_routes_and_methods(base) -> None:
    assert httpx.get(f"{base}/embeddings").status_code == 404
    response = httpx.get(f"{base}/chat/completions")
    assert response.status_code == 405 and set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_past_the_waiting_line_a_request_is_told_the_server_is_busy(base, client, live_app, model,
                                                                    monkeypatch) -> None:
    monkeypatch.setattr(live_app.api, "streams", 0)  # no room at all: the next request is past the line
    for stream in (False, True):
        response = httpx.post(f"{base}/chat/completions", json=chat_body(model, stream=stream))
        assert response.status_code == 503 and response.json()["error"]["code"] == "server_busy"
    monkeypatch.undo()
    assert client.chat.completions.create(**chat_body(model)).usage.completion_tokens >= 1


def test_a_failure_inside_is_a_500_without_a_traceback(base, client, live_app, model, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("the engine broke")
        yield  # a generator, as Engine.stream

    monkeypatch.setattr(live_app.models.engine, "stream", broken)
    response = httpx.post(f"{base}/chat/completions", json=chat_body(model))
    assert response.status_code == 500
    error = response.json()["error"]
    assert "the engine broke" in error["message"] and "Traceback" not in response.text
    chunks = sse(base, "/chat/completions", chat_body(model, stream=True))  # streamed: the error is the last chunk
    assert "the engine broke" in chunks[-1]["error"]["message"]
    monkeypatch.undo()
    assert client.chat.completions.create(**chat_body(model)).usage.completion_tokens >= 1


# ---- the API key ---------------------------------------------------------------------------------------------------
@pytest.fixture
def keyed(live_app: LiveApp) -> Iterator[str]:
    live_app.api.key = "sekrit-key"
    try:
        yield live_app.api.key
    finally:
        live_app.api.key = None


def test_the_api_key_is_asked_for(base, model, keyed) -> None:
    for headers in ({}, {"authorization": "Bearer sekrit"}, {"authorization": keyed}):  # none, wrong, no "Bearer"
        for response in (httpx.get(f"{base}/models", headers=headers),
                         httpx.post(f"{base}/chat/completions", json=chat_body(model), headers=headers)):
            assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    with openai.OpenAI(base_url=base, api_key="wrong", max_retries=0) as c:
        with pytest.raises(openai.AuthenticationError):
            c.chat.completions.create(model=model, messages=QUESTION, max_tokens=2)
    with openai.OpenAI(base_url=base, api_key=keyed, max_retries=0) as c:
        assert c.chat.completions.create(model=model, messages=QUESTION, max_tokens=2).usage.completion_tokens >= 1


def test_the_key_comes_from_the_command_line_or_the_environment(monkeypatch) -> None:
    import app

    monkeypatch.setenv(app.API_KEY_ENV, "from-env")
    assert app.parse_args([]).api_key == "from-env"
    assert app.parse_args(["--api-key", "given"]).api_key == "given"
    monkeypatch.delenv(app.API_KEY_ENV)
    assert app.parse_args([]).api_key is None


# ---- one engine for chats and API requests ------------------------------------------------------------------------
def test_api_requests_decode_together_in_the_chat_engine(client, live_app, model) -> None:
    """Concurrent API requests are rows of the Chat tab's batched engine, each the reply it would be alone."""
    server = live_app.models.engine.server
    seeds = [21, 22, 23]
    alone = [reference(live_app, chat_prompt(live_app, QUESTION), max_tokens=16, seed=s)[1] for s in seeds]
    together = [None] * len(seeds)

    def ask(i: int) -> None:
        together[i] = streamed_chat(client, model=model, messages=QUESTION, max_tokens=16, seed=seeds[i])[0]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(seeds))]
    steps = server.steps
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert together == alone and server.steps > steps


def test_a_client_that_hangs_up_ends_its_reply(base, client, live_app, model, monkeypatch) -> None:
    """A streamed reply whose client goes away is closed in the engine (which frees its row) before its max_tokens,
    which it would reach (checked with the plain loop); the server serves on."""
    tok = live_app.models.main.tokenizer
    prompt = [tok.bos_token_id] + tok.encode("1, 2, 3, 4, 5, 6, 7,")
    asked = 300
    tokens, _, reason = reference(live_app, prompt, max_tokens=asked, temperature=0.0)
    assert reason == "max_tokens"  # (alone it runs all the way)
    seen = {"events": 0, "closed_early": None}
    stream = live_app.models.engine.stream

    def watched(*args, **kwargs):
        done = False
        try:
            for event in stream(*args, **kwargs):
                seen["events"] += 1
                done = event.done
                yield event
        finally:
            seen["closed_early"] = not done

    monkeypatch.setattr(live_app.models.engine, "stream", watched)
    body = {"model": model, "prompt": prompt, "max_tokens": asked, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{base}/completions", json=body) as response:
        next(response.iter_lines())  # the reply has started; then the client hangs up
    deadline = time.monotonic() + 60  # (a bound on the wait, not on the speed)
    while seen["closed_early"] is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert seen["closed_early"] is True and seen["events"] < asked
    monkeypatch.undo()
    assert client.completions.create(model=model, prompt=prompt, max_tokens=2).usage.completion_tokens == 2


# ---- --chat-backend --------------------------------------------------------------------------------------------
def test_remote_engine_streams_the_local_engines_events(base, live_app) -> None:
    """gpt.remote.RemoteEngine against this app's API gives the events the local engine gives: the same tokens,
    texts and stop reasons, the context's end included."""
    main = live_app.models.main
    ctx = main.model.config.sequence_len
    remote = RemoteEngine(base, main.tokenizer, ctx)
    near_end = [main.tokenizer.bos_token_id] + main.tokenizer.encode("word " * ctx)[: ctx - 4]
    for prompt, params in ((chat_prompt(live_app, QUESTION), SamplingParams(seed=4, max_tokens=20)),
                           (near_end, SamplingParams(seed=4, max_tokens=50, temperature=1.0, top_k=None))):
        local = list(Engine(main.model, main.tokenizer, batched=False).stream(prompt, params))
        there = list(remote.stream(prompt, params))
        strip = lambda events: [(e.token, e.text, e.done, e.stop_reason, e.seed) for e in events]  # noqa: E731
        assert strip(there) == strip(local)
    assert local[-1].stop_reason == "context_full"


@contextlib.contextmanager
def second_app(backend: str) -> Iterator[tuple[str, object, object]]:
    """Another copy of the app (the same weights) whose Chat tab is decoded by `backend`: (url, models, demo)."""
    models = load()
    models.use_chat_backend(backend)
    demo, url = serve_in_background(models, port=free_port())
    try:
        yield url, models, demo
    finally:
        demo.close()


def test_chat_backend_streams_the_chat_tab_from_another_copys_api(base, live_app, monkeypatch) -> None:
    """The second copy's Chat tab shows the reply the first copy's engine decodes (the local engine's, computed here),
    and its own engine decodes nothing; more replies stream at once than its engine has rows (the server batches
    them); a backend that is gone gives a message naming it, and the app serves on."""
    asked = []
    stream = live_app.models.engine.stream
    monkeypatch.setattr(live_app.models.engine, "stream", lambda *a, **k: asked.append(a[0]) or stream(*a, **k))
    message = "What is attention?"
    with second_app(base) as (url, models, demo):
        monkeypatch.setattr(models.engine, "stream", None)  # not called: the backend decodes
        limits = {f.concurrency_limit for f in demo.fns.values() if f.concurrency_id == "chat"}
        assert limits == {BACKEND_CHAT_STREAMS} and BACKEND_CHAT_STREAMS > models.chat_rows
        client = Client(url, verbose=False, analytics_enabled=False, download_files=False)
        try:
            history = [{"role": "user", "content": [{"type": "text", "text": message}]}]
            chat = client.predict(history, 0.9, 40, 0.95, 24, "9", api_name="/respond")[0]
            prompt = chat_prompt(live_app, [{"role": "user", "content": message}])
            _, text, _ = reference(live_app, prompt, temperature=0.9, top_k=40, top_p=0.95, max_tokens=24, seed=9)
            assert html.unescape("".join(p["text"] for p in chat[-1]["content"])) == text and asked == [prompt]
            gone = f"http://127.0.0.1:{free_port()}/v1"
            models.use_chat_backend(gone)
            with pytest.raises(AppError) as e:
                client.predict(history, 0.9, 40, 0.95, 24, "9", api_name="/respond")
            assert t("ui.chat_backend_failed", "en", why="")[:20] in str(e.value) and gone in str(e.value)
            models.use_chat_backend(base)
            assert client.predict(history, 0.9, 40, 0.95, 24, "9", api_name="/respond")[0] == chat
        finally:
            client.close()
