"""The real app on a free local port, and Debian's Chromium to look at it: shared by the browser and API tests
(tests/conftest.py serves one app per session).

The app is exactly what `python app.py` serves (demo.models.load() with no arguments: the shipped model, or the
random-init fallback when there is none), except that a test may pace the chat: with `LiveApp.token_interval` > 0
the engine waits that long before each token. A tiny model streams a whole reply in a fraction of a second; paced,
a reply lasts long enough for a browser to see it grow and press Stop in the middle, whatever the model's speed.
"""
from __future__ import annotations

import contextlib
import os
import socket
import time
from dataclasses import dataclass
from typing import Callable, Iterator

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: nothing leaves the machine
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from playwright.sync_api import Browser, Page, Playwright, Response  # noqa: E402

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def paced(stream: Callable[..., Iterator[StreamEvent]], interval: Callable[[], float]
          ) -> Callable[..., Iterator[StreamEvent]]:
    """`stream` that waits interval() seconds before each event; closing it closes the wrapped stream."""

    def wrapper(*args, **kwargs) -> Iterator[StreamEvent]:
        with contextlib.closing(stream(*args, **kwargs)) as events:
            for event in events:
                time.sleep(interval())
                yield event

    return wrapper


@contextlib.contextmanager
def serve() -> Iterator[LiveApp]:
    """Serve the app on 127.0.0.1 (a free port) until the block ends."""
    models = load()
    demo, url = serve_in_background(models, port=free_port())
    app = LiveApp(url.rstrip("/") + "/", models)
    models.engine.stream = paced(models.engine.stream, lambda: app.token_interval)
    try:
        yield app
    finally:
        demo.close()


def launch_chromium(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def open_app(browser: Browser, url: str) -> Page:
    """A fresh browser session (its own Gradio session) on `url`, once the app has loaded and restored the link."""
    page = browser.new_context(viewport=VIEWPORT).new_page()
    goto(page, url)
    return page


def goto(page: Page, url: str) -> None:
    """Load `url` in `page` and wait until the app has restored the state its query describes."""
    with page.expect_response(is_restore):
        page.goto(url)


def is_restore(response: Response) -> bool:
    """The answer to the page's load event (Gradio sends it with trigger_id 0, the Blocks itself)."""
    return "/run/predict" in response.url and '"trigger_id":0' in (response.request.post_data or "")
