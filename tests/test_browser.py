"""The app in a real browser: Debian's Chromium, headless, driven by Playwright, against the served app.

With SCREENSHOTS_DIR set, the tests also save the README's screenshots there (see README "What it looks like").
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from playwright.sync_api import Browser, Page, expect

from demo import inside, lessons
from demo.replies import UPDATE_EVERY_S
from demo.i18n import LANGS, t
from rules import png
from gpt.engine import Engine, SamplingParams
from live_app import LiveApp, TokenGate, goto, open_app

MESSAGE = "Tell me a story about a robot who learns to paint."
TOKEN_INTERVAL_S = 0.02  # the pace of a paced chat: at most 50 tokens/s
REPLY_TOKENS = 40  # with this pace, long enough to watch a reply grow
STOP_AFTER = 5  # tokens the chat gets before the Stop test presses Stop
CJK = re.compile(r"[\u4e00-\u9fff]")
SHOTS = os.environ.get("SCREENSHOTS_DIR")

# Every view slot that is showing has a Plotly figure drawn with a non-zero size.
PLOTS_DRAWN = """(n) => {
  const shown = [...document.querySelectorAll(".view")].filter(v => v.getBoundingClientRect().height > 0);
  return shown.length === n && shown.every(v => {
    const svg = v.querySelector("svg.main-svg");
    if (!svg) return false;
    const r = svg.getBoundingClientRect();
    return r.width > 0 && r.height > 0;
  });
}"""
# Records every distinct text the last reply of the chatbot shows, as it streams in.
WATCH_REPLY = """() => {
  window.replies = [];
  const box = document.querySelector("#chatbot");
  new MutationObserver(() => {
    const bots = box.querySelectorAll(".bot-row .message-content");
    const text = bots.length ? bots[bots.length - 1].textContent : "";
    if (text && text !== window.replies.at(-1)) window.replies.push(text);
  }).observe(box, {childList: true, subtree: true, characterData: true});
}"""


@pytest.fixture
def paced(live_app: LiveApp) -> Iterator[None]:
    """The chat engine waits TOKEN_INTERVAL_S before each token during the test (see live_app.py)."""
    live_app.token_interval = TOKEN_INTERVAL_S
    yield
    live_app.token_interval = 0.0


@pytest.fixture
def gate(live_app: LiveApp) -> Iterator[TokenGate]:
    """The chat handler gets the engine's events only as the test releases them (see live_app.py)."""
    gate = TokenGate()
    live_app.before_pull, live_app.after_pull = gate.before_pull, gate.after_pull
    yield gate
    live_app.before_pull = live_app.after_pull = None
    gate.release(1000)  # a handler still waiting (a failed test) runs on to its end


def snap(page: Page, name: str) -> None:
    """Save a full-page screenshot for the README when SCREENSHOTS_DIR is set."""
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.mouse.move(0, 0)  # no hover highlight on the last button clicked
        page.screenshot(path=Path(SHOTS) / f"{name}.png", full_page=True)


def set_slider(page: Page, elem_id: str, value: float) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.blur()  # commits the value (and fires the slider's release event)


def wait_idle(page: Page) -> None:
    """Until no event of this page is running or waiting in the queue."""
    page.wait_for_function("!document.querySelector('.pending, .generating')")


STATS = "#chat-stats [data-testid=markdown]"  # the stats line itself, not the status badge drawn over it


def stats(page: Page) -> str:
    return page.locator(STATS).inner_text()


@pytest.fixture(scope="module")
def long_seed(live_app: LiveApp) -> int:
    """A seed with which the served model's reply to MESSAGE (temperature 1, no top-k) runs on for REPLY_TOKENS.
    Sampled, not greedy: an untrained model's greedy reply repeats one (invisible) byte."""
    tok = live_app.models.main.tokenizer
    prompt = tok.render_for_completion([{"role": "user", "content": MESSAGE}])
    engine = Engine(live_app.models.main.model, tok, batched=False)
    for seed in range(40):
        params = SamplingParams(temperature=1.0, top_k=None, top_p=1.0, seed=seed, max_tokens=REPLY_TOKENS)
        if list(engine.stream(prompt, params))[-1].stop_reason == "max_tokens":
            return seed
    raise AssertionError(f"the model ends every reply to {MESSAGE!r} before {REPLY_TOKENS} tokens")


def chat(page: Page, seed: int, sliders: dict[str, float] | None = None) -> None:
    """Send MESSAGE with this seed and these slider values (by elem_id), recording how the reply grows."""
    for elem_id, value in (sliders or {}).items():
        set_slider(page, elem_id, value)
    page.fill("#chat-seed textarea", str(seed))
    page.evaluate(WATCH_REPLY)
    page.fill("#chat-message textarea", MESSAGE)
    page.click("#chat-send")


def long_chat(page: Page, seed: int, max_tokens: int) -> None:
    chat(page, seed, {"chat-temperature": 1.0, "chat-top-k": 0, "chat-max-tokens": max_tokens})


def test_chat_reply_streams_in(page: Page, long_seed: int, paced: None) -> None:
    long_chat(page, long_seed, REPLY_TOKENS)
    expect(page.locator("#chat-stats")).to_contain_text(t("ui.stats_stop"), timeout=60_000)
    replies = page.evaluate("window.replies")
    assert len(replies) > 1, "the reply arrived in one piece"
    assert len(replies[0]) < len(replies[-1])
    assert re.match(rf"{REPLY_TOKENS}\b", stats(page)), stats(page)  # we asked for REPLY_TOKENS and got them all
    expect(page.locator("#chatbot .user-row")).to_contain_text(MESSAGE)


def until(condition: Callable[[], object], timeout: float = 60.0) -> None:
    """Wait until condition() holds (checked every 10 ms); fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_stop_halts_the_reply(page: Page, live_app: LiveApp, long_seed: int, gate: TokenGate) -> None:
    """Counted in tokens, not seconds: the chat gets STOP_AFTER tokens, Stop is pressed while it waits for the next,
    then 100 more are let through; none of them may reach the page."""
    long_chat(page, long_seed, live_app.models.main.model.config.sequence_len)
    for k in range(1, STOP_AFTER + 1):
        gate.wait(lambda g: g.asked >= k)  # the handler waits for its k-th event
        time.sleep(UPDATE_EVERY_S + 0.01)  # it updates the page with an event that comes UPDATE_EVERY_S after the last
        gate.release()
    gate.wait(lambda g: g.asked > STOP_AFTER)  # it has handled STOP_AFTER events and waits for the next
    expect(page.locator(STATS)).to_have_text(re.compile(rf"^\s*{STOP_AFTER}\b"))  # and shows them
    shown = page.evaluate("window.replies")
    page.click("#chat-stop")
    until(live_app.should_stop)  # the Stop button has reached the server
    gate.release(100)
    gate.wait(lambda g: len(g.pulled) > STOP_AFTER)  # the handler has pulled its next event from the engine
    wait_idle(page)
    time.sleep(0.5)  # room for an update sent after Stop to reach the page (none may add text)
    assert page.evaluate("window.replies") == shown, "the reply changed after Stop"
    assert [e.token is not None for e in gate.pulled] == [True] * STOP_AFTER + [False]  # no token after Stop
    assert gate.pulled[-1].stop_reason == "stopped"
    assert re.match(rf"\s*{STOP_AFTER}\b", stats(page)), f"the stats line after Stop: {stats(page)!r}"
    assert t("ui.stop_stopped") in stats(page), "the stats line does not say the reply was stopped"


def test_regenerate_repeats_a_seeded_reply_and_clear_empties_the_chat(page: Page) -> None:
    chat(page, seed=1)  # the default sampling settings, at full speed
    expect(page.locator("#chat-stats")).to_contain_text(t("ui.stats_stop"), timeout=60_000)
    reply = page.evaluate("window.replies.at(-1)")
    snap(page, "chat")
    page.evaluate("window.replies = []")
    page.click("#chat-regenerate")
    page.wait_for_function("(reply) => window.replies.at(-1) === reply", arg=reply)  # same seed, same reply
    wait_idle(page)
    expect(page.locator("#chatbot .message-row")).to_have_count(2)  # in place of the first one
    page.click("#chat-clear")
    expect(page.locator("#chatbot .message-row")).to_have_count(0)


@pytest.mark.parametrize("example", ["prompt", "tutorial_2x5"])
def test_every_inside_view_draws(page: Page, live_app: LiveApp, example: str) -> None:
    page.click("#tab-inside-button")
    if example == "prompt":
        page.fill("#inside-prompt textarea", MESSAGE)
        page.click("#inside-run")
        shape = f"[1, {len(live_app.models.main.tokenizer.encode(MESSAGE))}]"  # input [B, T]
    else:
        page.click("#inside-preset input")
        page.get_by_role("option", name=t(f"preset.{example}")).click()
        shape = "[2, 5, 50304]"  # the tutorial's question: input [2, 5] gives logits [2, 5, 50304]
    page.wait_for_function(PLOTS_DRAWN, arg=len(inside.VIEWS), timeout=120_000)
    expect(page.locator("#view-plot-0")).to_contain_text(shape)
    assert page.locator(".toast-body.error").count() == 0


def test_a_views_png_button_downloads_a_png(page: Page, live_app: LiveApp) -> None:
    if png.unavailable() is not None:
        pytest.skip(png.unavailable().message("en"))
    goto(page, live_app.url + "?" + urlencode(dict(tab="inside", preset="story", prompt=inside.PRESETS["story"].prompt,
                                                   focus="softcap")))
    page.wait_for_function(PLOTS_DRAWN, arg=1, timeout=60_000)
    page.locator("#view-0").get_by_text(t("ui.data")).click()  # the accordion with the CSV and PNG buttons
    page.click("#view-png-0")
    link = page.locator("#view-png-file-0 a[download]")
    expect(link).to_be_visible(timeout=30_000)
    with page.expect_download() as download:
        link.click()
    assert download.value.suggested_filename == "00-softcap.png"
    data = Path(download.value.path()).read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    assert page.locator(".toast-body.error").count() == 0


def test_language_switch_relabels_and_reexplains(page: Page, live_app: LiveApp) -> None:
    prompt = inside.PRESETS["story"].prompt
    goto(page, live_app.url + "?" + urlencode(dict(tab="inside", preset="story", prompt=prompt, focus="next_token")))
    page.wait_for_function(PLOTS_DRAWN, arg=1, timeout=60_000)
    tabs = page.locator("[role=tab]")
    english_view = page.locator("#view-0 .prose.view-text").inner_text()
    assert not CJK.search(" ".join(tabs.all_inner_texts()))
    page.get_by_label(LANGS["zh"]).check()
    expect(tabs).to_have_text([t(f"ui.tab_{name}", "zh") for name in ("chat", "inside", "generate", "lessons")])
    expect(page.locator("#inside-run")).to_have_text(t("ui.run_forward", "zh"))
    expect(page.locator("#view-0 .prose.view-text")).not_to_have_text(english_view, timeout=60_000)
    assert CJK.search(page.locator("#view-0 .prose.view-text").inner_text())  # the explanation is re-written in Chinese
    page.wait_for_function(PLOTS_DRAWN, arg=1)
    snap(page, "chinese")


def test_copied_link_restores_the_state(page: Page, browser: Browser, live_app: LiveApp) -> None:
    c = live_app.models.main.model.config
    layer, head, position, temperature = c.n_layer - 1, c.n_head - 1, 3, 0.35
    set_slider(page, "chat-temperature", temperature)
    page.click("#tab-inside-button")
    page.fill("#inside-prompt textarea", MESSAGE)
    page.click("#inside-focus input")
    page.get_by_role("option", name=t("ui.view_attention")).click()
    wait_idle(page)
    for elem_id, value in (("inside-layer", layer), ("inside-head", head), ("inside-position", position)):
        set_slider(page, elem_id, value)
        wait_idle(page)
    page.wait_for_function(PLOTS_DRAWN, arg=1)
    snap(page, "inside")
    page.get_by_label(LANGS["zh"]).check()
    expect(page.locator("#tab-inside-button")).to_have_text(t("ui.tab_inside", "zh"))
    wait_idle(page)

    page.click("#copy-link")
    link_box = page.locator("#link-box textarea")
    expect(link_box).to_have_value(re.compile(r"\?."))
    link = link_box.input_value()
    query = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
    assert query == {"tab": "inside", "lang": "zh", "prompt": MESSAGE, "temperature": str(temperature),
                     "focus": "attention", "layer": str(layer), "head": str(head), "pos": str(position)}

    restored = open_app(browser, link)
    try:
        expect(restored.locator("#tab-inside-button")).to_have_attribute("aria-selected", "true")
        expect(restored.locator("#inside-prompt textarea")).to_have_value(MESSAGE)
        for elem_id, value in (("inside-layer", layer), ("inside-head", head), ("inside-position", position),
                               ("chat-temperature", temperature)):
            expect(restored.locator(f"#{elem_id} input[type=number]")).to_have_value(str(value))
        expect(restored.get_by_label(LANGS["zh"])).to_be_checked()
        expect(restored.locator("#tab-inside-button")).to_have_text(t("ui.tab_inside", "zh"))
        restored.wait_for_function(PLOTS_DRAWN, arg=1, timeout=60_000)  # the link's view is drawn again
    finally:
        restored.context.close()


def test_generate_steps_one_token_at_a_time(page: Page) -> None:
    page.click("#tab-generate-button")
    steps_table = page.locator("#gen-history [role=grid]")
    new_tokens = page.locator("#gen-text .token.highlighted")
    for step in (1, 2, 3):
        page.click("#gen-step")
        expect(steps_table).to_have_attribute("aria-rowcount", str(1 + step))  # the header, then a row per step
        expect(new_tokens).to_have_count(step)
    expect(page.locator("#gen-text .token").first).to_have_text(page.locator("#gen-prompt textarea").input_value())
    page.wait_for_function("document.querySelector('#gen-plot svg.main-svg')")
    snap(page, "generate")


def test_lesson_opens_its_live_view(page: Page) -> None:
    page.click("#tab-lessons-button")
    buttons = page.locator("[id^=lesson-btn-]")
    expect(buttons).to_have_count(len(lessons.LESSONS))
    snap(page, "lessons")
    question = next(i for i, lesson in enumerate(lessons.LESSONS) if lesson.settings.get("preset") == "tutorial_2x5")
    page.click(f"#lesson-btn-{question}")
    expect(page.locator("#tab-inside-button")).to_have_attribute("aria-selected", "true")
    page.wait_for_function(PLOTS_DRAWN, arg=1, timeout=60_000)
    expect(page.locator("#view-plot-0")).to_contain_text("[2, 5, 50304]")


def test_the_cost_lesson_shows_the_measured_plot(page: Page) -> None:
    """The lesson on forward vs generate runs the cost comparison: its plot (hidden until something is measured)
    shows, with both loops' times (it once ran hidden: only the Measure button's own click made it visible)."""
    page.click("#tab-lessons-button")
    lesson = next(i for i, lesson in enumerate(lessons.LESSONS) if lesson.settings.get("gcost"))
    page.click(f"#lesson-btn-{lesson}")
    expect(page.locator("#tab-generate-button")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#gen-cost-plot")).to_be_visible(timeout=60_000)
    page.wait_for_function("() => document.querySelectorAll('#gen-cost-plot .scatterlayer .trace').length == 2",
                           timeout=60_000)


def test_html_in_the_chat_is_shown_as_text_and_never_runs(page: Page) -> None:
    """Markdown is rendered, raw HTML is not: a message carrying a script, an image and a link reaches the page as
    text (the model's replies go through the same Chatbot), and the model reads it as typed."""
    attack = ("**bold** <script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 2\">"
              "<a href=\"javascript:window.pwned=3\">click</a>")
    page.fill("#chat-seed textarea", "0")
    page.fill("#chat-message textarea", attack)
    page.click("#chat-send")
    expect(page.locator("#chatbot .user-row")).to_contain_text("bold")
    wait_idle(page)
    user = page.locator("#chatbot .user-row").first
    assert user.locator("strong").count() == 1  # Markdown still works
    assert user.locator("script, img, a").count() == 0
    assert "<img src=x" in user.inner_text()  # shown as the text that was typed
    page.locator("#chatbot .user-row").first.click()
    assert page.evaluate("window.pwned") is None
