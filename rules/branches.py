"""A chat reply and its branches: what the Chat tab keeps to answer "what if it had said something else?".

The reply as first written is branch 1. A branch departs from another at one token: it keeps the tokens before it,
takes another candidate there, and the model goes on from it with the reply's own sampling settings and seed (gpt's
sampling noise depends on the seed and the position only, so a branch is exactly what a reply to the longer prompt
would be: reproducible, and cheap, since the server keeps the shared prefix's keys and values). The user switches
between branches, continues one, drops one; `html` shows them side by side, each from where it departs.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field, replace

from explain.generate import generated_pieces
from gpt.stream import SamplingParams
from rules.inputs import InputError
from text import t

BRANCH_LIMIT = 8  # branches kept per reply: each is a column on screen and a reply's worth of decoding


@dataclass
class Branch:
    tokens: list[int]  # the reply's token ids (a stop token not included)
    parent: int | None = None  # the branch it departs from (None: the reply as first written)
    at: int = 0  # how many of the parent's tokens it keeps: its token `at` is the first that differs
    stop: str | None = None  # why it ended (gpt.stream's stop reasons)


@dataclass
class Branches:
    prompt: list[int]  # the ids the reply continues (the chat rendered for completion)
    params: SamplingParams  # the reply's settings, its seed the one it was drawn with
    branches: list[Branch] = field(default_factory=list)
    current: int = 0  # the branch the chat shows
    message: str = ""  # the one user message the reply answers, when the chat was one message ("": more, no link)

    @property
    def shown(self) -> Branch:
        return self.branches[self.current]

    def check_token(self, at) -> int:
        """`at` as the index of one of the shown branch's tokens, or InputError."""
        if not isinstance(at, int) or not 0 <= at < len(self.shown.tokens):
            raise InputError("ui.branch_no_token", n=len(self.shown.tokens))
        return at

    def context(self, at: int) -> list[int]:
        """The ids the shown branch's token `at` was drawn after."""
        return self.prompt + self.shown.tokens[:at]

    def branch_prompt(self, at: int, token: int, vocab: int) -> list[int]:
        """The prompt a new branch continues: the shown branch up to `at`, then `token` instead of the one there.
        InputError for a token outside the vocabulary, the one already there, or one branch too many."""
        at = self.check_token(at)
        if not isinstance(token, int) or not 0 <= token < vocab:
            raise InputError("ui.branch_bad_choice")
        if token == self.shown.tokens[at]:
            raise InputError("ui.branch_same")
        if len(self.branches) >= BRANCH_LIMIT:
            raise InputError("ui.branch_limit", n=BRANCH_LIMIT)
        return self.context(at) + [token]

    def settings(self, taken: int) -> SamplingParams:
        """The reply's own settings for what comes after `taken` of its tokens: the same seed, the rest of its room."""
        return replace(self.params, max_tokens=max(0, self.params.max_tokens - taken))

    def add(self, at: int, tokens: list[int], stop: str | None) -> None:
        """A new branch from the shown one's token `at` (tokens: the new token, then what the model went on with),
        now shown."""
        self.branches.append(Branch(self.shown.tokens[:at] + tokens, self.current, at, stop))
        self.current = len(self.branches) - 1

    def extend(self, tokens: list[int], stop: str | None) -> None:
        """The shown branch continued."""
        self.shown.tokens += tokens
        self.shown.stop = stop

    def drop(self) -> None:
        """The shown branch goes (the first one stays: it is the reply as written); its parent is shown. Branches
        that departed from it now depart from its parent at the same token, which they share with it."""
        if self.current == 0:
            raise InputError("ui.branch_drop_first")
        gone = self.branches.pop(self.current)
        for b in self.branches:
            if b.parent == self.current:
                b.parent, b.at = gone.parent, min(b.at, gone.at)
            if b.parent is not None and b.parent > self.current:
                b.parent -= 1
        self.current = gone.parent

    def select(self, index) -> None:
        if not isinstance(index, int) or not 0 <= index < len(self.branches):
            raise InputError("ui.branch_none", n=len(self.branches))
        self.current = index

    def path(self) -> list[tuple[int, int]]:
        """How the shown branch is reached from the reply as written: (at, token) for each branch on the way, first
        to last (each departs from the one before at its token `at`, which it makes `token`)."""
        steps, i = [], self.current
        while self.branches[i].parent is not None:
            b = self.branches[i]
            steps.append((b.at, b.tokens[b.at]))
            i = b.parent
        return steps[::-1]

    def link(self) -> str:
        """The shown branch as a link's value, "SEED|AT:TOKEN,...|MESSAGE": the reply's seed, the path to the branch,
        the message it answers ("" when the chat was more than one message: a link carries one message)."""
        if not self.message:
            return ""
        path = ",".join(f"{at}:{token}" for at, token in self.path())
        return f"{self.params.seed}|{path}|{self.message}"

    def label(self, index: int, lang: str) -> str:
        b = self.branches[index]
        if b.parent is None:
            return t("ui.branch_first", lang)
        return t("ui.branch_label", lang, n=index + 1, parent=b.parent + 1, at=b.at + 1)

    def html(self, tokenizer, lang: str) -> str:
        """Every branch side by side: its text, the part it shares with its parent plain, its first differing token
        marked, the shown branch outlined. Everything escaped (the model writes what it likes)."""
        cards = []
        for i, b in enumerate(self.branches):
            pieces, pending = generated_pieces(tokenizer, self.prompt, b.tokens)
            at = 0 if b.parent is None else b.at
            same, first, rest = "".join(pieces[:at]), "".join(pieces[at:at + 1]), "".join(pieces[at + 1:]) + pending
            marked = f"<mark>{html.escape(first) or '·'}</mark>" if b.parent is not None else html.escape(first)
            border = "2px solid #1a73e8" if i == self.current else "1px solid #dadce0"
            stop = t(f"ui.stop_{b.stop}", lang) if b.stop else ""
            cards.append(
                f'<div class="branch-card" style="flex:1 1 0;min-width:200px;border:{border};border-radius:8px;'
                f'padding:8px;white-space:pre-wrap;overflow-wrap:anywhere">'
                f'<div style="font-weight:600;margin-bottom:4px">{html.escape(self.label(i, lang))}</div>'
                f'<span style="color:#5f6368">{html.escape(same)}</span>{marked}{html.escape(rest)}'
                f'<div style="color:#5f6368;font-size:0.85em;margin-top:4px">{html.escape(stop)}</div></div>')
        return f'<div id="branch-cards" style="display:flex;gap:8px;overflow-x:auto">{"".join(cards)}</div>'


def parse_link(text: str) -> tuple[int, list[tuple[int, int]], str]:
    """A link's branch value (Branches.link) -> (seed, path, message); InputError "ui.bad_branch_link" when it is not
    one (links are typed and cut by hand)."""
    parts = (text or "").split("|", 2)
    try:
        seed = int(parts[0])
        path = [tuple(int(x) for x in step.split(":")) for step in parts[1].split(",") if step.strip()]
    except (ValueError, IndexError):
        raise InputError("ui.bad_branch_link") from None
    if seed < 0 or len(parts) < 3 or not parts[2].strip() or any(len(step) != 2 for step in path):
        raise InputError("ui.bad_branch_link")
    return seed, path, parts[2]
