"""The inference engine: prefill the prompt once into a KV cache, then decode one token at a time, streaming text.

Three generation loops exist in gpt/, each a different algorithm:
- `GPT.generate` (gpt/nanochat/base.py): the teaching loop. No cache: it re-reads the whole prefix for every token, and
  samples with torch.multinomial, exactly as the tutorial writes it.
- `Engine.stream` below, the plain cached loop: one row, each new token costs one forward over a single position,
  because the keys/values of every earlier position are already in the cache.
- `BatchServer` (gpt/serving.py): many chats in one static batch, one position per row, CUDA graphs on a GPU.
The last two sample the same way (gpt/sampling.py: temperature, top-k, top-p, a seed per row) and end a reply by the
same rules (gpt/stream.py), so a chat's tokens do not depend on which of them decodes it.
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch

from gpt.kv_cache import KVCache
from gpt.nanochat import GPT
from gpt.sampling import candidate_width, sample, sampling_tensors
from gpt.serving import BatchServer
from gpt.stream import Reply, SamplingParams, StreamEvent, sampled_vocab, stop_token_ids
from gpt.tokenizer import Tokenizer

__all__ = ["Engine", "SamplingParams", "StreamEvent"]


class Engine:
    """Streams replies of `model` with a KV cache.

    On a GPU (or with batched=True) every stream goes through gpt.serving.BatchServer: concurrent chats share one
    decode loop (CUDA graphs on a GPU); `run` is where that loop's torch work runs (the app on a CPU passes
    TorchThread.run). Otherwise each stream runs the plain loop below in the caller's thread.
    """

    def __init__(self, model: GPT, tokenizer: Tokenizer, batched: bool | None = None, max_batch: int = 32,
                 compile: bool = False, run: Callable | None = None, fused: bool = False):
        model.check_fused()  # forward trusts a fused q/k/v from here on
        self.model = model
        self.tokenizer = tokenizer
        self.n_sampled = sampled_vocab(model.config.vocab_size, tokenizer)
        self.stop_ids = stop_token_ids(tokenizer)
        self.server = None
        if batched if batched is not None else model.get_device().type == "cuda":
            self.server = BatchServer(model, tokenizer, max_batch=max_batch, compile=compile, run=run,
                                      fused=fused)

    @torch.inference_mode()
    def stream(self, prompt_ids: list[int], params: SamplingParams | None = None,
               should_stop: Callable[[], bool] | None = None) -> Iterator[StreamEvent]:
        """Yield one StreamEvent per generated token, then a final one with done=True and the stop reason."""
        if self.server is not None:
            yield from self.server.stream(prompt_ids, params, should_stop)
            return
        params = params or SamplingParams()
        reply = Reply(self.tokenizer, prompt_ids, params, self.model.config.sequence_len, self.stop_ids)
        device = self.model.get_device()
        temperature, top_k, top_p = sampling_tensors([params], device)
        seed = torch.tensor([reply.seed], dtype=torch.long, device=device)
        width = candidate_width([params])
        cache = KVCache.for_model(self.model, 1)
        ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)  # the prefill input: the whole prompt
        while True:
            reason = reply.limit_reached()
            if reason is None and should_stop is not None and should_stop():
                reason = "stopped"
            if reason is not None:
                break
            logits = self.model(ids, kv_cache=cache)[:, -1, : self.n_sampled]
            counter = torch.tensor([reply.length], dtype=torch.long, device=device)  # the new token's position
            event = reply.take(int(sample(logits, temperature, top_k, top_p, seed, counter, width)[0]))
            if event is None:
                reason = "assistant_end"
                break
            yield event
            ids = torch.tensor([[event.token]], dtype=torch.long, device=device)
        yield reply.end(reason)

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
