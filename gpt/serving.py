"""Many chat sessions, one decode loop: the batched server behind Engine.stream (the app uses it on every device).

Each session owns one row of a StaticDecoder (gpt/fast.py) while it runs. A background thread loops:
1. admit waiting sessions into free rows: prefill the prompt, sample and stream the first token (a free row keeps the
   keys/values of the last session it ran: a prompt that begins with those tokens, a branch of a reply or the next
   turn of a chat, computes only the tokens after them);
2. drop sessions that were stopped (should_stop) or abandoned by their reader;
3. launch one decode step for the rows up to the highest busy one (a CUDA-graph replay per batch bucket) and copy
   the new tokens to pinned host memory;
4. while the GPU runs that step, hand out the tokens of the previous step: stream text, detect stop tokens,
   max_tokens and a full context, and free finished rows.
Step 4 overlapping step 3 hides the Python work behind the GPU. A row's extra step launched after its session ended
is discarded; rows never write past the cache (RowKVCache clamps idle rows). Each session has its own sampling
settings, seed and queue of StreamEvents; a session's tokens do not depend on who else is in the batch.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from gpt.fast import MIN_SPAN, StaticDecoder, width_bucket
from gpt.nanochat import GPT
from gpt.stream import Reply, SamplingParams, StreamEvent, sampled_vocab, stop_token_ids
from gpt.tokenizer import Tokenizer


STEPS_PER_RUN = 8  # loop iterations per call of the server's `run` (see BatchServer._steps)
# A row whose reply ended less than this ago is not given to a new prompt that shares nothing with it while another
# row is free: long enough to read a reply and branch it, or write the next turn, which then reuse its cache; short
# enough that the batch narrows again to the lowest rows (each row up to the highest busy one is computed every step).
KEEP_S = 300.0


@dataclass(frozen=True)
class _Kept:
    """What a row's cache holds at positions 0, 1, ...: the tokens of the last session that ran there (none while one
    runs: a row idle in a batch keeps stepping, but only at positions past these, see _finish), how many of them
    were that session's prompt, and when it ended (time.monotonic)."""
    tokens: list[int] = field(default_factory=list)
    prompt: int = 0
    ended: float = float("-inf")


class _Session:
    def __init__(self, prompt: list[int], reply: Reply, should_stop: Callable[[], bool] | None):
        self.prompt, self.reply, self.should_stop = prompt, reply, should_stop
        self.params = reply.params
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.row: int | None = None
        self.launched = 0  # decode steps launched for this session (device position = len(prompt) + launched)
        self.sampled: list[int] = []  # every token sampled for it, in order (a stop token included)
        self.done = False
        self.abandoned = False  # the reader went away

    def stop_requested(self) -> bool:
        return self.should_stop is not None and self.should_stop()

    def fed(self) -> list[int]:
        """The tokens whose keys/values this session wrote into its row, in position order: the prompt, then each
        sampled token that a launched decode step fed back (step k feeds the token sampled before it)."""
        return self.prompt + self.sampled[: self.launched]


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens a and b share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class BatchServer:
    """`stream()` has Engine.stream's contract; up to `max_batch` sessions decode together, others wait."""

    def __init__(self, model: GPT, tokenizer: Tokenizer, max_batch: int = 32, graphs: bool | None = None,
                 compile: bool = False, run: Callable | None = None, fused: bool = False):
        # `run(fn, *args)` executes the loop's torch work (on a CPU: TorchThread.run, so that this loop's thread
        # never runs torch itself; see gpt/torch_thread.py). Default: in the loop's own thread.
        self.run = run or (lambda fn, *args: fn(*args))
        self.tokenizer = tokenizer
        self.stop_ids = stop_token_ids(tokenizer)
        self.seq_len = model.config.sequence_len
        n_sampled = sampled_vocab(model.config.vocab_size, tokenizer)
        self.decoder = StaticDecoder(model, max_batch, n_sampled, graphs, compile, fused)
        for row in range(max_batch):
            self.decoder.clear_row(row)
        self.rows: list[_Session | None] = [None] * max_batch
        self.kept = [_Kept() for _ in range(max_batch)]
        self.waiting: deque[_Session] = deque()
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None
        pin = self.decoder.device.type == "cuda"
        self.host = [torch.zeros(max_batch, dtype=torch.long, pin_memory=pin) for _ in range(2)]
        self.steps = 0

    # ---- the reader's side --------------------------------------------------------------------------------------

    def stream(self, prompt_ids: list[int], params: SamplingParams | None = None,
               should_stop: Callable[[], bool] | None = None) -> Iterator[StreamEvent]:
        reply = Reply(self.tokenizer, prompt_ids, params or SamplingParams(), self.seq_len, self.stop_ids)
        session = _Session(list(prompt_ids), reply, should_stop)
        with self.lock:
            self.waiting.append(session)
            if self.thread is None:
                self.thread = threading.Thread(target=self._loop, name="gpt-batch-server", daemon=True)
                self.thread.start()
        self.wake.set()
        return self._read(session)

    def _read(self, session: _Session) -> Iterator[StreamEvent]:
        try:
            while True:
                event = session.events.get()
                if isinstance(event, BaseException):
                    raise event
                if not event.done and session.stop_requested():
                    # Tokens decoded before the loop saw the request are not handed out: Stop takes effect at once.
                    yield StreamEvent(None, "", True, "stopped", session.reply.seed, session.reply.cached)
                    return
                yield event
                if event.done:
                    return
        finally:
            session.abandoned = True  # if we stopped early, the loop frees the row
            self.wake.set()

    # ---- the loop ----------------------------------------------------------------------------------------------

    def _loop(self) -> None:
        in_flight = None
        while True:
            try:
                in_flight = self.run(self._steps, in_flight)
            except Exception as e:  # noqa: BLE001 - fail the sessions in hand, keep serving
                in_flight = None
                self._fail_all(e)
            if in_flight is None:  # idle (or just failed): sleep until a session arrives
                self.wake.wait()
                self.wake.clear()

    def _steps(self, in_flight):
        """Up to STEPS_PER_RUN loop iterations in one call of `run`: on a CPU one hand-over to the torch thread per
        few tokens instead of per token (other model work waits at most that long)."""
        for _ in range(STEPS_PER_RUN):
            in_flight = self._step(in_flight)
            if in_flight is None:
                break
        return in_flight

    def _step(self, in_flight):
        """Steps 1-4 of the loop once; returns the step now in flight (None when no row is busy)."""
        self._admit()
        self._drop_stopped()
        launched = self._launch()
        if in_flight is not None:
            self._deliver(*in_flight)
        return launched

    @torch.inference_mode()
    def _admit(self) -> None:
        while True:
            with self.lock:
                if not self.waiting or None not in self.rows:
                    return
                session = self.waiting.popleft()
            if session.abandoned:
                continue
            if not self._check_finished(session):
                continue
            row, start = self._pick_row(session.prompt)
            session.row = row
            self.rows[row] = session  # before the prefill: if it fails, _fail_all finds the session here
            self.kept[row] = _Kept()
            session.reply.cached = start
            p = session.params
            self.decoder.set_row(row, p.temperature, p.top_k, p.top_p, session.reply.seed)
            first = self.decoder.prefill(row, session.prompt, width_bucket([p]), start)
            self._take(session, int(first))

    def _pick_row(self, prompt: list[int]) -> tuple[int, int]:
        """The free row for `prompt`, and how many of its first tokens that row's cache already holds: the free row
        whose last session `prompt` continues (it begins with that session's whole prompt, then any part of its
        reply: a branch, the next turn; or it is that prompt again) with the longest run kept (at least one prompt
        token is always computed, for the logits of the first reply token); else the lowest free row whose reply did
        not end in the last KEEP_S seconds, else the lowest free row (small batches). A prompt that shares only a
        start (<|bos|>, the chat's first tokens) with a row's does not take it: its owner may still branch it."""
        free = [row for row, session in enumerate(self.rows) if session is None]
        reuse = {}
        for row in free:
            shared = common_prefix(self.kept[row].tokens, prompt)
            if shared and shared >= min(self.kept[row].prompt, len(prompt)):
                reuse[row] = min(shared, len(prompt) - 1)
        if reuse:
            best = max(reuse, key=reuse.get)  # the lowest of the longest
            return best, reuse[best]
        now = time.monotonic()
        return next((row for row in free if now - self.kept[row].ended >= KEEP_S), free[0]), 0

    def _drop_stopped(self) -> None:
        for session in self.rows:
            if session is None:
                continue
            if session.abandoned or session.stop_requested():
                self._finish(session, "stopped")

    @torch.inference_mode()
    def _launch(self):
        active = [(row, s) for row, s in enumerate(self.rows) if s is not None]
        if not active:
            return None
        for _, s in active:
            s.launched += 1
        size = self.decoder.size
        span = size(max(len(s.prompt) + s.launched for _, s in active), MIN_SPAN, self.seq_len)
        # Sessions take the lowest free row, so one user decodes a batch of 1, not max_batch rows.
        batch = size(active[-1][0] + 1, 1, len(self.rows))
        out = self.decoder.decode(batch, span, width_bucket([s.params for _, s in active]))
        host = self.host[self.steps % 2]
        self.steps += 1
        host[:batch].copy_(out, non_blocking=True)
        done = None
        if out.is_cuda:
            done = torch.cuda.Event()
            done.record()
        return done, host, active

    def _deliver(self, done, host: torch.Tensor, active: list) -> None:
        if done is not None:
            done.synchronize()
        tokens = host.tolist()
        for row, session in active:
            if self.rows[row] is session:  # not finished since this step was launched
                self._take(session, tokens[row])

    # ---- one session's bookkeeping -------------------------------------------------------------------------

    def _check_finished(self, session: _Session) -> bool:
        """False (and the final event sent) if the session must stop before its next token."""
        reason = session.reply.limit_reached()
        if reason is not None:
            self._finish(session, reason)
        return not session.done

    def _take(self, session: _Session, token: int) -> None:
        session.sampled.append(token)
        event = session.reply.take(token)
        if event is None:
            self._finish(session, "assistant_end")
            return
        session.events.put(event)
        self._check_finished(session)

    def _finish(self, session: _Session, reason: str) -> None:
        session.done = True
        session.events.put(session.reply.end(reason))
        if session.row is not None:
            # Its keys/values stay for a later prompt that begins with the same tokens. An idle row steps on from its
            # position, writing only past them; at a full context the clamp rewrites the last position: not kept.
            self.kept[session.row] = _Kept(session.fed()[: self.seq_len - 1], len(session.prompt), time.monotonic())
            self.rows[session.row] = None
            self.decoder.clear_row(session.row)
            session.row = None

    def _fail_all(self, error: Exception) -> None:
        with self.lock:
            sessions = [s for s in self.rows if s is not None] + list(self.waiting)
            self.waiting.clear()
        self.rows = [None] * len(self.rows)
        self.kept = [_Kept() for _ in self.rows]  # a failed step may have left any row's cache half written
        for s in sessions:
            s.done = True
            s.events.put(RuntimeError(f"the batch server failed: {error!r}"))
