"""The real app on a free local port, and Debian's Chromium to look at it: shared by the browser and API tests
(tests/conftest.py serves one app per session).

The app is exactly what `python app.py` serves (demo.models.load() with no arguments: the shipped model, or the
random-init fallback when there is none), except that a test may hold the chat's engine stream:
- `LiveApp.token_interval` > 0: the stream waits that long before each event (a lower bound on a reply's duration);
- `LiveApp.before_pull`: called before each event is pulled from the engine's stream, e.g. a TokenGate (or any
  blocking call: a `False` return, as `Semaphore.acquire(timeout=...)` gives on a timeout, raises TimeoutError),
  so a test decides how many events the chat handler gets, counted in tokens rather than in seconds;
- `LiveApp.after_pull`: called with each event pulled (what the engine gave the handler);
- `LiveApp.should_stop`: the should_stop the last chat stream was started with (what the chat's Stop button sets).
"""
from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: nothing leaves the machine
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from playwright.sync_api import Browser, Page, Playwright, Response  # noqa: E402

from api import OpenAIServer  # noqa: E402
from demo.app import serve_in_background  # noqa: E402
from demo.models import Models, load  # noqa: E402
from gpt.engine import StreamEvent  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 900}


@dataclass
class LiveApp:
    url: str  # ends with "/"
    models: Models
    token_interval: float = 0.0  # seconds the chat engine waits before each token (0: full speed)
    before_pull: Callable[[], object] | None = None  # called before each event is pulled from the engine's stream
    after_pull: Callable[[StreamEvent], object] | None = None  # called with each event pulled
    should_stop: Callable[[], bool] | None = None  # that of the last stream started
    api: OpenAIServer | None = None  # the OpenAI-compatible API under /v1 (its `key` may be set by a test)


class TokenGate:
    """`before_pull` and `after_pull` for a test that hands the chat its events one permit at a time.

    `release(n)` lets n more events through; `wait(predicate)` waits (up to `timeout` s, then fails) until
    predicate(gate) holds, e.g. until the handler asks for its 4th event (`gate.asked >= 4`). A pull with no permit
    for `timeout` s raises TimeoutError in the handler: a bug fails the test instead of hanging it."""

    def __init__(self, timeout: float = 60.0):
        self.timeout = timeout
        self.permits = threading.Semaphore(0)
        self.changed = threading.Condition()
        self.asked = 0  # pulls asked for (the handler waits in the last one until it gets a permit)
        self.pulled: list[StreamEvent] = []  # events the handler got

    def before_pull(self) -> None:
        with self.changed:
            self.asked += 1
            self.changed.notify_all()
        if not self.permits.acquire(timeout=self.timeout):
            raise TimeoutError(f"the test gave the chat no next event within {self.timeout} s")

    def after_pull(self, event: StreamEvent) -> None:
        with self.changed:
            self.pulled.append(event)
            self.changed.notify_all()

    def release(self, n: int = 1) -> None:
        self.permits.release(n)

    def wait(self, predicate: Callable[[TokenGate], bool]) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: predicate(self), self.timeout), "the chat handler never got there"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def held(stream: Callable[..., Iterator[StreamEvent]], app: LiveApp) -> Callable[..., Iterator[StreamEvent]]:
    """`stream` whose every event waits for app.before_pull() (then app.token_interval s) BEFORE it is pulled from
    the engine, so an event the test holds back is not even asked for; closing it closes the wrapped stream."""

    def wrapper(*args, **kwargs) -> Iterator[StreamEvent]:
        app.should_stop = kwargs.get("should_stop", args[2] if len(args) > 2 else None)
        with contextlib.closing(stream(*args, **kwargs)) as events:
            while True:
                if app.before_pull is not None and app.before_pull() is False:
                    raise TimeoutError("before_pull timed out")
                if app.token_interval:
                    time.sleep(app.token_interval)
                event = next(events, None)
                if event is None:
                    return
                if app.after_pull is not None:
                    app.after_pull(event)
                yield event

    return wrapper


@contextlib.contextmanager
def serve() -> Iterator[LiveApp]:
    """Serve the app on 127.0.0.1 (a free port), its /v1 API too, until the block ends."""
    models = load()
    api = OpenAIServer(models.engine, models.main.name, models.chat_rows)  # as app.py serves it
    demo, url = serve_in_background(models, port=free_port(), routes=[api.mount()])
    app = LiveApp(url.rstrip("/") + "/", models, api=api)
    models.engine.stream = held(models.engine.stream, app)
    try:
        yield app
    finally:
        demo.close()


def launch_chromium(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def open_app(browser: Browser, url: str) -> Page:
    """A fresh browser session (its own Gradio session) on `url`, once the app has loaded and restored the link."""
    page = browser.new_context(viewport=VIEWPORT, locale="en-US").new_page()  # the app follows Accept-Language
    goto(page, url)
    return page


def goto(page: Page, url: str) -> None:
    """Load `url` in `page` and wait until the app has restored the state its query describes."""
    with page.expect_response(is_restore):
        page.goto(url)


def is_restore(response: Response) -> bool:
    """The answer to the page's load event (Gradio sends it with trigger_id 0, the Blocks itself)."""
    return "/run/predict" in response.url and '"trigger_id":0' in (response.request.post_data or "")
