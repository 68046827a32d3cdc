"""The inference engine: prefill the prompt once into a KV cache, then decode one token at a time, streaming text.

`GPT.generate` is the teaching loop (it re-reads the whole prefix for every token); this is what serves chats.
Each new token costs one forward over a single position, because the keys/values of every earlier position are
already in the cache. Sampling (temperature, top-k, top-p, a seed) is in gpt/sampling.py.

Stop reasons: "assistant_end" (the model wrote <|assistant_end|> or <|bos|>; that token is not emitted),
"max_tokens", "context_full" (prompt + reply reached model.config.sequence_len; we stop instead of overflowing the
cache) and "stopped" (the caller's should_stop() said so, checked before every forward).
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from gpt.detok import StreamDecoder
from gpt.kv_cache import KVCache
from gpt.model import GPT
from gpt.sampling import candidate_width, sample
from gpt.tokenizer import Tokenizer

STOP_TOKENS = ("<|assistant_end|>", "<|bos|>")


@dataclass
class SamplingParams:
    temperature: float = 0.8  # 0 = greedy
    top_k: int | None = 50  # None or 0 = off
    top_p: float = 1.0  # 1.0 = off
    seed: int | None = None  # None: the engine picks one and reports it in every StreamEvent
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
    seed: int  # the seed actually used (the engine's pick when SamplingParams.seed was None)


def pick_seed(seed: int | None) -> int:
    return secrets.randbits(31) if seed is None else int(seed)


def stop_token_ids(tokenizer: Tokenizer) -> set[int]:
    return {tokenizer.special_id(name) for name in STOP_TOKENS}


def check_prompt(prompt_ids: list[int], limit: int) -> None:
    """A clear error for prompts the model cannot take (a prompt that exactly fills the context is allowed: the
    reply then stops at once with "context_full")."""
    if len(prompt_ids) == 0:
        raise ValueError("the prompt is empty: give at least one token (chat prompts start with <|bos|>)")
    if len(prompt_ids) > limit:
        raise ValueError(f"the prompt has {len(prompt_ids)} tokens, more than the model's context of {limit}")


def sampling_tensors(params: list[SamplingParams], device: torch.device) -> tuple[torch.Tensor, ...]:
    """Per-row (temperature, top_k, top_p) tensors [B] for gpt.sampling.sample."""
    temperature = torch.tensor([p.temperature for p in params], dtype=torch.float32, device=device)
    top_k = torch.tensor([p.top_k or 0 for p in params], dtype=torch.long, device=device)
    top_p = torch.tensor([p.top_p for p in params], dtype=torch.float32, device=device)
    return temperature, top_k, top_p


class Engine:
    """Streams replies of `model` with a KV cache.

    On a GPU (or with batched=True) every stream goes through gpt.serving.BatchServer: concurrent chats share one
    decode loop (CUDA graphs on a GPU); `run` is where that loop's torch work runs (the app on a CPU passes
    TorchThread.run). Otherwise each stream runs the plain loop below in the caller's thread.
    """

    def __init__(self, model: GPT, tokenizer: Tokenizer, batched: bool | None = None, max_batch: int = 32,
                 compile: bool = False, run: Callable | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.stop_ids = stop_token_ids(tokenizer)
        # A model's vocab may be padded past the tokenizer's (nanochat rounds it up): never sample an id it lacks.
        self.n_sampled = min(model.config.vocab_size, tokenizer.vocab_size)
        self.server = None
        if batched if batched is not None else model.get_device().type == "cuda":
            from gpt.serving import BatchServer  # imports this module: import late
            self.server = BatchServer(model, tokenizer, max_batch=max_batch, compile=compile, run=run)

    def new_cache(self, batch_size: int) -> KVCache:
        c = self.model.config
        w = self.model.transformer.wte.weight
        return KVCache(batch_size, c.n_kv_head, c.sequence_len, c.n_embd // c.n_head, c.n_layer, w.device, w.dtype)

    @torch.inference_mode()
    def stream(self, prompt_ids: list[int], params: SamplingParams | None = None,
               should_stop: Callable[[], bool] | None = None) -> Iterator[StreamEvent]:
        """Yield one StreamEvent per generated token, then a final one with done=True and the stop reason."""
        if self.server is not None:
            yield from self.server.stream(prompt_ids, params, should_stop)
            return
        params = params or SamplingParams()
        params.validate()
        check_prompt(prompt_ids, self.model.config.sequence_len)
        seed = pick_seed(params.seed)
        device = self.model.get_device()
        temperature, top_k, top_p = sampling_tensors([params], device)
        seed_t = torch.tensor([seed], dtype=torch.long, device=device)
        width = candidate_width([params])
        decoder = StreamDecoder(self.tokenizer)
        limit = self.model.config.sequence_len
        cache = self.new_cache(1)
        ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)  # the prefill input: the whole prompt
        length = len(prompt_ids)  # tokens in the sequence so far
        n = 0
        while True:
            if n >= params.max_tokens:
                reason = "max_tokens"
                break
            if length >= limit:
                reason = "context_full"
                break
            if should_stop is not None and should_stop():
                reason = "stopped"
                break
            logits = self.model(ids, kv_cache=cache)[:, -1, : self.n_sampled]
            counter = torch.tensor([length], dtype=torch.long, device=device)
            token = int(sample(logits, temperature, top_k, top_p, seed_t, counter, width)[0])
            if token in self.stop_ids:
                reason = "assistant_end"
                break
            n += 1
            length += 1
            yield StreamEvent(token, decoder.push(token), False, None, seed)
            ids = torch.tensor([[token]], dtype=torch.long, device=device)
        yield StreamEvent(None, decoder.flush(), True, reason, seed)

    def generate_batch(self, prompts: list[list[int]], params_list: list[SamplingParams] | SamplingParams
                       ) -> list[list[int]]:
        """Generated token ids (stop token excluded) for each prompt; each row is what it would be alone."""
        if isinstance(params_list, SamplingParams):
            params_list = [params_list] * len(prompts)
        if len(params_list) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(params_list)} SamplingParams")
        if self.server is not None:  # submit every row first, so that they decode together
            streams = [self.server.stream(p, sp) for p, sp in zip(prompts, params_list)]
        else:  # one after another
            streams = (self.stream(p, sp) for p, sp in zip(prompts, params_list))
        return [[e.token for e in s if not e.done] for s in streams]
