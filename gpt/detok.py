"""Incremental detokenization for streaming: text comes out as soon as it is complete, never half a character.

A byte-level BPE token is a run of bytes, not of characters: a Chinese character (3 UTF-8 bytes) or an emoji (4) is
often split across two or three tokens. Decoding each token on its own would print U+FFFD garbage mid-stream.
StreamDecoder feeds token bytes to Python's incremental UTF-8 decoder, which holds back a trailing incomplete
sequence until the rest arrives. Invalid bytes become U+FFFD exactly as in `Tokenizer.decode` (errors="replace"),
so the concatenation of every push() and the final flush() equals tokenizer.decode(all ids).
"""
from __future__ import annotations

import codecs

from gpt.tokenizer import Tokenizer


class StreamDecoder:
    """push(token_id) -> newly completed text; flush() -> whatever is still held back (at the end of a stream)."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        try:
            raw = self.tokenizer.token_bytes(token_id)
        except KeyError:
            raise ValueError(f"token id {token_id} is not in the tokenizer's vocabulary "
                             f"({self.tokenizer.vocab_size} ids)") from None
        return self._decoder.decode(raw, final=False)

    def flush(self) -> str:
        """End of stream: an incomplete trailing character is emitted as U+FFFD (as a full decode would)."""
        text = self._decoder.decode(b"", final=True)
        self._decoder.reset()
        return text

    @property
    def pending(self) -> bytes:
        """The bytes held back, waiting for the rest of a character."""
        return self._decoder.getstate()[0]


__all__ = ["StreamDecoder"]
