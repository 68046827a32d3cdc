"""The visitor's language: a browser that asks for Chinese lands in Chinese; a link's lang still wins."""
from __future__ import annotations


import pytest
from playwright.sync_api import Browser, expect

from rules.inputs import browser_language
from text import t
from live_app import VIEWPORT, LiveApp, goto


@pytest.mark.parametrize("locale, link, lang", [("zh-CN", "", "zh"), ("en-US", "", "en"), ("zh-CN", "?lang=en", "en"),
                                                ("fr-FR", "", "en")])
def test_first_page_follows_the_browser_unless_the_link_says(browser: Browser, live_app: LiveApp, locale: str,
                                                             link: str, lang: str) -> None:
    context = browser.new_context(viewport=VIEWPORT, locale=locale)  # sends Accept-Language for this locale
    try:
        page = context.new_page()
        goto(page, live_app.url + link)
        expect(page.locator("#tab-chat-button")).to_have_text(t("ui.tab_chat", lang), timeout=30_000)
    finally:
        context.close()


def test_accept_language_header():
    assert browser_language("zh-CN,zh;q=0.9,en;q=0.8") == "zh"
    assert browser_language("fr-FR,fr;q=0.9,zh;q=0.5,en;q=0.4") == "zh"  # the first the app speaks, by q
    assert browser_language("de,en;q=0.1,zh;q=0.7") == "zh"
    assert browser_language("en-GB,zh;q=0.9") == "en"
    for nothing in ("", None, "*", "fr;q=abc", "x" * 5000):
        assert browser_language(nothing) == "en"


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_a_toast_is_headed_in_the_pages_language(browser: Browser, live_app: LiveApp, lang: str) -> None:
    """Gradio heads its toasts "Error" in English whatever they say; the page's CSS gives the heading the registry's
    word (ui.toast_error) in the page's language: here for the refusal of an empty prompt."""
    context = browser.new_context(viewport=VIEWPORT, locale="en-US")
    try:
        page = context.new_page()
        goto(page, live_app.url + f"?lang={lang}&tab=inside")
        expect(page.locator("#tab-chat-button")).to_have_text(t("ui.tab_chat", lang), timeout=30_000)
        page.locator("#inside-prompt textarea").fill("")
        page.locator("#inside-ids textarea").fill("")
        page.locator("#inside-run").click()
        title = page.locator('[data-testid="toast-body"] .toast-title.error').first
        expect(title).to_be_visible(timeout=30_000)
        shown = title.evaluate("el => [getComputedStyle(el, '::before').content, getComputedStyle(el).fontSize,"
                               " getComputedStyle(el, '::before').fontSize]")
        assert shown[0] == f'"{t("ui.toast_error", lang)}"' and shown[1] == "0px" and shown[2] != "0px"
        expect(page.locator('[data-testid="toast-text"]').first).to_have_text(t("ui.empty_prompt", lang))
    finally:
        context.close()
