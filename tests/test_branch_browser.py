"""A chat reply branched in the browser, in each language (issue 21): click a token, pick another candidate, branch.
What the page shows is held against a computation done here: the alternatives of that token (explain.branching) and
the branch as a fresh plain loop writes it for the longer prompt with the same seed."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

import pytest
from playwright.sync_api import Browser, expect

from explain.branching import alternatives
from gpt.engine import Engine
from gpt.stream import SamplingParams
from live_app import VIEWPORT, LiveApp, goto
from text import t

MESSAGE = {"en": "Why is the sky blue?", "zh": "天空为什么是蓝色的？"}
SHOTS = os.environ.get("SCREENSHOTS_DIR")
SEED, MAX_TOKENS, AT = 7, 24, 3  # the reply's seed and length; the token clicked (0-based)


def words(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_branch_a_chat_reply(browser: Browser, live_app: LiveApp, lang: str) -> None:
    models = live_app.models
    tok, model = models.main.tokenizer, models.main.model
    prompt = tok.render_for_completion([{"role": "user", "content": MESSAGE[lang]}])
    params = SamplingParams(temperature=0.8, top_k=50, top_p=1.0, seed=SEED, max_tokens=MAX_TOKENS)  # the sliders'
    plain = Engine(model, tok, batched=False)
    reply = [e.token for e in plain.stream(prompt, params) if e.token is not None]
    assert len(reply) > AT
    others = alternatives(model, tok, prompt + reply[:AT], params, reply[AT])
    alt = int(others[~others["chosen"]]["token_id"].iloc[0])  # the first candidate the page offers
    branch = reply[:AT] + [alt] + [e.token for e in plain.stream(prompt + reply[:AT] + [alt],
                                                                    SamplingParams(**{**params.__dict__,
                                                                                      "max_tokens": MAX_TOKENS - AT - 1}))
                                   if e.token is not None]

    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        goto(page, live_app.url + f"?lang={lang}&seed={SEED}&max_tokens={MAX_TOKENS}&top_p=1")
        page.locator("#chat-message textarea").fill(MESSAGE[lang])
        page.locator("#chat-send").click()
        tokens = page.locator("#branch-tokens span.token")
        expect(tokens).to_have_count(len(reply), timeout=60_000)  # one span per token of the reply
        last = page.locator("#chatbot .message.bot").last
        expect(last).to_be_visible()
        assert words(last.inner_text()) == words(tok.decode(reply))

        tokens.nth(AT).click()
        options = page.locator("#branch-pick label")
        expect(options.first).to_be_visible(timeout=60_000)
        assert options.count() == len(others) - 1  # every shown candidate but the one the reply took
        expect(page.locator("#branch-text")).to_contain_text(str(others[others["chosen"]]["rank"].item()))
        page.locator("#branch-csv").click()  # the alternatives as CSV: the candidates shown, every digit
        with page.expect_download() as download:
            page.locator("#branch-file a[download]").click()
        table = pd.read_csv(download.value.path())
        assert table["token_id"].tolist() == others["token_id"].tolist()
        assert np.allclose(table["p"], others["p"], atol=1e-6)
        options.first.click()
        page.locator("#branch-go").click()

        cards = page.locator("#branch-cards .branch-card")
        expect(cards).to_have_count(2, timeout=60_000)
        expect(cards.nth(1)).to_contain_text(t("ui.branch_label", lang, n=2, parent=1, at=AT + 1))
        assert cards.nth(1).locator("mark").count() == 1
        stats = page.locator("#chat-stats")
        expect(stats).to_contain_text(t("ui.stats_stop", lang), timeout=60_000)  # the branch has ended
        expect(stats).to_contain_text(t("ui.stats_cached", lang, n=len(prompt) + AT))  # only the new token computed
        assert words(last.inner_text()) == words(tok.decode(branch))  # exactly the fresh reply to the longer prompt

        if SHOTS and lang == "en":  # the README's picture (tests/test_browser.py takes the others)
            page.mouse.move(0, 0)
            page.locator("#branch-panel").screenshot(path=Path(SHOTS) / "branches.png")
        page.locator("#copy-link").click()  # a link to the branch shown
        expect(page.locator("#link-box textarea")).to_have_value(re.compile("cbranch="), timeout=30_000)
        link = page.locator("#link-box textarea").input_value()

        page.locator("#branch-which label").first.click()  # back to the reply as written
        expect(cards.nth(0)).to_have_css("border-top-width", "2px", timeout=30_000)
        assert words(last.inner_text()) == words(tok.decode(reply))

        other = context.new_page()  # the link opens the same branch: the reply and the branch recomputed, seeded
        goto(other, link)
        shown = other.locator("#branch-cards .branch-card")
        expect(shown).to_have_count(2, timeout=60_000)
        expect(shown.nth(1)).to_have_css("border-top-width", "2px")
        assert words(other.locator("#chatbot .message.bot").last.inner_text()) == words(tok.decode(branch))
    finally:
        context.close()
