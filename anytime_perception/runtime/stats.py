"""Accounting: plain objects, snapshotted under the scheduler's lock so that they always add up.

Per source: received = completed + preempted + dropped + queued + running + suspended, and the end reasons sum
to completed + preempted + dropped (each reason belongs to one category, see `EndReason.category`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from .jobs import CATEGORIES, COMPLETED, DROPPED, PREEMPTED, EndReason

# 1 ms .. ~11.6 s, sqrt(2) apart: fine enough to read a percentile within ~20%, few enough to publish.
HISTOGRAM_BOUNDS = tuple(0.001 * 2 ** (k / 2) for k in range(28))


@dataclass
class Histogram:
    """Counts of durations (seconds) per bucket; `counts[i]` holds values <= `bounds[i]` (and above the previous
    bound), the last count everything beyond the last bound."""

    bounds: tuple[float, ...] = HISTOGRAM_BOUNDS
    counts: list[int] = field(default_factory=list)
    count: int = 0
    total: float = 0.0
    min: float = math.inf
    max: float = -math.inf

    def __post_init__(self):
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def add(self, value: float) -> None:
        lo, hi = 0, len(self.bounds)
        while lo < hi:  # first bound >= value
            mid = (lo + hi) // 2
            if self.bounds[mid] < value:
                lo = mid + 1
            else:
                hi = mid
        self.counts[lo] += 1
        self.count += 1
        self.total += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding the q-quantile (the maximum for the overflow bucket)."""
        if not self.count:
            return math.nan
        target = q * self.count
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if c and seen >= target:
                return min(self.bounds[i], self.max) if i < len(self.bounds) else self.max
        return self.max

    def merge(self, other: Histogram) -> None:
        if other.bounds != self.bounds:
            raise ValueError("cannot merge histograms with different bounds")
        self.counts = [a + b for a, b in zip(self.counts, other.counts)]
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)


@dataclass
class SourceStats:
    received: int = 0
    queued: int = 0  # in flight, at the time of the snapshot
    running: int = 0
    suspended: int = 0
    ended_by_reason: dict[str, int] = field(default_factory=dict)
    exits_delivered: dict[int, int] = field(default_factory=dict)  # exit index -> results delivered
    exits_per_job: dict[int, int] = field(default_factory=dict)  # exits a job delivered -> ended jobs
    latency: dict[int, Histogram] = field(default_factory=dict)  # exit index -> stamp-to-delivery seconds
    exit_deadline_hits: int = 0  # delivered results, by their job's deadline
    exit_deadline_misses: int = 0
    job_deadline_hits: int = 0  # ended jobs with a deadline that delivered at least one exit in time
    job_deadline_misses: int = 0  # ended jobs with a deadline that delivered nothing in time
    suspensions: int = 0
    resumes: int = 0

    def _category(self, category: str) -> int:
        return sum(n for r, n in self.ended_by_reason.items() if EndReason(r).category == category)

    @property
    def completed(self) -> int:
        return self._category(COMPLETED)

    @property
    def preempted(self) -> int:
        return self._category(PREEMPTED)

    @property
    def dropped(self) -> int:
        return self._category(DROPPED)

    @property
    def ended(self) -> int:
        return sum(self.ended_by_reason.values())

    @property
    def in_flight(self) -> int:
        return self.queued + self.running + self.suspended

    @property
    def balanced(self) -> bool:
        return (self.received == self.completed + self.preempted + self.dropped + self.in_flight
                and sum(self.exits_per_job.values()) == self.ended
                and self.job_deadline_hits + self.job_deadline_misses <= self.ended)

    def merge(self, other: SourceStats) -> None:
        for name in ("received", "queued", "running", "suspended", "exit_deadline_hits", "exit_deadline_misses",
                     "job_deadline_hits", "job_deadline_misses", "suspensions", "resumes"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("ended_by_reason", "exits_delivered", "exits_per_job"):
            mine = getattr(self, name)
            for k, v in getattr(other, name).items():
                mine[k] = mine.get(k, 0) + v
        for k, h in other.latency.items():
            self.latency.setdefault(k, Histogram()).merge(h)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update({c: getattr(self, c) for c in CATEGORIES})
        out["in_flight"] = self.in_flight
        return out


@dataclass
class RuntimeStats:
    sources: dict[str, SourceStats] = field(default_factory=dict)
    steps: int = 0
    model_time: float = 0.0  # seconds inside model steps (device synchronised)
    scheduler_time: float = 0.0  # seconds the worker spent deciding and bookkeeping, callbacks excluded
    callback_time: float = 0.0  # seconds inside on_result / on_end
    preemptions: int = 0  # running jobs stopped or suspended for another job
    preemption_reaction: Histogram = field(default_factory=Histogram)  # preemptor ready -> old job stopped
    step_time: dict[str, Histogram] = field(default_factory=dict)  # step name -> measured seconds
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def total(self) -> SourceStats:
        merged = SourceStats()
        for s in self.sources.values():
            merged.merge(s)
        return merged

    @property
    def balanced(self) -> bool:
        return all(s.balanced for s in self.sources.values())

    @property
    def scheduler_overhead(self) -> float:
        """Scheduler time as a share of model time."""
        return self.scheduler_time / self.model_time if self.model_time else math.nan

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["sources"] = {k: s.as_dict() for k, s in self.sources.items()}
        out["total"] = self.total.as_dict()
        out["balanced"] = self.balanced
        out["scheduler_overhead"] = self.scheduler_overhead
        return out
