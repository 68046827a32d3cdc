"""A streamed chat reply, whoever starts it (Send, Regenerate, a branch, Continue): the Stop flag it checks, the stats
line it writes, and the loop that streams it into the conversation."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Iterator

import gradio as gr

from demo import scratch
from demo.gpu import FileFlag
from demo.i18n import t
from demo.models import Models
from gpt.stream import SamplingParams
from rules.inputs import to_chatbot
from text import literal, t_count

UPDATE_EVERY_S = 0.05  # at most ~20 UI updates per second, however fast the model is


# Stop flags, one per browser session: the Stop button sets it, the running reply checks it before every token.
# A session's flag is dropped when the session ends (`forget_session`, on the page's unload). On ZeroGPU the reply runs
# in a fork of this process, which sees no Event set here after it started: there the flag is a file (demo/gpu.py).
_STOP: dict[str, threading.Event | FileFlag] = {}


def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "api"


def stop_flag(request: gr.Request | None, across_forks: bool = False) -> threading.Event | FileFlag:
    session = _session(request)
    if across_forks:  # in the session's scratch folder, which goes with the session too
        return _STOP.setdefault(session, FileFlag(scratch.session_folder(request) / "stop"))
    return _STOP.setdefault(session, threading.Event())


def forget_session(request: gr.Request = None) -> None:
    """The page closed: its stop flag goes too."""
    _STOP.pop(_session(request), None)


def stats_line(models: Models, n: int, elapsed: float, ttft: float | None, seed: int, stop_reason: str | None,
               lang: str, cached: int = 0) -> str:
    tps = n / elapsed if elapsed > 0 else 0.0
    parts = [t_count("ui.stats_tokens", n, lang), f"**{tps:.1f}** {t('ui.stats_tps', lang)}"]
    if ttft is not None:
        parts.append(f"{t('ui.stats_ttft', lang)} **{ttft * 1000:.0f} ms**")
    if cached:
        parts.append(t("ui.stats_cached", lang, n=cached))
    # where it was decoded: this process's device, or the chat backend (--chat-backend)
    where = (f"`{models.main.device}`" if models.chat_backend is None
             else f"{t('ui.stats_via', lang)} {literal(models.chat_backend.url)}")
    parts += [f"{t('ui.stats_seed', lang)} `{seed}`", where, models.main.name]
    if stop_reason:
        parts.append(f"{t('ui.stats_stop', lang)}: {t('ui.stop_' + stop_reason, lang)}")
    return " · ".join(parts)


@dataclass
class Streamed:
    """Where a streamed reply stands: the conversation as shown, the stats line, its tokens so far, and why it ended
    (None while it runs)."""
    chat: list[dict]
    stats: str
    tokens: list[int]
    stop_reason: str | None


def stream_reply(models: Models, messages: list[dict], prompt: list[int], params: SamplingParams, should_stop,
                 lang: str, before: list[int] = ()) -> Iterator[Streamed]:
    """Streams the reply to `prompt` into the last message of `messages` (an assistant message whose reply so far is
    the tokens `before`), at most ~20 updates a second: what Send, Regenerate, a branch and Continue all do."""
    tokens, n, ttft, stop_reason = list(before), 0, None, None
    tokenizer = models.main.tokenizer
    text = tokenizer.decode(tokens) if tokens else ""
    start = last = time.perf_counter()
    stream = models.chat_stream(prompt, params, should_stop)
    cached = 0
    try:
        for event in stream:
            now = time.perf_counter()
            cached = event.cached
            if event.token is not None:
                n += 1
                tokens.append(event.token)
                ttft = ttft if ttft is not None else now - start
            text += event.text
            if event.done:
                stop_reason = event.stop_reason
            if event.done or now - last >= UPDATE_EVERY_S:
                last = now
                messages[-1]["content"] = text
                line = stats_line(models, n, now - start, ttft, params.seed, stop_reason, lang, cached)
                yield Streamed(to_chatbot(messages), line, tokens, stop_reason)
            if event.done:
                break
    finally:
        stream.close()  # frees the engine's cache even when the event is cancelled mid-stream
    if stop_reason is None:  # the stream ended without a final event
        messages[-1]["content"] = text
        line = stats_line(models, n, time.perf_counter() - start, ttft, params.seed, None, lang, cached)
        yield Streamed(to_chatbot(messages), line, tokens, None)
