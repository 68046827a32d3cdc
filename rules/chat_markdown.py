"""Chat text as Gradio's Chatbot shows it: `shown(text)` is what to send for a message typed as `text`, and
`typed(shown(text)) == text`.

Gradio 6.31's Chatbot renders a message's Markdown in the browser: it takes $$...$$ out (for KaTeX, with this app's
latex_delimiters, the default), turns the rest into HTML with the marked 12 bundled in its frontend (GFM, line
breaks), and cleans that with a sanitizer that keeps <b> and <img>. So outside code, '<', '>' and '&' are sent as
entities (no HTML) and '![' as '!&#91;' (an entity is never Markdown syntax: no image, whose address the browser
would fetch from whatever site the text names). Inside code spans and fenced blocks marked escapes the text itself
and shows an entity as typed ("&lt;"), so code is sent as typed -- but only where marked surely reads code too:
text sent as typed where marked reads no code would be HTML. `_code` finds that code: CommonMark's code spans and
fences, less whatever marked may read otherwise (tests/test_chat_text.py renders with Gradio's own marked).
"""
from __future__ import annotations

import functools
import html
import re
from dataclasses import dataclass, field

_BREAK = re.compile(r"\r\n|\r|\n")  # marked reads all three as a line break
_LATEX = re.compile(r"\$\$[\s\S]+?\$\$")  # Gradio takes these out before marked reads the text
_FENCE = re.compile(r"( {0,3})(`{3,}(?!.*`)|~{3,})")  # an opening fence (a backtick one has no backtick after it)
_LIST_ITEM = re.compile(r" {0,3}(?:[*+-]|\d{1,9}[.)])(?:[ \t]|$)")
_TABLE_RULE = re.compile(r"[ \t|:]*-[ \t|:-]*")  # a line that may be the one under a table's header
_SYNTAX = re.compile(r"[\\`*_~\[(]")  # what a code span scan reads (each other character is only text)
_RUN = re.compile("`+")
_ADDRESSES = ("://", "www.", 'src="/file')  # marked links a bare address up to the next space (and the Chatbot puts
# the app's address before the first src="/file)


@dataclass
class _Paragraph:
    """A scan of one paragraph's code spans, line by line: which backtick runs marked surely pairs as CommonMark does.

    marked reads a span as CommonMark does, except that a construct begun before it may take its opening run (a link's
    address, a bare address, a '~' before it) or end inside it and cut it (an emphasis, a strikethrough, a link), and
    that a table cuts it at a '|', and Gradio at a '$$'. From the first span it may read otherwise, the rest of the
    paragraph is text: it may pair the backtick runs after it otherwise too."""
    tables: bool  # the message has a line that may be the one under a table's header
    lost: bool = False  # marked may pair backtick runs otherwise from here on
    closers: set[str] = field(default_factory=set)  # what ends a construct that may have begun (and cuts a span)

    def spans(self, line: str) -> list[tuple[int, int]]:
        """(start, end) of every code span of this line that marked surely reads as one."""
        found, i = [], 0
        while not self.lost and (at := _SYNTAX.search(line, i)):
            i = at.start()
            if line[i] == "\\":  # an escaped character is no syntax
                i += 2
            elif line[i] != "`":
                self._opens(line, i)
                i += 1
            else:
                run = _RUN.match(line, i).end() - i
                closing = next((m for m in _RUN.finditer(line, i + run) if m.end() - m.start() == run), None)
                if closing is None:  # no closing run on this line: marked may find one on the next
                    self.lost = True
                    break
                inside = line[i + run:closing.start()]
                word = line[max(line.rfind(" ", 0, i), line.rfind("\t", 0, i)) + 1:i].lower()
                self.lost = bool(self.closers & set(inside) or line[i - 1:i] == "~" or "$$" in inside
                                 or (self.tables and "|" in inside) or any(a in word for a in _ADDRESSES))
                if not self.lost:
                    found.append((i, closing.end()))
                i = closing.end()
        return found

    def _opens(self, line: str, i: int) -> None:
        """Note what may begin at line[i] and end later: an emphasis, a strikethrough, a link."""
        c, before = line[i], line[i - 1:i]
        if c == "*" and line[i + 1:i + 2] not in ("", " ", "\t"):  # (marked opens no emphasis with a '*' before
            self.closers.add(c)  # a space, nor with a run of '_' after a letter or digit)
        elif c == "_" and before != "_" and not (before.isascii() and before.isalnum()):
            self.closers.add(c)
        elif c == "~":
            self.closers.add(c)
        elif c == "[" and before != "!":  # ('![' is sent as '!&#91;')
            self.closers.add("]")
        elif c == "(" and before == "]":
            self.closers.add(")")


def _lines(text: str) -> list[tuple[int, str]]:
    """(start, line) for every line of text, without its line break."""
    starts = [0] + [m.end() for m in _BREAK.finditer(text)]
    ends = [m.start() for m in _BREAK.finditer(text)] + [len(text)]
    return [(start, text[start:end]) for start, end in zip(starts, ends)]


def _code(text: str) -> list[tuple[int, int]]:
    """(start, end) of the code in text that marked, as the Chatbot runs it, surely renders as code: code spans (a run
    of N backticks closed by the next run of exactly N on its line; one without is text) and the lines inside fenced
    blocks (``` or ~~~ at a line's start, up to 3 spaces in; closed by a line of that run followed by more backticks
    or tildes and spaces, as marked closes it; an unclosed one runs to the end). Indented code blocks are left out:
    escaping there only shows entities. Where marked may read what follows otherwise, the scan stops: an indented
    fence after a list item (it may be inside the item, and end with it), a fence with a '$$' on its line, a possible
    link reference definition (its title may hide lines), a mermaid block (Gradio puts its text into the page
    unescaped)."""
    if "```mermaid" in text.lower():
        return []
    view = _LATEX.sub(lambda m: "%" * len(m.group()), text)  # what marked reads, character for character
    lines = _lines(view)
    tables = any(_TABLE_RULE.fullmatch(line) for _, line in lines)
    last_colon = view.rfind("]:")
    code, fence, lists, blank, paragraph = [], None, False, False, _Paragraph(tables)
    for start, line in lines:
        if fence:
            if re.fullmatch(f" {{0,3}}{re.escape(fence)}[~`]* *", line):
                fence, paragraph = None, _Paragraph(tables)
            elif line:
                code.append((start, start + len(line)))
            continue
        if opening := _FENCE.match(line):
            if (opening.group(1) and lists) or "$$" in line:  # (Gradio's $$ extension cuts a paragraph at a '$$':
                break  # marked then reads the fence's line as the paragraph's, for want of its line break)
            fence, blank, paragraph = opening.group(2), False, _Paragraph(tables)
            continue
        if re.match(r" {0,3}\[", line) and start <= last_colon:
            break
        lists = lists or bool(_LIST_ITEM.match(line))
        if not line.strip(" "):
            blank = True
            continue
        if blank and re.match(r" {0,3}[^ \t]", line):  # a new paragraph (after a blank line, an indented one may
            paragraph = _Paragraph(tables)  # still go on a list item's text)
        blank = False
        code += [(start + i, start + j) for i, j in paragraph.spans(line)]
    return code


def _pieces(text: str) -> list[tuple[str, bool]]:
    """text cut into (piece, is code) pairs, in order."""
    pieces, at = [], 0
    for start, end in _code(text):
        pieces += [(text[at:start], False), (text[start:end], True)]
        at = end
    return [piece for piece in pieces + [(text[at:], False)] if piece[0]]


@functools.lru_cache(maxsize=128)  # a streaming reply shows the whole conversation again 20 times a second
def shown(text: str) -> str:
    """Chat text for the Chatbot's Markdown: code as typed; outside it, '<', '>' and '&' as entities, '![' as
    '!&#91;'."""
    return "".join(piece if code else html.escape(piece, quote=False).replace("![", "!&#91;")
                   for piece, code in _pieces(text))


def typed(sent: str) -> str:
    """What `shown` was given: `_code` reads nothing that escaping changes ('<', '>', '&', the '[' of '!['), so it
    finds the code where it was."""
    return "".join(piece if code else html.unescape(piece) for piece, code in _pieces(sent))
