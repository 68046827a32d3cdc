"""Issue 23, a static site for every class: `python app.py --publish OUT_DIR` (run once per session, the default
model) writes a site that a plain static server serves. In Chromium with every request off the local server blocked:
every lesson draws its figures in both languages, the anchors open the right view (and a replay at its step), the
language switch keeps the place, and not one request leaves. The figures are the model's own views (one computed
again here), the Plotly library is the installed package's, the whole under 20 MB. And on the live app a lesson's
button sends exactly the request its payload is kept for.
"""
from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from demo.lessons import LESSONS, lesson_values
from text import LANGS, t

playwright = pytest.importorskip("playwright.sync_api")
from live_app import CHROMIUM, CHROMIUM_ARGS, VIEWPORT  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MAX_SITE_BYTES = 20_000_000  # the bound for the default model


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no line per request in the test's output
        pass


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """The default model's site, written by the command itself."""
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "app.py", "--publish", str(out)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=1200)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "published 2 pages" in done.stdout
    return out


@pytest.fixture(scope="session")
def server(site: Path):
    """Python's static file server on a free local port, in a thread."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(site)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


@pytest.fixture(scope="session")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    """A page whose every request not to the local server is blocked and recorded (page.outside)."""
    context = browser.new_context(viewport=VIEWPORT)
    pg = context.new_page()
    pg.outside = []
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))

    def route(r):
        if r.request.url.startswith(server):
            r.continue_()
        else:
            pg.outside.append(r.request.url)
            r.abort()

    pg.route("**/*", route)
    yield pg
    context.close()
    assert errors == []


def page_url(server: str, lang: str) -> str:
    return server + ("index.html" if lang == "en" else f"{lang}.html")


def site_data(site: Path, lang: str) -> dict:
    text = (site / "data" / f"{lang}.js").read_text(encoding="utf-8")
    return json.loads(text[text.index("=") + 1:].rstrip().rstrip(";"))


def drawn(page, selector: str) -> None:
    """Wait until the element's figure is drawn by Plotly (an SVG with at least one trace)."""
    page.wait_for_function("s => { const d = document.querySelector(s); return d !== null && "
                           "d.hasAttribute('data-drawn') && d.querySelector('.main-svg') !== null && "
                           "Array.isArray(d.data) && d.data.length > 0; }", arg=selector, timeout=30_000)


@pytest.mark.parametrize("lang", list(LANGS))
def test_every_lesson_draws_its_figures_with_no_outside_request(page, server, site, lang):
    page.goto(page_url(server, lang))
    for i, lesson in enumerate(LESSONS):
        section = page.locator(f"section#{lesson.id}")
        assert section.count() == 1, lesson.id
        question = t(f"lesson.{lesson.id}.question", lang, **lesson_values(lesson)).replace("`", "")
        assert question in section.locator("h2").inner_text()
        plots = section.locator("[data-figure], .replay .plot")
        assert plots.count() >= 1, lesson.id
        for j in range(plots.count()):
            plot = plots.nth(j)
            plot.scroll_into_view_if_needed()
            key = plot.get_attribute("data-figure")
            selector = f'[data-figure="{key}"]' if key else f'[data-replay="{lesson.id}"] .plot'
            drawn(page, selector)
            traces = page.evaluate("s => document.querySelector(s).data.length", selector)
            assert traces >= 1, (lesson.id, key)
    assert page.outside == []


def test_the_site_is_the_models_views_with_its_own_plotly_under_20_mb(site):
    """The next-token lesson's figure is the view computed here for the same prompt; plotly.min.js is the installed
    package's file; the whole site is under 20 MB; a static Space's front matter sits beside it."""
    import plotly
    import plotly.io as pio

    from demo.inside import PRESETS
    from explain.build import build_all
    from gpt.checkpoint import load_default

    loaded = load_default(device="cpu")
    for lang in LANGS:
        view = build_all(loaded.model, loaded.tokenizer, PRESETS["story"].prompt, lang, views=("next_token",))
        ours = json.loads(pio.to_json(view["next_token"].fig, validate=False))
        assert site_data(site, lang)["figures"]["every_position-next_token"]["data"] == ours["data"], lang
    bundled = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    assert (site / "plotly.min.js").read_bytes() == bundled.read_bytes()
    size = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
    assert size < MAX_SITE_BYTES, size
    readme = (site / "README.md").read_text(encoding="utf-8")
    assert "sdk: static" in readme and "app_file: index.html" in readme
    for name in ["site.js", *(("index.html" if lang == "en" else f"{lang}.html") for lang in LANGS)]:
        assert not re.search(r'(src|href)="(https?:)?//', (site / name).read_text(encoding="utf-8")), name


def test_anchors_open_the_right_view_and_the_switch_keeps_the_place(page, server, site):
    data = site_data(site, "zh")
    page.goto(page_url(server, "en") + "#every_position-next_token")
    target = page.locator("#every_position-next_token")
    drawn(page, '[data-figure="every_position-next_token"]')
    assert "target" in target.get_attribute("class") and target.is_visible()
    assert page.evaluate("() => { const r = document.getElementById('every_position-next_token')"
                         ".getBoundingClientRect(); return r.top < innerHeight && r.bottom > 0; }")

    page.goto(page_url(server, "en") + "#generate_loop-step-5")
    replay = page.locator('[data-replay="generate_loop"]')
    page.wait_for_function("() => document.querySelector('[data-replay=generate_loop] .plot')"
                           ".getAttribute('data-drawn') === 'generate_loop/5'")
    assert replay.get_attribute("data-step") == "5"
    steps = len(site_data(site, "en")["replays"]["generate_loop"]) - 1  # 0 to the tab's step limit
    assert replay.locator(".step-label").inner_text() == t("site.step", "en", n=5, total=steps)
    replay.locator('[data-act="next"]').click()
    assert replay.get_attribute("data-step") == "6"

    page.locator('a.lang-link[hreflang="zh"]').click()  # the switch, at a view's anchor
    page.wait_for_url("**/zh.html#generate_loop-step-5")
    page.wait_for_function("() => document.querySelector('[data-replay=generate_loop]').getAttribute('data-step')"
                           " === '5'")
    assert page.locator('[data-replay="generate_loop"] .step-label').inner_text() == data["replays"][
        "generate_loop"][5]["label"] == t("site.step", "zh", n=5, total=steps)
    assert page.outside == []


def test_a_lessons_button_on_the_live_app_sends_the_request_its_payload_is_kept_for(browser):
    """The live app: clicking a lesson's button keeps its payload (so the click sent exactly the lesson's key), and
    a second click is answered with the model switched off."""
    import torch

    from demo.app import build_app, launch_kwargs
    from demo.models import load
    from live_app import free_port

    models = load()
    demo, payloads = build_app(models)
    demo.queue()
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            **launch_kwargs())
    try:
        context = browser.new_context(viewport=VIEWPORT)
        pg = context.new_page()
        pg.goto(url)
        index = next(i for i, lesson in enumerate(LESSONS) if lesson.id == "every_position")
        event = next(e for e in payloads.events if e.lesson.id == "every_position" and e.lang == "en")
        pg.locator("#tab-lessons-button, button[role=tab]:has-text('Lessons')").first.click()
        pg.locator(f"#lesson-btn-{index}").click()
        pg.wait_for_function("() => document.querySelector('#view-plot-0 .main-svg') !== null", timeout=60_000)
        assert payloads.kept(event.key)

        original = torch.nn.Module.__call__
        torch.nn.Module.__call__ = lambda *a, **k: (_ for _ in ()).throw(AssertionError("a model ran"))
        try:
            pg.locator("button[role=tab]:has-text('Lessons')").first.click()
            pg.locator(f"#lesson-btn-{index}").click()
            pg.wait_for_timeout(1500)
            assert pg.locator(".toast-title.error").count() == 0
        finally:
            torch.nn.Module.__call__ = original
        context.close()
    finally:
        demo.close()
