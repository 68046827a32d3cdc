"""Issue 14, "clean disk" and "one error path": a session's download files are its newest runs' only and go with the
session, Gradio's cache is cleaned, uploads are capped, no CSV cell of the app runs as a spreadsheet formula, and a
checkpoint's name or load error shows in the header as text."""
from __future__ import annotations

import csv
import io
import os
import tempfile
import time
import zipfile
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import httpx
import pandas as pd
import pytest
from gradio.helpers import special_args
from gradio_client import Client
from markdown_it import MarkdownIt

from demo import scratch
from demo.app import DELETE_CACHE, build_demo, header_md, launch_kwargs, notice_md
from demo.models import Models, load
from explain.common import FORMULA_START, csv_text
from rules import png

EVIL = "<img src=x onerror=alert(1)>![x](http://evil/x.png)"
FOLDER = "<img src=x onerror=alert(1)>![x](evil.png)"  # a checkpoint folder anyone could name so
# Tokens of this prompt start with = + - @ (the views show tokens in their tables).
FORMULAS = "=cmd|' /C calc'!A0 +1 -2 @SUM(A1) =HYPERLINK(\"http://evil\") once upon a time"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Models:
    """The app's models as `python app.py --model <a missing folder named FOLDER>` gets them: the default model, and
    a notice quoting the path."""
    return load(model=str(tmp_path_factory.mktemp("models") / FOLDER))


@pytest.fixture(scope="module")
def demo(models: Models) -> gr.Blocks:
    return build_demo(models)


@pytest.fixture
def temp(tmp_path: Path, monkeypatch) -> Path:
    """The system temp dir, for this test: every file the app writes there is counted. No PNGs in the zips here (a
    browser started now would keep its profile there, and draw for seconds per zip): tests/test_png.py has them."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(png, "EXPORTER", png.Exporter(browser=str(tmp_path / "no-browser")))
    return tmp_path


def handler(demo: gr.Blocks, name: str):
    return next(f.fn for f in demo.fns.values() if f.name == name)


def unloads(demo: gr.Blocks) -> list:
    return [f.fn for f in demo.fns.values() if (None, "unload") in f.targets]


def session(name: str) -> SimpleNamespace:
    """A gr.Request as the handlers read it."""
    return SimpleNamespace(session_hash=name)


def files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def usage(folder: Path) -> tuple[int, int]:
    """(files, bytes) under folder."""
    found = files(folder)
    return len(found), sum(p.stat().st_size for p in found)


def csv_paths(out: list) -> list[str]:
    return [v for v in out if isinstance(v, str) and v.endswith(".csv")]


# ---- clean disk ------------------------------------------------------------------------------------------------

def test_a_sessions_files_are_its_newest_runs_and_go_with_it(demo: gr.Blocks, temp: Path):
    run, export = handler(demo, "show_views"), handler(demo, "export_zip")
    a, b = session("clean-a"), session("clean-b")
    used = []
    for _ in range(6):
        out = run("loaded", "Once upon a time", "", 0, 0, -1, "all", "en", a)
        export(out[-1], "en", a)
        used.append(usage(temp))
    counts, sizes = [n for n, _ in used], [size for _, size in used]
    assert counts[0] > 0 and counts[1:] == [2 * counts[0]] * 5, used  # after N runs: 2 runs' files, whatever N
    assert max(sizes[1:]) - min(sizes[1:]) < sizes[0] // 1000, used  # (a zip's size varies by a few bytes)
    shown = csv_paths(out) + [export(out[-1], "en", a)["value"]]
    assert len(shown) > 5 and all(Path(p).is_relative_to(temp) and Path(p).is_file() for p in shown)

    before_b = set(files(temp))
    run("loaded", "Once upon a time", "", 0, 0, -1, "softcap", "en", b)
    of_b = set(files(temp)) - before_b
    for forget in unloads(demo):  # session a's page closes
        forget(a)
    assert not any(Path(p).exists() for p in shown)
    assert set(files(temp)) == of_b  # b's files stay
    for forget in unloads(demo):
        forget(b)
    assert files(temp) == []


def test_a_link_opened_in_the_inside_tab_writes_to_its_sessions_folder(demo: gr.Blocks, temp: Path):
    """open_view (a link's views, drawn as the page loads) gets the request from Gradio like any handler."""
    dep = next(f for f in demo.fns.values() if f.name == "open_view")
    values = ["inside", "en", "loaded", "Once upon a time", "", 0, 0, -1, "all", "en"]
    values += [""] * (len(dep.inputs) - len(values))  # the generate tab's inputs: nothing to draw there
    args, *_ = special_args(dep.fn, list(values), request=session("clean-link"))
    out = dep.fn(*args)
    shown = csv_paths(out)
    assert shown and all(Path(p).is_relative_to(scratch.session_folder(session("clean-link"))) for p in shown)
    for forget in unloads(demo):
        forget(session("clean-link"))
    assert files(temp) == []


def test_session_folders_are_named_by_no_path_and_idle_ones_are_swept(temp: Path):
    for name in ("../../etc", "/tmp/x", "a/../../b", "api"):
        assert scratch.session_folder(session(name)).parent == scratch.root()
    assert scratch.root().parent == temp
    idle = scratch.run_folder(session("idle"), "views").parent.parent
    long_ago = time.time() - scratch.STALE_S - 1
    os.utime(idle, (long_ago, long_ago))  # the page was closed without an unload (a crash, an API client)
    busy = scratch.run_folder(session("busy"), "views")
    assert not idle.exists() and busy.is_dir()


def test_gradios_cache_is_cleaned(demo: gr.Blocks):
    frequency, age = DELETE_CACHE
    assert demo.delete_cache == DELETE_CACHE and 0 < frequency <= age <= 24 * 3600


def test_an_api_clients_files_through_the_server_stay_few_and_go_when_it_leaves(live_app):
    """The real server: Gradio hands /inside the client's session, and the session's end (its heartbeat connection
    closing, as when a tab closes) runs the unload."""
    client = Client(live_app.url, verbose=False, analytics_enabled=False, download_files=False)
    try:
        folder = scratch.session_folder(session(client.session_hash))
        counts = []
        for _ in range(4):
            client.predict("loaded", "Once upon a time", "", 0, 0, -1, "softcap", api_name="/inside")
            counts.append(len(files(folder)))
        assert counts[0] == 1 and len(set(counts[1:])) == 1, counts
        with httpx.stream("GET", f"{live_app.url}gradio_api/heartbeat/{client.session_hash}") as beat:
            next(beat.iter_lines())  # connected; leaving the block hangs up
        deadline = time.monotonic() + 60  # a wait for the server's background task, not a measurement
        while folder.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not folder.exists()
    finally:
        client.close()


def test_uploads_are_capped(live_app):
    """The served app (launched with launch_kwargs(), as app.py does) refuses an upload past 1 MB."""
    limit = 2**20
    url = f"{live_app.url}gradio_api/upload"
    assert httpx.post(url, files={"files": ("big.bin", b"0" * (limit + 1))}).status_code == 413
    small = httpx.post(url, files={"files": ("small.txt", b"hello")})
    assert small.status_code == 200 and Path(small.json()[0]).read_bytes() == b"hello"
    assert gr.utils._parse_file_size(launch_kwargs()["max_file_size"]) == limit


# ---- CSV cells a spreadsheet would run --------------------------------------------------------------------------

def cells(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def test_csv_cells_that_start_a_formula_are_text():
    df = pd.DataFrame({"token": ["=1+2", "+SUM(A1)", "-2+3", "@cmd", "\tx", "\rx", "plain", "a=b", "-", None],
                       "logit": [-1.5, 2.0, -0.25, 3.0, 0.0, 1.0, -7.0, 8.0, 9.0, -1e-9],
                       "=HYPERLINK(1)": ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]})
    rows = cells(csv_text(df))
    assert rows[0] == ["token", "logit", "'=HYPERLINK(1)"]
    assert [r[0] for r in rows[1:]] == ["'=1+2", "'+SUM(A1)", "'-2+3", "'@cmd", "'\tx", "'\rx", "plain", "a=b",
                                        "'-", ""]
    assert [float(r[1]) for r in rows[1:]] == df["logit"].tolist()  # numbers stay numbers, minus signs included
    assert len(rows) == len(df) + 1  # a CR inside a cell is quoted, not a new row
    repeated = pd.DataFrame([[1, "=2"]], columns=["a", "a"])
    assert cells(csv_text(repeated)) == [["a", "a"], ["1", "'=2"]]


def assert_inert(text: str, where: str) -> int:
    """No cell of the CSV text starts a formula (a number may start with a minus); returns how many were made text."""
    made_text = 0
    for row in cells(text):
        for cell in row:
            assert not cell.startswith(FORMULA_START) or is_number(cell), (where, cell)
            made_text += cell.startswith("'") and cell[1:].startswith(FORMULA_START)
    return made_text


def test_every_csv_the_app_writes_is_inert(demo: gr.Blocks, temp: Path):
    run, export = handler(demo, "show_views"), handler(demo, "export_zip")
    out = run("loaded", FORMULAS, "", 0, 0, -1, "all", "en", session("clean-csv"))
    made_text = sum(assert_inert(Path(p).read_text(encoding="utf-8"), p) for p in csv_paths(out))
    assert made_text > 0  # the prompt's tokens were there, and were made text
    with zipfile.ZipFile(export(out[-1], "en", session("clean-csv"))["value"]) as z:
        names = [n for n in z.namelist() if n.endswith(".csv")]
        assert len(names) == len(csv_paths(out))
        assert sum(assert_inert(z.read(n).decode("utf-8"), n) for n in names) == made_text


# ---- header notices as text ---------------------------------------------------------------------------------------

class Visible(HTMLParser):
    """The tags and the text of rendered HTML."""

    def __init__(self, html: str):
        super().__init__()
        self.tags, self.text = [], ""
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text += data


def rendered(markdown: str) -> Visible:
    return Visible(MarkdownIt("commonmark").render(markdown))  # CommonMark, raw HTML allowed (as Gradio's Markdown)


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_a_checkpoints_name_and_load_error_show_as_text(demo: gr.Blocks, models: Models, lang: str):
    assert FOLDER in models.notice  # the error quotes the folder asked for
    notice = rendered(notice_md(models, lang))
    assert notice.tags == ["p"] and models.notice in notice.text

    evil_name = "**d20** <script>alert(1)</script> [home](http://evil) & co\n# big"
    named = SimpleNamespace(main=replace(models.main, name=evil_name), notice=f"ValueError: {EVIL}\n---\n<b>x</b>")
    header = rendered(header_md(named, lang))
    assert header.tags == ["p", "strong", "code", "code", "code"]  # the name's bold, arch, device, dtype
    assert evil_name.replace("\n", " ") in header.text
    notice = rendered(notice_md(named, lang))
    assert notice.tags == ["p"] and f"ValueError: {EVIL} --- <b>x</b>" in notice.text


def test_the_page_header_is_built_with_the_escaped_notice(demo: gr.Blocks, models: Models):
    shown = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "model-notice")
    assert shown.value == notice_md(models, "en") and "<img" not in shown.value
