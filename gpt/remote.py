"""Engine.stream's contract, decoded by another server: an OpenAI-compatible one (vLLM with this project's plugin, or
another copy of this app's /v1 API) serving the same weights. The app's Chat tab uses it with --chat-backend URL.

The prompt goes as token ids to the server's streaming /v1/completions, so the server runs exactly the prompt this
process built (a conversation cut to fit the context, a branch, a reply to continue), whatever chat template it has.
The reply comes back with its token ids where the server returns them (`return_token_ids`, vLLM's extension, which
this app's API takes too): they are then decoded and ended here by the same rules as a local reply (gpt/stream.py),
so the text is what the local engine would show for those tokens. A server that returns only text gives events with
its text and no token id.

Plain HTTP (httpx, which Gradio needs anyway): server-sent events are a line format; no client library is needed.
"""
from __future__ import annotations

import contextlib
import json
from typing import Callable, Iterator
from urllib.parse import urlsplit

import httpx

from gpt.stream import Reply, SamplingParams, StreamEvent, stop_token_ids
from gpt.tokenizer import Tokenizer

TIMEOUT = httpx.Timeout(10.0, read=120.0)  # read: the longest wait for the next chunk (a busy server queues first)


class RemoteError(RuntimeError):
    """The server could not be reached, refused the request or broke off the reply (the message says which)."""


def base_url(url: str) -> str:
    """An OpenAI base URL (http://host:8000/v1): a bare http://host:8000 gets /v1."""
    url = url.rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {url!r}")
    return url if parts.path else url + "/v1"


class RemoteEngine:
    """`stream(prompt_ids, params, should_stop)` as gpt.engine.Engine's, decoded by the server at `url` (an OpenAI
    base URL). `tokenizer` and `context`: the local copy's (the same weights), for decoding token ids and the stop
    rules. `model`: the id to ask for (default: the first the server lists)."""

    def __init__(self, url: str, tokenizer: Tokenizer, context: int, api_key: str | None = None,
                 model: str | None = None):
        self.url, self.tokenizer, self.context = base_url(url), tokenizer, context
        self.stop_ids = stop_token_ids(tokenizer)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(headers=headers, timeout=TIMEOUT)
        self.model = model

    def model_id(self) -> str:
        if self.model is None:
            with self._request("GET", "/models") as response:
                listed = [m.get("id") for m in json.loads(response.read()).get("data", []) if isinstance(m, dict)]
            if not listed or not isinstance(listed[0], str):
                raise RemoteError(f"{self.url}/models lists no model")
            self.model = listed[0]
        return self.model

    def stream(self, prompt_ids: list[int], params: SamplingParams | None = None,
               should_stop: Callable[[], bool] | None = None) -> Iterator[StreamEvent]:
        """One StreamEvent per token, then a final one with done=True and the stop reason (as Engine.stream).
        RemoteError when the server fails."""
        params = params or SamplingParams()
        reply = Reply(self.tokenizer, prompt_ids, params, self.context, self.stop_ids)
        room = self.context - len(prompt_ids)
        if (reason := reply.limit_reached()) is not None:
            yield reply.end(reason)
            return
        body = {"model": self.model_id(), "prompt": list(prompt_ids), "max_tokens": min(params.max_tokens, room),
                "temperature": params.temperature, "top_p": params.top_p, "seed": reply.seed, "stream": True,
                "return_token_ids": True}
        if params.top_k:
            body["top_k"] = params.top_k
        finish = None
        with self._request("POST", "/completions", json=body) as response:
            for chunk in _chunks(response):
                if should_stop is not None and should_stop():
                    yield reply.end("stopped")
                    return
                for choice in chunk.get("choices") or []:
                    finish = choice.get("finish_reason") or finish
                    ids = choice.get("token_ids")
                    if ids is None:  # a server that returns only text
                        if choice.get("text"):
                            yield StreamEvent(None, choice["text"], False, None, reply.seed)
                        continue
                    for token in ids:  # decoded here: the text is the one the local engine shows for them
                        event = reply.take(int(token))
                        if event is None:  # a stop token: the reply ends by the local rules
                            yield reply.end("assistant_end")
                            return
                        yield event
        if finish == "length":
            yield reply.end("max_tokens" if params.max_tokens <= room else "context_full")
        elif finish == "stop":
            yield reply.end("assistant_end")
        else:
            raise RemoteError(f"{self.url}/completions ended the reply without a finish_reason")

    @contextlib.contextmanager
    def _request(self, method: str, path: str, **kwargs) -> Iterator[httpx.Response]:
        """The streamed response to one request; RemoteError for any failure to get it or to read it."""
        url = self.url + path
        try:
            with self.client.stream(method, url, **kwargs) as response:
                if response.status_code != 200:
                    raise RemoteError(f"{url}: HTTP {response.status_code}: {_error_text(response)}")
                yield response
        except httpx.HTTPError as e:
            raise RemoteError(f"{url}: {type(e).__name__}: {e}") from None


def _chunks(response: httpx.Response) -> Iterator[dict]:
    """The JSON objects of a server-sent event stream, up to `data: [DONE]`; an error object raises RemoteError."""
    for line in response.iter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            raise RemoteError(f"{response.url}: not an event stream: {data[:200]!r}") from None
        if isinstance(chunk, dict) and "error" in chunk:
            error = chunk["error"]
            raise RemoteError(f"{response.url}: {error.get('message', error) if isinstance(error, dict) else error}")
        yield chunk


def _error_text(response: httpx.Response) -> str:
    """The message of an error response (OpenAI's {"error": {"message"}}), else the start of its body."""
    raw = response.read()
    try:
        error = json.loads(raw).get("error")
        return str(error.get("message", error) if isinstance(error, dict) else error)[:500]
    except (ValueError, AttributeError):
        return raw[:200].decode("utf-8", "replace")
