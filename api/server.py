"""The OpenAI-compatible API as HTTP routes, mounted at /v1 on the app's own port (`OpenAIServer.mount()`, which
app.py hands to Gradio's FastAPI app).

GET /v1/models, POST /v1/chat/completions and POST /v1/completions, streamed as server-sent events (`data: {...}`
chunks, then `data: [DONE]`) or whole. Every reply is decoded by the app's chat engine (gpt.engine.Engine, the
batched server behind the Chat tab): an API request is one more session in its queue, first come first served with
the chats. At most `streams` API requests are in the engine at once (the Chat tab's own limit: as many as decode
together), each holding one thread while it waits for its next token; up to WAITING_PER_STREAM times that many more
wait without a thread, and past that a request is told the server is busy (503).

A refused request gets OpenAI's error body ({"error": {"message", "type", "param", "code"}}) with a 4xx status, its
message in the language of the request's Accept-Language (English by default); a failure of the app's own is a 500
with a message naming the exception and its traceback in the log, never in the answer. With an API key, every route
asks for it (`Authorization: Bearer KEY`, as OpenAI's clients send it): 401 without.
"""
from __future__ import annotations

import contextlib
import hmac
import json
import logging
import threading
from dataclasses import dataclass
from typing import AsyncIterator, Iterator

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

from api.protocol import FINISH, Answer, ApiError, Job, Served, job as checked_job
from api.stop import StopStrings
from rules.inputs import browser_language
from gpt.engine import Engine

MAX_BODY_BYTES = 2**20  # a request body; the largest prompt the limits take is well under it (even JSON-escaped)
WAITING_PER_STREAM = 4
log = logging.getLogger(__name__)


@dataclass
class Piece:
    """What one token adds to a reply: its text (stop strings held back) and id; the last piece says why the reply
    ended (and carries no token, unless that token wrote a stop string)."""
    text: str
    tokens: list[int]
    finish: str | None = None


def pieces(engine: Engine, job: Job, should_stop) -> Iterator[Piece]:
    """The reply to `job` from `engine`: one piece per token, then the last with its finish_reason. Closing it (or a
    stop string) ends the engine's stream, which frees its row."""
    stops = StopStrings(job.stops)
    with contextlib.closing(engine.stream(job.prompt, job.params, should_stop=should_stop)) as events:
        for event in events:
            tokens = [] if event.done else [event.token]
            text, found = stops.push(event.text)
            if event.done or found:
                finish = "stop" if found else FINISH[event.stop_reason]
                yield Piece(text if found else text + stops.flush(), tokens, finish)
                return
            yield Piece(text, tokens)


class OpenAIServer:
    """The /v1 routes over `engine`, serving it as model `name`; `key`: the API key (None: none asked)."""

    def __init__(self, engine: Engine, name: str, streams: int, key: str | None = None):
        self.engine, self.key, self.streams = engine, key, streams
        self.served = Served(name, engine.tokenizer, engine.model.config.sequence_len)
        self.slots = anyio.Semaphore(streams)
        self.threads = anyio.CapacityLimiter(streams)  # its own: the API never takes the threads Gradio's events use
        self.admitted = 0  # requests in the engine or waiting for a slot

    def mount(self) -> Mount:
        routes = [Route("/models", self.models, methods=["GET"]),
                  Route("/chat/completions", self.chat_completions, methods=["POST"]),
                  Route("/completions", self.completions, methods=["POST"])]
        app = Starlette(routes=routes, exception_handlers={HTTPException: self.http_error})
        return Mount("/v1", app=app)

    # ---- routes -----------------------------------------------------------------------------------------------
    async def models(self, request: Request) -> Response:
        return await self.answer(request, self._models)

    async def chat_completions(self, request: Request) -> Response:
        return await self.answer(request, lambda r: self._complete(r, chat=True))

    async def completions(self, request: Request) -> Response:
        return await self.answer(request, lambda r: self._complete(r, chat=False))

    async def answer(self, request: Request, route) -> Response:
        """route(request)'s response; a refusal as OpenAI's error body, any other failure as a 500 (logged)."""
        lang = browser_language(request.headers.get("accept-language"))
        try:
            self.check_key(request)
            return await route(request)
        except ApiError as e:
            return error_response(e, lang)
        except Exception as e:  # noqa: BLE001 - a bug answers a 500 and the server keeps serving
            log.exception("the API failed on %s", request.url.path)
            return error_response(internal_error(e), lang)

    async def _models(self, request: Request) -> Response:
        model = {"id": self.served.name, "object": "model", "created": 0, "owned_by": "inside-forward",
                 "max_model_len": self.served.context}
        return JSONResponse({"object": "list", "data": [model]})

    async def _complete(self, request: Request, chat: bool) -> Response:
        job = checked_job(await read_json(request), self.served, chat)
        if self.admitted >= self.streams * (1 + WAITING_PER_STREAM):
            raise ApiError("api.busy", 503, error_type="server_error", code="server_busy", n=self.admitted)
        if job.stream:
            return StreamingResponse(self.stream(job, browser_language(request.headers.get("accept-language"))),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        async with self.slot():
            done = await anyio.to_thread.run_sync(lambda: list(pieces(self.engine, job, None)), limiter=self.threads)
        text, tokens = "".join(p.text for p in done), [t for p in done for t in p.tokens]
        return JSONResponse(Answer(job).whole(text, done[-1].finish, tokens))

    async def stream(self, job: Job, lang: str) -> AsyncIterator[str]:
        """The reply as server-sent events. A client that goes away stops its reply at the next token."""
        answer, n, gone = Answer(job), 0, threading.Event()
        async with self.slot():
            reply = pieces(self.engine, job, gone.is_set)
            try:
                if job.chat:
                    yield event(answer.chunk("", [], first=True))
                while (piece := await anyio.to_thread.run_sync(next, reply, None, limiter=self.threads)) is not None:
                    n += len(piece.tokens)
                    if piece.text or piece.tokens:  # a chunk a token (and one for the text held back to the end)
                        yield event(answer.chunk(piece.text, piece.tokens))
                    if piece.finish is not None:
                        yield event(answer.chunk("", [], piece.finish))
                if job.usage_in_stream:
                    yield event(answer.usage_chunk(n))
            except Exception as e:  # noqa: BLE001 - the status is sent already: the error goes in the stream
                log.exception("the API failed while streaming")
                yield event(internal_error(e).body(lang))
            finally:
                gone.set()
                reply.close()  # (not running: each next() above ran to its end, cancelled or not)
            yield "data: [DONE]\n\n"

    # ---- the rules every route follows ----------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def slot(self):
        self.admitted += 1
        try:
            async with self.slots:
                yield
        finally:
            self.admitted -= 1

    def check_key(self, request: Request) -> None:
        if self.key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.key.encode()):
            raise ApiError("api.unauthorized", 401, code="invalid_api_key")

    async def http_error(self, request: Request, exc: HTTPException) -> Response:
        """Starlette's own refusals (no such route, a method the route does not take) in OpenAI's form."""
        lang = browser_language(request.headers.get("accept-language"))
        if exc.status_code == 405:
            error = ApiError("api.bad_method", 405, method=request.method, path=request.url.path)
        else:
            error = ApiError("api.no_route", exc.status_code, code="not_found", method=request.method,
                             path=request.url.path[:200])
        return error_response(error, lang)


def event(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def error_response(error: ApiError, lang: str) -> JSONResponse:
    return JSONResponse(error.body(lang), status_code=error.status)


def internal_error(e: Exception) -> ApiError:
    return ApiError("api.internal", 500, error_type="server_error", what=f"{type(e).__name__}: {e}"[:300])


async def read_json(request: Request):
    """The body as JSON, refused past MAX_BODY_BYTES before it is all read."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError("api.too_large", 413, n=int(declared), limit=MAX_BODY_BYTES)
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > MAX_BODY_BYTES:
            raise ApiError("api.too_large", 413, n=f"> {MAX_BODY_BYTES}", limit=MAX_BODY_BYTES)
    try:
        return json.loads(body)
    except ValueError as e:  # (UnicodeDecodeError is one too)
        raise ApiError("api.bad_json", why=str(e)[:200]) from None
