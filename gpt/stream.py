"""What a streamed reply is, independent of who decodes it: sampling settings, the events a reader gets, and the rules
that end a reply. The plain loop (gpt/engine.py) and the batched server (gpt/serving.py) both follow these rules
through `Reply`, so a reply ends the same way whichever decodes it.

Stop reasons: "assistant_end" (the model wrote <|assistant_end|> or <|bos|>; that token is not emitted),
"max_tokens", "context_full" (prompt + reply reached the model's context: we stop instead of overflowing the cache)
and "stopped" (the caller's should_stop() said so; no token is handed out after it does).
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass

from gpt.detok import StreamDecoder
from gpt.tokenizer import Tokenizer

STOP_TOKENS = ("<|assistant_end|>", "<|bos|>")


@dataclass
class SamplingParams:
    temperature: float = 0.8  # 0 = greedy
    top_k: int | None = 50  # None or 0 = off
    top_p: float = 1.0  # 1.0 = off
    seed: int | None = None  # None: a seed is picked and reported in every StreamEvent
    max_tokens: int = 256

    def validate(self) -> None:
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 or None, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {self.max_tokens}")


@dataclass
class StreamEvent:
    token: int | None  # the new token id; None on the final event
    text: str  # text completed by this token (may be "" while a multi-byte character is incomplete)
    done: bool  # True on the last event, which carries the stop reason and any held-back text
    stop_reason: str | None  # "assistant_end" | "max_tokens" | "context_full" | "stopped" when done
    seed: int  # the seed actually used (the pick when SamplingParams.seed was None)
    cached: int = 0  # prompt tokens that were not computed: the server found their keys/values in its cache


def pick_seed(seed: int | None) -> int:
    return secrets.randbits(31) if seed is None else int(seed)


def stop_token_ids(tokenizer: Tokenizer) -> set[int]:
    return {tokenizer.special_id(name) for name in STOP_TOKENS}


def sampled_vocab(vocab_size: int, tokenizer: Tokenizer) -> int:
    """How many leading logits may be sampled: a model's vocab may be padded past the tokenizer's (nanochat rounds it
    up), and an id the tokenizer lacks must never be drawn."""
    return min(vocab_size, tokenizer.vocab_size)


def check_prompt(prompt_ids: list[int], limit: int) -> None:
    """A clear error for prompts the model cannot take (a prompt that exactly fills the context is allowed: the
    reply then stops at once with "context_full")."""
    if len(prompt_ids) == 0:
        raise ValueError("the prompt is empty: give at least one token (chat prompts start with <|bos|>)")
    if len(prompt_ids) > limit:
        raise ValueError(f"the prompt has {len(prompt_ids)} tokens, more than the model's context of {limit}")


class Reply:
    """One reply's bookkeeping: its seed, the tokens handed out, the streaming text and the stop rules (stop_ids:
    the tokens that end a reply, normally stop_token_ids(tokenizer)).

    Raises ValueError at construction for bad settings or a prompt the model cannot take."""

    def __init__(self, tokenizer: Tokenizer, prompt_ids: list[int], params: SamplingParams, limit: int,
                 stop_ids: set[int]):
        params.validate()
        check_prompt(prompt_ids, limit)
        self.params, self.limit, self.stop_ids = params, limit, stop_ids
        self.seed = pick_seed(params.seed)
        self.detok = StreamDecoder(tokenizer)
        self.length = len(prompt_ids)  # tokens in the sequence so far
        self.n = 0  # tokens handed out
        self.cached = 0  # prompt tokens whose keys/values the decoder already had (set by who decodes it)

    def limit_reached(self) -> str | None:
        """The reason this reply must end before its next token ("max_tokens", "context_full"), or None."""
        if self.n >= self.params.max_tokens:
            return "max_tokens"
        if self.length >= self.limit:
            return "context_full"
        return None

    def take(self, token: int) -> StreamEvent | None:
        """The event for a newly sampled token, or None when it is a stop token (the reply ends: "assistant_end")."""
        if token in self.stop_ids:
            return None
        self.n += 1
        self.length += 1
        return StreamEvent(token, self.detok.push(token), False, None, self.seed, self.cached)

    def end(self, reason: str) -> StreamEvent:
        """The final event: the stop reason and any text still held back."""
        return StreamEvent(None, self.detok.flush(), True, reason, self.seed, self.cached)
