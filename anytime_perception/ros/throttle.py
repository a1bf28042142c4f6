"""A log throttle keyed by what happened (kind, input, reason), not by the line that logs it.

rclpy's own ``throttle_duration_sec`` throttles per call site: one line for every camera and every rejection
reason together, so a burst of ``too_large`` frames on one camera would hide the first ``bad_step`` of another,
and the suppressed lines are not counted. Here each key gets its first line at once, then at most one per
``period``, each saying how many were not logged since the previous one, so every event is accounted for.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable


class ThrottledLog:
    def __init__(self, period: float = 1.0):
        self.period = period
        self._last: dict[Any, float] = {}
        self._suppressed: dict[Any, int] = {}
        self._lock = threading.Lock()

    def __call__(self, log: Callable[[str], Any], key: Any, text: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -math.inf) < self.period:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        log(text + (f" (+{suppressed} more like it since the last such message)" if suppressed else ""))
