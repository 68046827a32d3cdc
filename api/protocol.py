"""OpenAI's wire format, both ways: a request's JSON body -> a `Job` for the chat engine (every field checked, the
work bounded as a chat's is), and a reply -> the JSON objects OpenAI's clients read (whole, or as stream chunks).

A refused request is an `ApiError`: its HTTP status and OpenAI's error fields (type, param, code), with a message from
the text registry in the caller's language. The checks follow OpenAI's documented ranges (temperature 0-2, top_p in
(0, 1], at most 4 stop strings, n = 1 here) and the app's own work budgets (rules/inputs.py): the characters one
message may have, and a prompt plus its reply within the model's context (vLLM's rule, with its error code).
"""
from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

from rules.inputs import SETTINGS, InputError, check_order, cut_text
from gpt.stream import SamplingParams
from gpt.tokenizer import Tokenizer

MAX_STOPS = 4  # OpenAI's limit
MAX_STOP_CHARS = 200
MAX_SEED = 2**63 - 1  # the engine keeps seeds in int64 tensors
# Roles as nanochat's conversation has them: OpenAI's newer "developer" role is its system message.
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
FINISH = {"assistant_end": "stop", "max_tokens": "length", "context_full": "length", "stopped": "stop"}


class ApiError(InputError):
    """A refused request: `key` and `values` the message (as InputError's), `status` the HTTP status, `param` the
    field at fault, `code` and `error_type` OpenAI's error code and type."""

    def __init__(self, key: str, status: int = 400, param: str | None = None, code: str | None = None,
                 error_type: str = "invalid_request_error", **values: object):
        super().__init__(key, **values)
        self.status, self.param, self.code, self.error_type = status, param, code, error_type

    @classmethod
    def of(cls, error: InputError, param: str) -> ApiError:
        """The app's own refusal (rules.inputs) of field `param`, as an API error."""
        return cls(error.key, param=param, **error.values)

    def body(self, lang: str) -> dict:
        return {"error": {"message": self.message(lang), "type": self.error_type, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class Served:
    """What the API serves: the model's id (as /v1/models lists it), its tokenizer and its context."""
    name: str
    tokenizer: Tokenizer
    context: int


@dataclass
class Job:
    """One checked request: the prompt's ids, the sampling settings, the stop strings and how to answer."""
    chat: bool  # /v1/chat/completions (else /v1/completions)
    model: str
    prompt: list[int]
    params: SamplingParams
    stops: list[str]
    stream: bool
    usage_in_stream: bool  # stream_options.include_usage: a last chunk with the token counts
    token_ids: bool  # return_token_ids (vLLM's extension): each choice also gives its tokens' ids


# ---- requests -------------------------------------------------------------------------------------------------------
_TYPES = {"string": (str,), "number": (int, float), "integer": (int, float), "boolean": (bool,), "list": (list,),
          "object": (dict,)}
_MISSING = object()


def get(body: dict, name: str, kind: str, default: Any = _MISSING, where: str | None = None) -> Any:
    """body[name] if it is of `kind` (a key of _TYPES; a whole float counts as an integer, a boolean as no number);
    `default` when absent or null (required without one)."""
    where = where or name
    value = body.get(name)
    if value is None:
        if default is _MISSING:
            raise ApiError("api.missing", param=where, name=where)
        return default
    if (not isinstance(value, _TYPES[kind]) or (kind != "boolean" and isinstance(value, bool))
            or (kind == "integer" and isinstance(value, float) and not value.is_integer())):
        raise ApiError("api.wrong_type", param=where, name=where, kind=(f"api.kind.{kind}", {}))
    return int(value) if kind == "integer" else value


def bounded(body: dict, name: str, kind: str, lo: float, hi: float, default: Any, low_open: bool = False) -> Any:
    """A number in [lo, hi] ((lo, hi] with low_open), or `default` when absent."""
    if body.get(name) is None:
        return default
    value = get(body, name, kind)
    if not (math.isfinite(value) and (lo < value if low_open else lo <= value) and value <= hi):
        span = f"{'(' if low_open else '['}{lo}, {hi}]"
        raise ApiError("api.out_of_range", param=name, name=name, span=span, value=str(value)[:40])
    return value


def check_model(body: dict, served: Served) -> str:
    model = get(body, "model", "string")
    if model != served.name:
        raise ApiError("api.unknown_model", 404, "model", "model_not_found", model=model[:200], served=served.name)
    return model


# What this server does not do, and how each field looks when it is not asked for (absent or null always passes).
_UNSUPPORTED = {"n": lambda v: v == 1, "best_of": lambda v: v == 1, "logprobs": lambda v: v is False,
                "top_logprobs": lambda v: v == 0, "echo": lambda v: v is False, "suffix": lambda v: v == "",
                "tools": lambda v: v == [], "functions": lambda v: v == [], "tool_choice": lambda v: v == "none",
                "logit_bias": lambda v: v == {}, "presence_penalty": lambda v: v == 0,
                "frequency_penalty": lambda v: v == 0,
                "response_format": lambda v: isinstance(v, dict) and v.get("type") == "text"}


def refuse_unsupported(body: dict) -> None:
    for name, unasked in _UNSUPPORTED.items():
        value = body.get(name)
        if value is not None and not unasked(value):
            raise ApiError("api.unsupported", param=name, name=name, value=str(value)[:80])


def stop_strings(body: dict) -> list[str]:
    value = body.get("stop")
    stops = [value] if isinstance(value, str) else value
    if stops is None:
        return []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise ApiError("api.wrong_type", param="stop", name="stop", kind=("api.kind.stop", {}))
    if len(stops) > MAX_STOPS or any(len(s) > MAX_STOP_CHARS for s in stops):
        raise ApiError("api.too_many_stops", param="stop", n=MAX_STOPS, chars=MAX_STOP_CHARS)
    return [s for s in stops if s]


def messages_prompt(body: dict, served: Served) -> list[int]:
    """The chat's messages, rendered as the Chat tab renders a conversation (the tokenizer's own chat format)."""
    raw = get(body, "messages", "list")
    if not raw:
        raise ApiError("api.empty_messages", param="messages")
    messages = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise ApiError("api.wrong_type", param=where, name=where, kind=("api.kind.object", {}))
        role = m.get("role")
        if role not in ROLES:
            raise ApiError("api.bad_role", param=f"{where}.role", i=i, role=str(role)[:40])
        messages.append({"role": ROLES[role], "content": message_text(m.get("content"), f"{where}.content")})
    try:
        check_order(messages, reply=True)
        cut_text("".join(m["content"] for m in messages))  # the characters one chat message may have
    except InputError as e:
        if e.key != "ui.bad_history":
            raise ApiError.of(e, "messages") from None
        raise ApiError("api.bad_order", param="messages", i=e.values["i"] - 1) from None
    return served.tokenizer.render_for_completion(messages)


def message_text(content: Any, where: str) -> str:
    """A message's content: a string, or a list of text parts (OpenAI's {"type": "text", "text": ...})."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        if all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
            return "".join(p["text"] for p in content)
        raise ApiError("api.only_text", param=where, name=where)
    raise ApiError("api.wrong_type", param=where, name=where, kind=("api.kind.content", {}))


def completion_prompt(body: dict, served: Served) -> list[int]:
    """/v1/completions' prompt: text (after <|bos|>, as nanochat starts every document, and as the exported
    tokenizer does) or token ids as given; a list of one of these is that one."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt):
        if len(prompt) > 1:
            raise ApiError("api.one_prompt", param="prompt")
        prompt = prompt[0]
    if prompt is None:
        raise ApiError("api.missing", param="prompt", name="prompt")
    if isinstance(prompt, str):
        try:
            cut_text(prompt)
        except InputError as e:
            raise ApiError.of(e, "prompt") from None
        return [served.tokenizer.bos_token_id] + served.tokenizer.encode(prompt)
    vocab = served.tokenizer.vocab_size
    if not isinstance(prompt, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in prompt):
        raise ApiError("api.wrong_type", param="prompt", name="prompt", kind=("api.kind.prompt", {}))
    if not prompt:
        raise ApiError("api.empty_prompt", param="prompt")
    bad = next((i for i in prompt if not 0 <= i < vocab), None)
    if bad is not None:
        raise ApiError("api.bad_token", param="prompt", bad=str(bad)[:40], v=vocab - 1)
    return list(prompt)


def job(body: Any, served: Served, chat: bool) -> Job:
    """The request body of /v1/chat/completions (chat=True) or /v1/completions, checked, as a Job."""
    if not isinstance(body, dict):
        raise ApiError("api.not_object")
    model = check_model(body, served)
    refuse_unsupported(body)
    prompt = messages_prompt(body, served) if chat else completion_prompt(body, served)
    where = "messages" if chat else "prompt"
    room = served.context - len(prompt)
    if room < 1:
        raise ApiError("api.prompt_too_long", param=where, code="context_length_exceeded", n=len(prompt),
                       ctx=served.context)
    temperature = SETTINGS["temperature"]
    name = "max_completion_tokens" if chat and body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = get(body, name, "integer", room)
    if max_tokens < 1:
        raise ApiError("api.out_of_range", param=name, name=name, span=f"[1, {room}]", value=str(max_tokens))
    if max_tokens > room:
        raise ApiError("api.over_context", param=name, code="context_length_exceeded", n=len(prompt), m=max_tokens,
                       ctx=served.context, room=room)
    top_k = bounded(body, "top_k", "integer", -1, served.tokenizer.vocab_size, 0)  # vLLM's extension; -1, 0: off
    params = SamplingParams(temperature=float(bounded(body, "temperature", "number", temperature.lo, temperature.hi,
                                                      1.0)),
                            top_k=top_k if top_k > 0 else None,
                            top_p=float(bounded(body, "top_p", "number", 0, 1, 1.0, low_open=True)),
                            seed=bounded(body, "seed", "integer", 0, MAX_SEED, None), max_tokens=max_tokens)
    stream = get(body, "stream", "boolean", False)
    options = get(body, "stream_options", "object", {})
    usage = get(options, "include_usage", "boolean", False, where="stream_options.include_usage")
    token_ids = get(body, "return_token_ids", "boolean", False)
    return Job(chat, model, prompt, params, stop_strings(body), stream, usage, token_ids)


# ---- replies --------------------------------------------------------------------------------------------------------
class Answer:
    """The JSON objects of one reply to `job`: whole (`whole`) or as a stream (`chunk`, `usage_chunk`)."""

    def __init__(self, job: Job):
        self.job = job
        self.id = f"{'chatcmpl' if job.chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def _head(self, kind: str) -> dict:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.job.model}

    def usage(self, completion_tokens: int) -> dict:
        prompt_tokens = len(self.job.prompt)
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens}

    def whole(self, text: str, finish: str, tokens: list[int]) -> dict:
        if self.job.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                      "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        if self.job.token_ids:
            choice.update(token_ids=tokens, prompt_token_ids=self.job.prompt)
        return {**self._head("chat.completion" if self.job.chat else "text_completion"), "choices": [choice],
                "usage": self.usage(len(tokens))}

    def chunk(self, text: str, tokens: list[int], finish: str | None = None, first: bool = False) -> dict:
        """One stream chunk: the text of one token (a chat's first chunk also names the role), or the last with
        finish_reason; with return_token_ids, the ids of the tokens it carries."""
        if self.job.chat:
            delta = ({"role": "assistant", "content": text} if first else {"content": text}) if finish is None else {}
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        if self.job.token_ids:
            choice["token_ids"] = tokens
        return {**self._head("chat.completion.chunk" if self.job.chat else "text_completion"), "choices": [choice]}

    def usage_chunk(self, completion_tokens: int) -> dict:
        """stream_options.include_usage: the last chunk, no choices, the token counts."""
        return {**self._head("chat.completion.chunk" if self.job.chat else "text_completion"), "choices": [],
                "usage": self.usage(completion_tokens)}
