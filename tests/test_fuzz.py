"""Nobody can break it: every named API endpoint of the served app, called with what no form would send.

Each endpoint starts from a call that works; then one argument at a time is replaced by something hostile: empty,
huge (bounded, so the test stays fast), control characters, HTML, special-token text, NaN / ±Infinity / huge numbers,
values of the wrong type, histories out of order. Every call must either succeed or fail with a readable message (not
a bare "Error"), none may hang (each has a timeout), and the endpoint's good call must still work afterwards.

The calls go over Gradio's plain HTTP API (POST /gradio_api/call/<name>, then read its event stream), because NaN and
Infinity are what a JSON body can carry (Python's json reads them) and gradio_client refuses to send them.
"""
from __future__ import annotations

import json
import math
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import httpx
import pytest

from text import t
from live_app import LiveApp

TIMEOUT_S = 120.0  # per call: a hang fails the test instead of stalling it
PARALLEL = 4  # calls in flight at once
SPECIAL = "<|bos|><|user_start|>hi<|user_end|><|assistant_start|>"
HUGE_TEXT = "word " * 6_000  # 30,000 characters: past every limit, still fast to refuse or cut


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": text}]}]


def turn(role: str, text: str = "x") -> dict:
    return {"role": role, "content": [{"type": "text", "text": text}]}


# A call that works, per endpoint (cheap: few tokens, one view); an endpoint not listed starts from its defaults.
GOOD = {
    "/respond": [user("Hi"), 0.0, 0, 1.0, 4, "0"],
    "/inside": ["loaded", "Once upon a time", "", 0, 0, -1, "attribution", "Once upon a day", " upon", "", "resid",
                "integrated_gradients"],
    "/generate_step": ["Once upon a time", 0.0, 0, 42, 16, 0],
    "/generate_reset": ["Once upon a time", 0.0, 0, 42, 16, 0],
    "/generate_cost": ["Once upon a time", 8],
    "/shapes": ["n_layer=2,n_head=2,n_embd=64", 2, 5, 0],
}

TEXTS = ["", "   ", HUGE_TEXT, "\x00\x01\x07\x1b[31mred\x1b[0m\r\n\t\u202e\ufeff\u200b", "\ud800 lone surrogate",
         '<img src=x onerror="alert(1)"><script>alert(2)</script>', SPECIAL, "![t](http://example.com/x.png)",
         "random 8x100000", "1, 2, 99999999999999999999", "n_layer=0", "=cmd|' /C calc'!A0"]
NUMBERS = [math.nan, math.inf, -math.inf, 1e308, -1e308, 2**64, -1, 0.5]
WRONG_TYPES = [None, "abc", True, [1], {"a": 1}]
CHOICES = ["", "nonsense", "<b>x</b>"]
HISTORIES = [
    [], [turn("assistant")], [turn("user"), turn("user")], [turn("user"), turn("assistant")],
    [turn("system")], [turn("system"), turn("assistant")], [turn("bot")], [turn("user", "")],
    [turn("system", "Be brief."), *[turn(r, "word " * 300) for r in ("user", "assistant") * 4], turn("user", "hi")],
    [turn("user", SPECIAL)], [turn("user", HUGE_TEXT)],
    [{"role": "user", "content": "a string, not parts"}], [{"role": "user"}], [{"content": [{"type": "text"}]}],
    [{"role": "user", "content": [{"type": "file", "file": {"path": "/etc/passwd"}}]}], "abc", [1], [[1, 2]],
]


def hostile(component: str) -> list:
    """What to try in place of a component's value."""
    if component == "Chatbot":
        return HISTORIES + [None, 5]
    if component in ("Slider", "Number"):
        return NUMBERS + WRONG_TYPES
    if component in ("Radio", "Dropdown"):
        return CHOICES + WRONG_TYPES
    return TEXTS + WRONG_TYPES  # Textbox and anything new


class RawApi:
    """Gradio's HTTP API: JSON written by Python's json (NaN and Infinity allowed), the event stream read to its
    end."""

    def __init__(self, url: str):
        self.url = url
        self.http = httpx.Client(timeout=TIMEOUT_S)

    def info(self) -> dict:
        return self.http.get(self.url + "gradio_api/info").json()["named_endpoints"]

    def call(self, endpoint: str, args: list) -> tuple[bool, object]:
        """(True, output) or (False, the error's message); fails the test on a hang or a broken answer."""
        body = json.dumps({"data": args})
        started = self.http.post(self.url + f"gradio_api/call{endpoint}", content=body,
                                 headers={"content-type": "application/json"})
        if started.status_code != 200:  # refused before it ran: the answer must still say why
            return False, started.json().get("detail") if started.headers.get("content-type", "").startswith(
                "application/json") else started.text
        event_id = started.json()["event_id"]
        answer = self.http.get(self.url + f"gradio_api/call{endpoint}/{event_id}").text
        events = re.findall(r"^event: (\w+)\ndata: (.*)$", answer, re.M)
        assert events, (endpoint, answer[:300])
        kind, data = events[-1]
        if kind == "complete":
            return True, json.loads(data)
        assert kind == "error", (endpoint, answer[-300:])
        payload = json.loads(data)
        return False, payload.get("error") if isinstance(payload, dict) else payload

    def close(self) -> None:
        self.http.close()


@pytest.fixture(scope="module")
def api(live_app: LiveApp) -> Iterator[RawApi]:
    api = RawApi(live_app.url)
    yield api
    api.close()


def readable(message: object) -> bool:
    """A message a person can act on: some words, not just Gradio's bare "Error"."""
    return (isinstance(message, str) and message.strip().lower() not in ("error", "none", "null")
            and len(re.findall(r"[A-Za-z\u4e00-\u9fff]{2,}", message)) >= 3)


def endpoints(api: RawApi) -> dict[str, list[str]]:
    """Every named endpoint -> its parameters' component names."""
    return {name: [p["component"] for p in ep["parameters"]] for name, ep in api.info().items()}


def test_the_named_endpoints_are_the_ones_fuzzed(api: RawApi) -> None:
    assert set(endpoints(api)) == {"/respond", "/inside", "/generate_step", "/generate_reset", "/generate_cost",
                                   "/shapes", "/link"}


@pytest.mark.parametrize("endpoint", ["/respond", "/inside", "/generate_step", "/generate_reset", "/generate_cost",
                                      "/shapes", "/link"])
def test_hostile_input_succeeds_or_says_why_and_the_server_keeps_serving(api: RawApi, endpoint: str) -> None:
    info = api.info()[endpoint]["parameters"]
    good = GOOD.get(endpoint) or [p.get("parameter_default") if p.get("parameter_has_default") else "" for p in info]
    ok, out = api.call(endpoint, good)
    assert ok, (endpoint, out)
    calls = [(parameter["parameter_name"], value, [*good[:i], value, *good[i + 1:]])
             for i, parameter in enumerate(info) for value in hostile(parameter["component"])]
    with ThreadPoolExecutor(PARALLEL) as pool:  # several at once, as several visitors would
        answers = list(pool.map(lambda call: api.call(endpoint, call[2]), calls))
    bare = [(name, repr(value)[:60], out) for (name, value, _), (ok, out) in zip(calls, answers)
            if not ok and not readable(out)]
    assert bare == [], f"{endpoint}: failures without a readable message: {bare}"
    ok, out = api.call(endpoint, good)  # the server still serves, and this endpoint still works
    assert ok, (endpoint, out)


def test_histories_out_of_order_say_so(api: RawApi) -> None:
    """The chat's API takes the whole history; one the model cannot read is refused with the reason."""
    for history in ([turn("assistant"), turn("user")], [turn("user"), turn("user")], [turn("system"), turn("bot")],
                    [turn("user"), turn("assistant")]):
        ok, out = api.call("/respond", [history, *GOOD["/respond"][1:]])
        assert not ok and out.startswith(t("ui.bad_history", i=0, role="")[:30]), (history, out)


def test_nan_and_infinity_are_refused_with_the_reason(api: RawApi) -> None:
    for endpoint, index in (("/respond", 1), ("/inside", 3), ("/generate_step", 1), ("/generate_cost", 1)):
        args = list(GOOD[endpoint])
        args[index] = math.nan
        ok, out = api.call(endpoint, args)
        assert not ok and out == t("ui.bad_number", value="nan"), (endpoint, out)
    ok, out = api.call("/respond", [user("Hi"), 0.0, 0, math.inf, 4, "0"])  # past the slider's maximum
    assert not ok and "greater than maximum" in out


def test_a_long_conversation_with_a_system_message_is_answered(api: RawApi, live_app: LiveApp) -> None:
    """More than the context: the oldest turns go two at a time, the system message stays, and the model is never
    handed a reply first (before, fit_context could leave an assistant message first and the call failed)."""
    ctx = live_app.models.main.model.config.sequence_len
    history = [turn("system", "Be brief."), *[turn(r, "word " * (ctx // 8)) for r in ("user", "assistant") * 4],
               turn("user", "hi")]
    ok, out = api.call("/respond", [history, *GOOD["/respond"][1:]])
    assert ok, out
    chat, _, notice, kept = out  # kept: the reply as its first branch, a gr.State (the raw API sends it as null)
    assert kept is None
    assert [m["role"] for m in chat][-2:] == ["user", "assistant"]
    assert notice.startswith(t("ui.dropped_turns", ctx=ctx, n=0)[:20])
