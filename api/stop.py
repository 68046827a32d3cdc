"""OpenAI's `stop` over streamed text: a reply ends before the first stop string it writes, which is never sent.

The stop strings are text, and a token's text may hold part of one (or several), so text that could be the start of
a stop string is held back until the next token shows whether it is one.
"""
from __future__ import annotations


class StopStrings:
    """`push(text)` -> (the text that may be sent now, whether a stop string was found: the reply ends there);
    `flush()` -> the text still held back, at the end of a reply that found none."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.held = ""

    def push(self, text: str) -> tuple[str, bool]:
        text = self.held + text
        found = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if found:
            self.held = ""
            return text[: min(found)], True
        keep = self._open_start(text)
        self.held = text[len(text) - keep:]
        return text[: len(text) - keep], False

    def flush(self) -> str:
        text, self.held = self.held, ""
        return text

    def _open_start(self, text: str) -> int:
        """The length of the longest end of `text` that begins some stop string (and so may become one)."""
        longest = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:k]):
                    longest = k
                    break
        return longest
