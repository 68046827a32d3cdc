"""A view's Plotly figure as a PNG picture: kaleido 1.x draws it in a headless Chromium, one per process.

    from rules import png
    why = png.unavailable()          # None, or a PngError saying why there are no PNGs here (starts nothing)
    data = png.figure_png(view.fig)  # PNG bytes; raises PngError (its message(lang) says what went wrong)

The browser starts on the first figure (about 1.5-2 s), never at import, and then stays: every later figure is a tab
reload in the same process (about 0.15-0.3 s for the app's figures). It runs headless, without the sandbox and the GPU
(kaleido's defaults: --headless --no-sandbox --disable-gpu), so it works as root in CI and in a container. Which
browser: the path given to `Exporter`, else $BROWSER_PATH (the variable kaleido's own browser search reads), else
the first of BROWSER_NAMES on PATH (Debian's chromium is /usr/bin/chromium). Chinese labels need a CJK font
(scripts/test.sh installs fonts-wqy-microhei).

Bounded: a figure gets `timeout_s` seconds to be drawn (and as long again, at most, to wait for its turn: the browser
has one tab), then PngError. A browser
that died is replaced (the figure is tried once more, in the new one); one that hung past the timeout is killed and
the next figure starts another; a browser that will not start is not tried again for RETRY_S seconds. Calls may come from any thread; the browser's event loop has its own.
"""
from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import importlib.util
import os
import shutil
import signal
import subprocess
import threading
import time
from typing import Any

from text import t

TIMEOUT_S = 20.0  # one figure, at most
START_TIMEOUT_S = 30.0  # the browser's start, at most
RETRY_S = 60.0  # after a failed start, figures fail at once (same message) for this long, then it is tried again
DEFAULT_WIDTH = 1000  # px, for a figure without a layout width (the app's figures size to the page's width)
DEFAULT_HEIGHT = 500  # px, for a figure without a layout height
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
BROWSER_ENV = "BROWSER_PATH"


class PngError(RuntimeError):
    """No PNG: the text key of the message (text/, ui.png_*) and its values. `unavailable` is True when no
    figure can be drawn here at all (kaleido or a browser missing, the browser will not start), False when this one
    figure failed."""

    def __init__(self, key: str, unavailable: bool = False, **values: object):
        self.key, self.values, self.unavailable = key, values, unavailable
        super().__init__(t(key, "en", **values))

    def message(self, lang: str) -> str:
        return t(self.key, lang, **self.values)


def kaleido_installed() -> bool:
    """Whether the kaleido package can be imported (it is not imported here)."""
    return importlib.util.find_spec("kaleido") is not None


def find_browser() -> str | None:
    """$BROWSER_PATH when it is set, else the first browser of BROWSER_NAMES on PATH; None when there is none."""
    if os.environ.get(BROWSER_ENV):
        path = os.environ[BROWSER_ENV]
        return path if _runnable(path) else None
    return next((p for p in map(shutil.which, BROWSER_NAMES) if p), None)


def _runnable(path: str | None) -> bool:
    return bool(path) and os.path.isfile(path) and os.access(path, os.X_OK)


def _layout(fig: Any, name: str) -> Any:
    """fig's layout[name] (a Figure's or a figure dict's), None when not set."""
    if isinstance(fig, dict):
        return (fig.get("layout") or {}).get(name)
    return getattr(fig.layout, name, None)


class Exporter:
    """One headless browser that draws figures as PNGs, started on the first figure and kept until `close()` (or the
    process's exit). The app uses the module's one, EXPORTER; a test may make its own."""

    def __init__(self, browser: str | None = None, timeout_s: float = TIMEOUT_S,
                 start_timeout_s: float = START_TIMEOUT_S) -> None:
        self.browser = browser  # None: find_browser() when it starts
        self.timeout_s = timeout_s
        self.start_timeout_s = start_timeout_s
        self.launches = 0  # browsers started by this exporter (one, unless one died or hung)
        self._lock = threading.Lock()  # starting and dropping the browser
        self._turn = threading.Lock()  # one figure at a time (the browser has one tab)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._kaleido: Any = None  # kaleido.Kaleido, open
        self._pid = 0  # the process that started the loop (a forked child starts its own)
        self._failed: tuple[float, PngError] | None = None  # (when, why) of the last failed start
        self._atexit = False

    # ---- what a caller uses ---------------------------------------------------------------------------------------

    def unavailable(self) -> PngError | None:
        """Why this exporter can draw no figure (kaleido not installed, no browser, a start that failed within the
        last RETRY_S seconds), or None when it can (as far as one can tell without starting the browser)."""
        if not kaleido_installed():
            return PngError("ui.png_no_kaleido", unavailable=True)
        if not _runnable(self.browser or find_browser()):
            return PngError("ui.png_no_browser", unavailable=True)
        failed = self._failed
        if failed and time.monotonic() - failed[0] < RETRY_S:
            return failed[1]
        return None

    def png(self, fig: Any, *, width: int | None = None, height: int | None = None, scale: float = 1.0,
            timeout_s: float | None = None) -> bytes:
        """The figure (a plotly Figure or its dict) as PNG bytes of width*scale by height*scale pixels (width and
        height default to the figure's layout, else DEFAULT_WIDTH/DEFAULT_HEIGHT). Starts the browser if none runs.
        Raises PngError when there can be no PNG here or this figure failed or took longer than timeout_s."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        opts = dict(format="png", scale=scale, width=int(width or _layout(fig, "width") or DEFAULT_WIDTH),
                    height=int(height or _layout(fig, "height") or DEFAULT_HEIGHT))
        if not self._turn.acquire(timeout=timeout):  # figures take turns; waiting for one's turn is bounded too
            raise PngError("ui.png_timeout", seconds=f"{timeout:g}")
        try:
            return self._png(fig, opts, timeout)
        finally:
            self._turn.release()

    def _png(self, fig: Any, opts: dict, timeout: float) -> bytes:
        for attempt in (1, 2):
            loop, kaleido = self._started()
            future = asyncio.run_coroutine_threadsafe(self._draw(kaleido, fig, opts, timeout), loop)
            try:
                data = future.result(timeout + 10)  # kaleido's own timeout fires first; this is for a hung loop
            except PngError:  # kaleido's timeout: the browser answers, its tab is reloaded for the next figure
                raise
            except concurrent.futures.TimeoutError:
                self._drop(kaleido)  # hung past kaleido's own timeout: the next figure gets a new browser
                raise PngError("ui.png_timeout", seconds=f"{timeout:g}") from None
            except Exception as e:  # noqa: BLE001 - kaleido's and the browser's errors become one message
                if not self._alive(kaleido):
                    self._drop(kaleido)
                    if attempt == 1:  # it died since the last figure: once more, in a new one
                        continue
                elif _cut_short(e):  # kaleido's timeout, cut short while the command was being sent
                    raise PngError("ui.png_timeout", seconds=f"{timeout:g}") from None
                raise PngError("ui.png_failed", why=f"{type(e).__name__}: {e}"[:200]) from e
            if not data.startswith(b"\x89PNG\r\n\x1a\n"):
                raise PngError("ui.png_failed", why="not a PNG")
            return data
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Stop the browser and its loop (a later png() starts them again)."""
        with self._lock:
            loop, kaleido = self._loop, self._kaleido
            self._loop = self._kaleido = None
        if loop is None or self._pid != os.getpid():
            return
        if kaleido is not None:
            try:
                asyncio.run_coroutine_threadsafe(kaleido.close(), loop).result(10)
            except Exception:  # noqa: BLE001 - closing is best effort; the kill below is not
                self._kill(kaleido)
        loop.call_soon_threadsafe(loop.stop)

    def browser_pid(self) -> int | None:
        """The process id of the running browser's launcher (None when none runs): the same across figures."""
        kaleido = self._kaleido
        return kaleido.subprocess.pid if kaleido is not None and self._alive(kaleido) else None

    # ---- the browser ----------------------------------------------------------------------------------------------

    def _started(self) -> tuple[asyncio.AbstractEventLoop, Any]:
        """The loop and the open browser, started now if none runs (one start at a time: the lock)."""
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's loop thread is not here
                self._loop = self._kaleido = None
                self._pid = os.getpid()
            if self._kaleido is not None and self._alive(self._kaleido):
                return self._loop, self._kaleido
            if self._kaleido is not None:  # it died: a new one (kaleido's watchdog removes the old one's temp files)
                self._kill(self._kaleido)
                self._kaleido = None
            why = self.unavailable()
            if why is not None:
                raise why
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, name="png-export", daemon=True).start()
            if not self._atexit:
                atexit.register(self.close)
                self._atexit = True
            future = asyncio.run_coroutine_threadsafe(self._open(self.browser or find_browser()), self._loop)
            try:
                self._kaleido = future.result(self.start_timeout_s)
            except Exception as e:  # noqa: BLE001 - no kaleido, no browser start: one message
                future.cancel()
                why = f"{type(e).__name__}: {e}"[:200] if not isinstance(e, TimeoutError) else \
                    f"no answer within {self.start_timeout_s:g} s"
                error = PngError("ui.png_no_start", unavailable=True, why=why)
                self._failed = (time.monotonic(), error)
                raise error from e
            self._failed = None
            self.launches += 1
            return self._loop, self._kaleido

    @staticmethod
    async def _open(path: str) -> Any:
        import kaleido  # here, not at import: it is optional, and the app starts without it

        # n=1: one tab, figures take turns. mathjax=False: no CDN fetch (the views use no LaTeX).
        browser = kaleido.Kaleido(n=1, timeout=TIMEOUT_S, path=path, mathjax=False)
        try:
            await browser.open()
        except BaseException:
            Exporter._kill(browser)
            raise
        return browser

    @staticmethod
    async def _draw(kaleido: Any, fig: Any, opts: dict, timeout: float) -> bytes:
        # Kaleido bounds the render itself (its own wait_for, after which it reloads the tab and gives it back): a
        # render cancelled from outside would leave the tab lost. Its timeout is an attribute it reads per render
        # (kaleido 1.x); figures take turns (Exporter._turn), so setting it here is safe.
        kaleido._timeout = timeout
        try:
            return await kaleido.calc_fig(fig, opts=opts)
        except TimeoutError:
            raise PngError("ui.png_timeout", seconds=f"{timeout:g}") from None

    def _drop(self, kaleido: Any) -> None:
        """Forget this browser (and kill it) if it is still the current one: the next figure starts another."""
        with self._lock:
            if self._kaleido is kaleido:
                self._kaleido = None
        self._kill(kaleido)  # once its process is gone, kaleido's watchdog closes it and removes its temp files

    @staticmethod
    def _alive(kaleido: Any) -> bool:
        process = getattr(kaleido, "subprocess", None)
        return process is not None and process.poll() is None

    @staticmethod
    def _kill(kaleido: Any) -> None:
        """Kill the browser (one that died or hung: nothing to save). Its launcher leads a process group of its own,
        Chromium's processes included."""
        process = getattr(kaleido, "subprocess", None)
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass


def _cut_short(e: BaseException) -> bool:
    """Whether e is choreographer's ChannelClosedError for a command cancelled while it was being written: what
    kaleido's own timeout raises at times instead of TimeoutError (the browser and the pipe are fine)."""
    from choreographer.errors import ChannelClosedError

    return isinstance(e, ChannelClosedError) and isinstance(e.__cause__, asyncio.CancelledError)


EXPORTER = Exporter()  # the app's one browser for PNGs (nothing starts before the first figure)


def unavailable() -> PngError | None:
    """Why the app can make no PNGs (see Exporter.unavailable), or None."""
    return EXPORTER.unavailable()


def figure_png(fig: Any, *, width: int | None = None, height: int | None = None, scale: float = 1.0,
               timeout_s: float | None = None) -> bytes:
    """The figure as PNG bytes, drawn by the app's one browser (see Exporter.png)."""
    return EXPORTER.png(fig, width=width, height=height, scale=scale, timeout_s=timeout_s)
