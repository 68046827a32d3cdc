"""What a user's mistake looks like in a real browser (Debian's Chromium, as tests/test_browser.py): a toast that says
why, no bare "Error" cover on any component, every input still usable; and chat Markdown that fetches nothing."""
from __future__ import annotations

from urllib.parse import urlsplit

from playwright.sync_api import Page, expect

from demo.i18n import t
from live_app import LiveApp

ERROR_COVER = "[data-testid=status-tracker] .error"  # the bare "Error" badge Gradio puts on a failed event's outputs


def wait_idle(page: Page) -> None:
    page.wait_for_function("!document.querySelector('.pending, .generating')")


def says(page: Page, message: str) -> None:
    """An error toast with `message`, and nowhere the bare "Error" cover."""
    expect(page.locator(".toast-body.error").filter(has_text=message).first).to_be_visible()
    wait_idle(page)
    assert page.locator(ERROR_COVER).filter(visible=True).count() == 0, "a bare 'Error' cover is showing"


def test_run_with_no_prompt_says_why_and_the_sliders_stay_usable(page: Page) -> None:
    """Before: four red "Error" badges over the notes and the three sliders, each blocking its slider until its × was
    pressed; the reason only in a toast that left after 10 s."""
    page.click("#tab-inside-button")
    page.click("#inside-run")
    says(page, t("ui.empty_prompt"))
    box = page.locator("#inside-layer input[type=number]")
    box.fill("1")  # fails if anything covers the slider
    box.blur()
    wait_idle(page)
    expect(box).to_have_value("1")
    page.fill("#inside-prompt textarea", "Once upon a time")
    page.click("#inside-run")
    page.wait_for_function("document.querySelector('#view-plot-0 svg.main-svg')", timeout=120_000)
    shown = page.locator(".toast-body.error").all_inner_texts()
    assert all(t("ui.empty_prompt") in toast for toast in shown), shown  # no new error: only the first one's


def test_chat_mistakes_say_why_and_the_message_box_stays_usable(page: Page, live_app: LiveApp) -> None:
    """An empty message, Regenerate with no reply, Look inside an empty chat, a message over the context: each says
    why, and the box still takes the next message. A refused message stays in the box, not in the chat (before, it
    stayed in the history with no reply, and every later message failed until Clear)."""
    rows = page.locator("#chatbot .message-row")
    page.click("#chat-send")
    says(page, t("ui.empty_message"))
    page.click("#chat-regenerate")
    says(page, t("ui.nothing_to_regenerate"))
    page.click("#chat-look-inside")
    says(page, t("ui.no_reply_yet"))
    too_long = "word " * live_app.models.main.model.config.sequence_len
    page.fill("#chat-message textarea", too_long)
    page.click("#chat-send")
    says(page, t("ui.message_too_long", n=0, ctx=0)[:16])
    expect(page.locator("#chat-message textarea")).to_have_value(too_long)  # still there, to shorten
    expect(rows).to_have_count(0)
    page.fill("#chat-seed textarea", "0")
    page.fill("#chat-message textarea", "Hi")  # the box takes the next message, and it is answered
    page.click("#chat-send")
    expect(page.locator("#chat-stats")).to_contain_text(t("ui.stats_stop"), timeout=60_000)
    expect(rows).to_have_count(2)


def test_a_markdown_image_in_the_chat_fetches_nothing(page: Page, live_app: LiveApp) -> None:
    """Markdown still renders (bold, links), but an image is shown as the text that was typed, so the browser asks
    no other host for anything; a link opens with rel=noopener."""
    app_host = urlsplit(live_app.url).netloc
    elsewhere: list[str] = []
    page.on("request", lambda request: elsewhere.append(request.url)
            if urlsplit(request.url).netloc not in (app_host, "") else None)
    text = ("**bold** ![tracker](http://images.example.com/pixel.png) [![x](http://b.example.com/y.png)](http://a) "
            "[a link](http://link.example.com/)")
    page.fill("#chat-seed textarea", "0")
    page.fill("#chat-message textarea", text)
    page.click("#chat-send")
    user = page.locator("#chatbot .user-row").first
    expect(user).to_contain_text("bold")
    expect(page.locator("#chat-stats")).to_contain_text(t("ui.stats_stop"), timeout=60_000)
    wait_idle(page)
    assert user.locator("strong").count() == 1  # Markdown still works
    assert page.locator("#chatbot img").count() == 0
    assert "![tracker](http://images.example.com/pixel.png)" in user.inner_text()  # shown as typed
    link = user.locator("a[href='http://link.example.com/']")
    expect(link).to_have_count(1)
    assert "noopener" in (link.get_attribute("rel") or "")
    assert elsewhere == [], elsewhere
