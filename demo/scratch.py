"""Where a browser session's downloads are written: one folder per session, holding only its newest runs' files, and
gone when the session ends (`forget_session`, on the page's unload).

A handler writes a run's files (the Inside tab's per-view CSVs, its zip) into `run_folder(request, kind)` and returns
their paths; Gradio copies each into its own cache before sending it (that cache is cleaned by
gr.Blocks(delete_cache=...), demo/app.py), so a file here is needed only until that copy. Still, a session keeps its
newest KEEP runs of each kind, not one: a run whose result Gradio is still copying while the next run starts keeps
its files. A session that never unloads (an API client) is swept once it has been idle for STALE_S, by any later
run. Everything goes when the process exits.
"""
from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import gradio as gr

KEEP = 2  # runs of one kind a session keeps
STALE_S = 3600  # a session folder untouched this long is deleted (its files were copied long ago)

_LOCK = threading.Lock()
_ROOTS: dict[str, Path] = {}  # the system temp dir -> our folder in it (a test may point tempfile elsewhere)


def root() -> Path:
    """The process's folder of session folders, made (private, under the system temp dir) on first use. The app
    makes it while it builds, so that on ZeroGPU every forked GPU call shares the parent's."""
    base = tempfile.gettempdir()
    with _LOCK:
        folder = _ROOTS.get(base)
        if folder is None or not folder.is_dir():
            folder = _ROOTS[base] = Path(tempfile.mkdtemp(prefix="inside-forward-"))
            atexit.register(_remove, folder, os.getpid())
        return folder


def _remove(folder: Path, owner: int) -> None:
    if os.getpid() == owner:  # not from a forked child that happens to exit through atexit
        shutil.rmtree(folder, ignore_errors=True)


def session_folder(request: gr.Request | None) -> Path:
    """The session's folder (not made here). Named by a hash of the session id, which the browser chose."""
    session = getattr(request, "session_hash", None) or "api"
    return root() / hashlib.sha256(session.encode()).hexdigest()[:32]


def run_folder(request: gr.Request | None, kind: str) -> Path:
    """A new empty folder for one run's files of `kind` (e.g. "views", "export") in the session's folder. The
    session's older runs of that kind past the newest KEEP are deleted, and so are other sessions idle past
    STALE_S."""
    session = session_folder(request)
    runs = session / kind
    runs.mkdir(parents=True, exist_ok=True)
    os.utime(session)  # the session is active (for the sweep)
    # Named by creation time, so that the names sort by age in every process (ZeroGPU runs handlers in forks).
    folder = Path(tempfile.mkdtemp(prefix=f"{time.time_ns():020d}-", dir=runs))
    for old in sorted(runs.iterdir())[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    _sweep(keep=session)
    return folder


def _sweep(keep: Path) -> None:
    now = time.time()
    for other in root().iterdir():
        try:
            if other != keep and now - other.stat().st_mtime > STALE_S:
                shutil.rmtree(other, ignore_errors=True)
        except FileNotFoundError:  # another run swept it first
            continue


def forget_session(request: gr.Request = None) -> None:
    """The page closed: the session's files go too."""
    shutil.rmtree(session_folder(request), ignore_errors=True)
