"""Lessons that cost nothing: what each lesson's "Show me" computes, computed once and kept for every visitor.

A lesson's button sends one event of its tab (the Inside tab's views, a Generate step, the cost comparison) with the
lesson's settings on a fresh page. `LessonEvent` is that event in one language: what it sends (its key) and the model
handler that computes it. The app's handlers get their results through `Payloads.serve(key, compute)`: a lesson's
key is answered from its kept payload (no model call, and so on ZeroGPU no GPU call and no visitor's quota), any
other key by compute(). A lesson's result is kept the first time anyone asks for it, or before that by `warm()`. A
visitor who changes anything (a slider, the prompt, a setting) sends another key, computed afresh as before.

The static site (publish/) is built from the same payloads: `payload(event)` for each lesson's events.
"""
from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class LessonEvent:
    """One lesson's event in one language. kind: "views" (the Inside tab), "step" (Generate: the state after some
    steps; step_index and steps_index say where in `args` the step count and the number of steps are) or "cost"."""
    lesson: Any  # a demo.lessons.Lesson (not imported here: lessons imports the Inside tab, which imports this)
    lang: str
    kind: str
    args: tuple  # what the event sends: its inputs' values on a fresh page after the lesson's settings
    compute: Callable[..., Any]  # the model handler that computes it from args
    step_index: int | None = None
    steps_index: int | None = None

    @property
    def key(self) -> tuple:
        return (self.kind, *self.args)

    @property
    def steps(self) -> int:
        """A "step" event's number of steps (the Generate tab's step limit)."""
        return int(self.args[self.steps_index])

    def at_step(self, n: int) -> LessonEvent:
        """The same "step" event for the state after n steps (the Generate tab replayed, step by step)."""
        args = list(self.args)
        args[self.step_index] = n
        return dataclasses.replace(self, args=tuple(args))


class Payloads:
    """The lessons' events and the results kept for them (thread-safe: every visitor's handlers share one)."""

    def __init__(self) -> None:
        self.events: list[LessonEvent] = []
        self._keys: set[tuple] = set()
        self._kept: dict[tuple, Any] = {}
        self._lock = threading.Lock()

    def add(self, event: LessonEvent) -> None:
        """A lesson's event: its result will be kept."""
        self.events.append(event)
        self._keys.add(event.key)

    def serve(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """The kept result for `key`, else compute() (kept when `key` is a lesson's)."""
        with self._lock:
            if key in self._kept:
                return self._kept[key]
        result = compute()
        if key in self._keys:
            with self._lock:
                result = self._kept.setdefault(key, result)
        return result

    def payload(self, event: LessonEvent) -> Any:
        """What `event` computes: kept if it is a lesson's, else computed now (a replay's other steps)."""
        return self.serve(event.key, lambda: event.compute(*event.args))

    def kept(self, key: tuple) -> bool:
        with self._lock:
            return key in self._kept

    def warm(self) -> int:
        """Compute every lesson's event not kept yet (before any visitor asks); returns how many were computed."""
        todo = [e for e in self.events if not self.kept(e.key)]
        for event in todo:
            self.payload(event)
        return len(todo)
