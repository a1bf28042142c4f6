"""Clocks the scheduler reads. Injectable so tests run on scripted time, and so a ROS node can supply ROS time.

Two readings, because they answer different questions: `now()` is in the timebase of frame stamps (deadlines,
end-to-end latency; ROS time, possibly simulated), `monotonic()` measures how long computation takes (queue
waits, step times, the latency model) and must never jump.
"""
from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds in the timebase of job stamps and deadlines."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin, never going back; for durations only."""


class SystemClock:
    """Wall time for stamps (`time.time()`, what camera drivers stamp with) and `perf_counter` for durations."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.perf_counter()


class FakeClock:
    """Time that moves only when told to, with callbacks that fire when it passes their time.

    `advance` moves in jumps, stopping at each scheduled callback's time to run it, so an event scheduled inside a
    scripted model step happens "while the step runs". Both readings are the same number.
    """

    def __init__(self, start: float = 0.0):
        self._time = float(start)
        self._events: list[tuple[float, int, Callable[[], object]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._time

    def monotonic(self) -> float:
        return self._time

    def call_at(self, when: float, action: Callable[[], object]) -> None:
        """Run `action` when the clock reaches `when` (immediately on the next `advance` if already past)."""
        heapq.heappush(self._events, (float(when), next(self._order), action))

    @property
    def next_event(self) -> float | None:
        """Time of the earliest scheduled callback, None if there is none."""
        return self._events[0][0] if self._events else None

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"time cannot go back (advance by {seconds})")
        self.advance_to(self._time + seconds)

    def advance_to(self, when: float) -> None:
        if when < self._time:
            raise ValueError(f"time cannot go back (from {self._time} to {when})")
        while self._events and self._events[0][0] <= when:
            at, _, action = heapq.heappop(self._events)
            self._time = max(self._time, at)
            action()
        self._time = when
