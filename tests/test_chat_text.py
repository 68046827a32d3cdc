"""Chat text as the Chatbot shows it (rules.inputs.to_chatbot) and as the model reads it back (from_chatbot): Markdown
with no HTML and no image from the user or the model, code shown as typed, and every message read back as typed.

Gradio 6.31's Chatbot renders Markdown in the browser: it takes $$...$$ out for KaTeX, turns the rest into HTML with
the marked 12 bundled in its frontend (GFM, line breaks), and sanitizes that HTML with a sanitizer that keeps <b> and
<img>. marked escapes the text of code spans and code blocks itself, so an entity there shows as typed ("&lt;"). The
browser tests below render with that very module, loaded from the served app, and through the chat itself.
"""
from __future__ import annotations

import random
import re
from pathlib import Path
from urllib.parse import urlsplit

import gradio
import pytest

from rules.inputs import from_chatbot, to_chatbot


def shown(text: str) -> str:
    return to_chatbot([{"role": "user", "content": text}])[0]["content"]


def read_back(content: str) -> str:
    return from_chatbot([{"role": "user", "content": content}])[0]["content"]


# Pieces of Markdown (and of HTML) that random messages are made of: code spans and fences, what may cut them or
# hide them from marked (links, emphasis, strikethrough, bare addresses, tables, lists, link definitions, $$, mermaid),
# what must never become HTML or an image, entities typed as text, and line breaks of every kind.
PIECES = ["`", "`", "``", "```", "~~~", "~", "~~", "*", "**", "_", "__", "[", "]", "](", "(", ")", "[r]: /u", "\\",
          "|", "---", "- ", "1. ", "> ", "# ", "$$", "!", "![", "![x](http://h/i.png)", "http://h/", "www.h",
          'src="/file', "mermaid", '"', ":", "=", "<b>", "</b>", "<i>", "<img src=http://h/i.png>", "<", ">", "&",
          "&&", "&lt;", "&amp;", "&#91;", " ", " ", "  ", "    ", "\t", "\n", "\n", "\n", "\n\n", "\r\n", "\r", "a",
          "b", "xyz", "x_y", "0"]


def random_text(rng: random.Random, most: int = 30) -> str:
    return "".join(rng.choice(PIECES) if rng.random() < 0.8 else chr(rng.randrange(32, 127))
                   for _ in range(rng.randrange(1, most)))


# ---- what the model reads ------------------------------------------------------------------------------------------
def test_what_the_model_reads_is_what_was_typed() -> None:
    """from_chatbot undoes to_chatbot exactly, for any conversation: code and text, entities typed as text."""
    rng = random.Random(20240614)
    for _ in range(4000):
        messages = [{"role": role, "content": random_text(rng)}
                    for role in ("system", "user", "assistant", "user")[rng.randrange(2):rng.randrange(2, 5)]]
        assert from_chatbot(to_chatbot(messages)) == messages


@pytest.mark.parametrize("text", ["`&lt;` &lt; `a &amp;&amp; b` &amp;", "```\n&lt;b&gt; &#91;\n```\n&lt;b&gt;",
                                  "``&lt;`` !&#91;x](u) ``!&#91;``"])
def test_entities_typed_in_code_or_outside_it_read_back_as_typed(text: str) -> None:
    assert read_back(shown(text)) == text


def test_a_history_reads_code_as_shown_and_text_unescaped() -> None:
    """A history as the Chatbot holds it (from the page, or from an API call): code is what it shows, as it is; text
    outside code is unescaped."""
    assert read_back("`a &lt; b` &lt; &amp; !&#91;x](u)\n```\n&amp;&amp;\n```") == \
        "`a &lt; b` < & ![x](u)\n```\n&amp;&amp;\n```"


# ---- what the Chatbot shows ----------------------------------------------------------------------------------------
SENT = {  # typed -> sent to the Chatbot
    "spans": ("`<b>x</b>` <b>x</b> `a && ![x](http://h/i.png)` && ![x](http://h/i.png)",
              "`<b>x</b>` &lt;b&gt;x&lt;/b&gt; `a && ![x](http://h/i.png)` &amp;&amp; !&#91;x](http://h/i.png)"),
    "a span of two backticks": ("``a ` <b> && ![x](http://h/i.png)`` <b>",
                                "``a ` <b> && ![x](http://h/i.png)`` &lt;b&gt;"),
    "spans after bold and a snake_case word": ("**Note:** snake_case `x < 3 && y` is `my_var < 4`",
                                               "**Note:** snake_case `x < 3 && y` is `my_var < 4`"),
    "a fence": ("```py\nif a < b && c:\n    ![x](http://h/i.png)\n```\n<b>x</b> &&",
                "```py\nif a < b && c:\n    ![x](http://h/i.png)\n```\n&lt;b&gt;x&lt;/b&gt; &amp;&amp;"),
    "a fence of tildes, its info escaped": ("~~~ <b>\n<b>x</b> && y\n~~~\n<b>",
                                            "~~~ &lt;b&gt;\n<b>x</b> && y\n~~~\n&lt;b&gt;"),
    "an indented fence, closed by a longer run": ("  ```\n<b> && ![x](http://h/i.png)\n  ````\n<b>",
                                                  "  ```\n<b> && ![x](http://h/i.png)\n  ````\n&lt;b&gt;"),
    "a fence with no end runs to the end": ("Unclosed:\r\n```\r\n<b> &&", "Unclosed:\r\n```\r\n<b> &&"),
    "a run with no closing run is text": ("`<b>` `` <b>", "`<b>` `` &lt;b&gt;"),
}


@pytest.mark.parametrize("typed, sent", SENT.values(), ids=SENT.keys())
def test_code_is_sent_as_typed_and_the_rest_escaped(typed: str, sent: str) -> None:
    assert shown(typed) == sent
    assert read_back(sent) == typed


# Where marked would not read code as CommonMark does, or as the scanner could tell, the text stays escaped: were it
# sent as typed, its <b> would be HTML. (The browser test below renders each of these with Gradio's own marked.)
NOT_CODE = {
    "an escaped backtick": "\\`<b>x</b>`",
    "a link's address": "[a](`)<b>x</b>`",
    "a link's title": '[a](u "`")<b>x</b>`',
    "a reference link": "[a][`]<b>x</b>`",
    "an emphasis that ends in the span": "*a ``b* <b>x</b>``",
    "an emphasis of '_' that ends in the span": "_a ``b_ <b>x</b>``",
    "a strikethrough that ends in the span": "~a `b~ <b>x</b>`",
    "a tilde before the span": "~`<b>x</b>`",
    "a bare address": "see http://h/`<b>x</b>`",
    "a www address": "www.h`<b>x</b>`",
    "the address Gradio writes before src=\"/file": 'src="/file`<b>x</b>`',
    "a table cell": "| a | b |\n|---|---|\n| `x | <b>y</b>` | z |",
    "a span across lines": "a `b\nc` <b>x</b> `d`",
    "a span across lines, ended by \\r": "a `b\rc` <b>x</b> `d`",
    "$$ taken out first": "$$`$$<b>x</b>`",
    "a fence's line in $$...$$": "$$\n```\n$$\n<b>x</b>\n```",
    "a lone $$ in the span": "| a |\n|---|\nb `c $$ <b>x</b>`",
    "a mermaid block": "```mermaid\n<b>x</b>\n```",
    "a mermaid block after text": "a```mermaid\n`<b>x</b>`\n```",
    "a fence marked ends at ```~": "```\nx\n```~\n<b>x</b>\n```",
    "a fence that ends with its list item": "- a\n  ```\n<b>x</b>\n  ```",
    "a list item's closing fence": "- ```\n  x\n  ```\n<b>x</b>",
    "a list item's text across a blank line": "- a `x\n\n      z` <b>x</b>`",
    "a link definition's title": '[r]: /u "t\n```\n"\n<b>x</b>\n```',
}


@pytest.mark.parametrize("text", NOT_CODE.values(), ids=NOT_CODE.keys())
def test_what_marked_may_not_read_as_code_stays_escaped(text: str) -> None:
    sent = shown(text)
    assert "<b>" not in sent, sent
    assert read_back(sent) == text


# ---- in the browser: Gradio's own renderer, and the chat ------------------------------------------------------------
ASSETS = Path(gradio.__file__).parent / "templates" / "frontend" / "assets"
# Loads Gradio's markdown module under another address, so that it is a new instance whose marked can be exported.
PROBE = "?probe"
# Renders each text as the Chatbot does: Gradio's address before src="/file (chatbot's Index), $$...$$ out, marked,
# $$...$$ back escaped (markdown-code's Markdown component); returns the elements made of text and the code shown.
RENDER = """async ({url, texts}) => {
  const {__create_marked} = await import(url);
  const md = __create_marked({header_links: false, line_breaks: true,
                              latex_delimiters: [{left: "$$", right: "$$", display: true}]});
  const escape = s => s.replace(/[<>"']|&(?!(#\\d{1,7}|#[Xx][a-fA-F0-9]{1,6}|\\w+);)/g,
                                c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})[c]);
  const out = [];
  for (const text of texts) {
    const latex = [];
    const src = text.replace('src="/file', `src="${location.origin}/file`).replace(
      /\\$\\$([\\s\\S]+?)\\$\\$/g, s => (latex.push(s), `%%%LATEX_BLOCK_${latex.length - 1}%%%`));
    const tokens = md.lexer(src);
    await Promise.all(md.walkTokens(tokens, md.defaults.walkTokens));
    const template = document.createElement("template");
    template.innerHTML = md.parser(tokens).replace(/%%%LATEX_BLOCK_(\\d+)%%%/g, (s, i) => escape(latex[+i]));
    out.push({made: [...template.content.querySelectorAll("b, i, img, script")].map(e => e.outerHTML),
              code: [...template.content.querySelectorAll("code")].map(e => e.textContent)});
  }
  return out;
}"""


@pytest.fixture
def render(page, live_app):
    """texts -> what Gradio's own Markdown renderer makes of each (see RENDER), in the app's page."""
    [module] = [p.name for p in ASSETS.glob("markdown-code-*.js")]
    create = re.compile(r"function (\w+)\(\{header_links:")

    def export_create(route) -> None:
        response = route.fetch()
        body = response.text()
        route.fulfill(response=response, body=f"{body}\nexport{{{create.search(body).group(1)} as __create_marked}};")

    page.route(f"**/{module}{PROBE}", export_create)
    return lambda texts: page.evaluate(RENDER, {"url": f"{live_app.url}assets/{module}{PROBE}", "texts": texts})


def test_gradios_renderer_shows_code_as_typed_and_makes_no_html_of_text(render) -> None:
    """The claim behind the escaping, checked on the renderer itself: it escapes code, so code sent as typed shows as
    typed; what was escaped makes no element, wherever marked draws the line between code and text."""
    typical = {
        "Use `a < b && c` here, not <b>bold</b>.": ["a < b && c"],
        "**Answer:**\n\n```python\nif x < 3 and y & 1:\n    print('<b>&amp;</b>')\n```\n\nand `&lt;` & <i>i</i>":
            ["if x < 3 and y & 1:\n    print('<b>&amp;</b>')\n", "&lt;"],
        "- item `![x](http://h/i.png)`\n- `<img src=http://h/i.png>` ![y](http://h/i.png)":
            ["![x](http://h/i.png)", "<img src=http://h/i.png>"],
        "~~~\n<script>x = 1 && 2</script>\n~~~": ["<script>x = 1 && 2</script>\n"],
    }
    for result, (text, code) in zip(render([shown(text) for text in typical]), typical.items()):
        assert result == {"made": [], "code": code}, text

    rng = random.Random(7)
    texts = list(NOT_CODE.values()) + [random_text(rng, 40) for _ in range(3000)]
    for text, result in zip(texts, render([shown(text) for text in texts])):
        assert result["made"] == [], (text, shown(text))


def test_chat_shows_code_as_typed_and_html_as_text(page, live_app) -> None:
    """Sent through the chat: the code span shows as typed in a <code>, the HTML outside it as the text typed (no <b>
    made of it), and no image is fetched from another host, in code or out of it."""
    from playwright.sync_api import expect

    from demo.i18n import t

    app_host = urlsplit(live_app.url).netloc
    elsewhere: list[str] = []
    page.on("request", lambda request: elsewhere.append(request.url)
            if urlsplit(request.url).netloc not in (app_host, "") else None)
    page.fill("#chat-seed textarea", "0")
    page.fill("#chat-message textarea", "Is `a < b && c` true? <b>bold</b> `![x](http://img.example.com/a.png)` "
                                        "![y](http://img.example.com/b.png)")
    page.click("#chat-send")
    user = page.locator("#chatbot .user-row").first
    expect(user.locator("code").first).to_have_text("a < b && c")
    expect(page.locator("#chat-stats")).to_contain_text(t("ui.stats_stop"), timeout=60_000)
    page.wait_for_function("!document.querySelector('.pending, .generating')")
    assert user.locator("code").all_inner_texts() == ["a < b && c", "![x](http://img.example.com/a.png)"]
    assert "<b>bold</b>" in user.inner_text()
    assert user.locator("b, strong, img").count() == 0
    assert page.locator("#chatbot img").count() == 0
    assert elsewhere == [], elsewhere
