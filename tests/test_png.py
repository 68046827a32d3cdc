"""Issue 15, PNG export (rules/png.py, the Inside tab's PNG buttons and its zip): a view's figure becomes a PNG that
opens, at the size asked, Chinese labels drawn; one browser draws every figure; a figure that fails or a browser that
dies gives a clear message and the next figure is drawn; with no kaleido or no browser, the UI says so."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import gradio as gr
import plotly.graph_objects as go
import pytest
from PIL import Image

from conftest import make_tiny_model
from demo import inside
from demo.i18n import Relabel
from demo.models import Models, load
from rules import png
from explain.build import build_all
from explain.common import FONT
from text import t

SIGNATURE = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[1]
needs_browser = pytest.mark.skipif(png.Exporter().unavailable() is not None,
                                   reason="PNG export needs kaleido and Chromium (scripts/test.sh installs both)")


def image(data: bytes) -> Image.Image:
    assert data.startswith(SIGNATURE)
    picture = Image.open(io.BytesIO(data))
    picture.load()  # decodes every pixel: a truncated or corrupt PNG fails here
    assert picture.format == "PNG"
    return picture


def title_only(title: str) -> go.Figure:
    """A small figure whose only text is its title (in the app's font list)."""
    return go.Figure(layout=dict(title=dict(text=title, font=dict(size=28)), font=dict(family=FONT), width=320,
                                 height=120, margin=dict(l=10, r=10, t=60, b=10),
                                 xaxis=dict(visible=False), yaxis=dict(visible=False)))


@pytest.fixture(scope="module")
def exporter() -> Iterator[png.Exporter]:
    """An exporter of the tests' own (the app's one, png.EXPORTER, may already run): launches counts from zero."""
    exporter = png.Exporter()
    yield exporter
    exporter.close()


@pytest.fixture(scope="module")
def views(tiny_tokenizer) -> dict:
    """Two small views of the tiny model, one in English and one in Chinese (titles, axes, hover text)."""
    model = make_tiny_model(tiny_tokenizer.vocab_size)
    english = build_all(model, tiny_tokenizer, "The teacher asked", "en", views=("softcap",))
    chinese = build_all(model, tiny_tokenizer, "老师打开笔记本", "zh", views=("mask",))
    return {"en": english["softcap"], "zh": chinese["mask"]}


# ---- rules/png.py --------------------------------------------------------------------------------------------

def test_importing_starts_nothing():
    """No browser, not even kaleido, until the first figure: the app's import and build stay as fast as before."""
    code = ("import sys, rules.png as p; "
            "assert p.EXPORTER.launches == 0 and p.EXPORTER.browser_pid() is None; "
            "assert 'kaleido' not in sys.modules and 'choreographer' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120,
                   env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})


@needs_browser
def test_a_views_png_opens_at_the_size_asked_and_one_browser_draws_them_all(exporter: png.Exporter, views: dict):
    first = exporter.png(views["en"].fig, width=640, height=360)
    pid = exporter.browser_pid()
    assert image(first).size == (640, 360)
    chinese = image(exporter.png(views["zh"].fig, width=500, height=300, scale=2))
    assert chinese.size == (1000, 600)  # width and height times scale
    assert image(exporter.png(views["zh"].fig)).size == (png.DEFAULT_WIDTH, views["zh"].fig.layout.height)
    assert exporter.launches == 1 and exporter.browser_pid() == pid  # one browser, reused for every figure


@needs_browser
def test_chinese_labels_are_drawn_not_boxes(exporter: png.Exporter):
    """Without a CJK font every Chinese character is the same empty box, so two different titles would give the same
    picture (scripts/test.sh installs fonts-wqy-microhei)."""
    a, b, boxes = (exporter.png(title_only(text)) for text in ("今天天气", "我们一起", "\ue000\ue001\ue002\ue003"))
    assert image(a).tobytes() != image(b).tobytes(), "Chinese characters all look alike: no CJK font?"
    assert image(a).tobytes() != image(boxes).tobytes()


@needs_browser
def test_a_figure_that_fails_gives_a_clear_message_and_the_next_one_is_drawn(exporter: png.Exporter, views: dict):
    exporter.png(views["en"].fig)  # the browser runs
    launches = exporter.launches
    with pytest.raises(png.PngError) as caught:  # a control character: the SVG plotly.js makes is not valid XML
        exporter.png(title_only("bad \x1a title"))
    assert caught.value.key == "ui.png_failed" and not caught.value.unavailable
    assert "plotly.js" in caught.value.message("zh") and caught.value.message("zh").startswith("无法生成 PNG")
    for _ in range(3):  # kaleido's timeout strikes at different points of a render
        with pytest.raises(png.PngError) as caught:
            exporter.png(views["en"].fig, timeout_s=0.001)
        assert caught.value.key == "ui.png_timeout"
        assert caught.value.message("zh") == t("ui.png_timeout", "zh", seconds="0.001")
        assert image(exporter.png(views["en"].fig))  # the same browser draws the next figure
    assert exporter.launches == launches


@needs_browser
def test_a_browser_that_died_is_replaced(exporter: png.Exporter, views: dict):
    exporter.png(views["en"].fig)
    launches, launcher = exporter.launches, exporter.browser_pid()
    for chromium in subprocess.run(["pgrep", "-P", str(launcher)], capture_output=True, text=True).stdout.split():
        os.kill(int(chromium), signal.SIGKILL)  # Chromium crashes (its launcher then exits)
    time.sleep(0.2)
    assert image(exporter.png(views["en"].fig))
    assert exporter.launches == launches + 1 and exporter.browser_pid() != launcher


def test_no_kaleido_or_no_browser_is_said_clearly(monkeypatch, tmp_path: Path):
    monkeypatch.setenv(png.BROWSER_ENV, str(tmp_path / "chromium"))  # a path with no browser
    none_here = png.Exporter()
    why = none_here.unavailable()
    assert why is not None and why.key == "ui.png_no_browser" and why.unavailable
    with pytest.raises(png.PngError) as caught:
        none_here.png(title_only("x"))
    assert caught.value.key == "ui.png_no_browser" and "Chromium" in str(caught.value)
    assert none_here.launches == 0

    monkeypatch.setattr(png, "kaleido_installed", lambda: False)
    why = png.Exporter().unavailable()
    assert why is not None and why.key == "ui.png_no_kaleido" and "kaleido" in why.message("zh")


# ---- the Inside tab --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def models() -> Models:
    return load()


def inside_tab(models: Models) -> gr.Blocks:
    with gr.Blocks() as blocks:
        inside.build(models, Relabel(), gr.State("zh"))
    return blocks


def handler(blocks: gr.Blocks, name: str):
    return next(f.fn for f in blocks.fns.values() if f.name == name)


def component(blocks: gr.Blocks, elem_id: str):
    return next(c for c in blocks.blocks.values() if getattr(c, "elem_id", None) == elem_id)


def session(name: str) -> SimpleNamespace:
    return SimpleNamespace(session_hash=name)


@needs_browser
def test_the_png_button_and_the_zip_give_pngs(models: Models, views: dict):
    launches = png.EXPORTER.launches
    blocks = inside_tab(models)
    assert png.EXPORTER.launches == launches  # building the tab starts no browser
    assert component(blocks, "view-png-0").visible and not component(blocks, "inside-png-note").value
    shown = [views["en"], views["zh"]]
    made = handler(blocks, "view_png")(shown, 1, "zh", session("png-button"))
    path = Path(made["value"])
    assert made["visible"] and path.name == "01-mask.png"
    assert image(path.read_bytes()).size[0] == png.DEFAULT_WIDTH * inside.PNG_SCALE
    with zipfile.ZipFile(handler(blocks, "export_zip")(shown, "zh", session("png-zip"))["value"]) as z:
        assert {"00-softcap.png", "01-mask.png"} <= set(z.namelist())
        assert image(z.read("01-mask.png")).size == image(path.read_bytes()).size


def test_without_png_export_the_tab_says_why_and_the_zip_still_comes(models: Models, views: dict, monkeypatch,
                                                                         tmp_path: Path):
    monkeypatch.setattr(png, "EXPORTER", png.Exporter(browser=str(tmp_path / "chromium")))
    blocks = inside_tab(models)
    note = component(blocks, "inside-png-note").value
    assert note == t("ui.png_no_browser", "en")
    assert not component(blocks, "view-png-0").visible  # no PNG buttons, the note instead
    with pytest.raises(gr.Error) as caught:  # a click anyway (a stale page): the message, not a bare "Error"
        handler(blocks, "view_png")([views["zh"]], 0, "zh", session("png-none"))
    assert caught.value.message == t("ui.png_no_browser", "zh")
    with pytest.warns(UserWarning, match="BROWSER_PATH"):  # outside a running app gr.Warning is a warning
        made = handler(blocks, "export_zip")([views["zh"]], "zh", session("png-none"))
    with zipfile.ZipFile(made["value"]) as z:
        assert "00-mask.csv" in z.namelist() and not [n for n in z.namelist() if n.endswith(".png")]
