"""Scheduling policies: small objects, each answering one question the scheduler asks between model steps.

- frames: does a newer frame from the same source replace an older one? (`newest_wins`, `finish_then_latest`,
  `fifo`)
- deadline: should this job stop now? (`none`, `deadline`, `predictive`)
- priority: which waiting job runs next, and may it take the worker from the running one? (`priority_edf`,
  `fifo`)
- suspend: is a preempted job worth keeping to resume later? (`drop`, `suspend`)

Select them by name and parameters: `Policies.from_config({"frames": {"name": "newest_wins",
"min_exits_before_preempt": 2}, "deadline": "predictive"})`, or build the objects directly.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .jobs import EndReason, JobRecord


def _init_params(cls: type) -> list[str]:
    if cls.__init__ is object.__init__:
        return []
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in inspect.signature(cls.__init__).parameters.values() if p.kind in kinds][1:]


class Policy:
    name: ClassVar[str]

    def params(self) -> dict[str, Any]:
        return {p: getattr(self, p) for p in _init_params(type(self))}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


def _check_count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isnan(value):
        raise ValueError(f"{name} must be a positive number of seconds (inf allowed), got {value!r}")
    return float(value)


# ----- frames: what a newer frame from the same source does to older ones -------------------------------------
class FramePolicy(Policy):
    """Queued frames of a source beyond `queue_depth` are dropped oldest first (`superseded`). `supersedes` decides
    whether a newer waiting frame takes over from an older one that has started (running or suspended)."""

    queue_depth: int = 1

    def supersedes(self, older: JobRecord, newer: JobRecord) -> bool:
        raise NotImplementedError


class NewestFrameWins(FramePolicy):
    """A newer frame preempts the running one of its source once that one has delivered
    `min_exits_before_preempt` exits (0: immediately), so every frame yields at least a coarse result."""

    name = "newest_wins"

    def __init__(self, min_exits_before_preempt: int = 1):
        self.min_exits_before_preempt = _check_count("min_exits_before_preempt", min_exits_before_preempt, 0)

    def supersedes(self, older: JobRecord, newer: JobRecord) -> bool:
        return older.exits_delivered >= self.min_exits_before_preempt


class FinishThenLatest(FramePolicy):
    """The running frame finishes; meanwhile only the latest frame waits (queue depth 1), older ones are dropped."""

    name = "finish_then_latest"

    def supersedes(self, older: JobRecord, newer: JobRecord) -> bool:
        return False


class KeepAllFrames(FramePolicy):
    """Every frame runs in turn, up to `max_queued` waiting per source (offline processing, recorded data)."""

    name = "fifo"

    def __init__(self, max_queued: int = 16):
        self.max_queued = _check_count("max_queued", max_queued, 1)
        self.queue_depth = self.max_queued

    def supersedes(self, older: JobRecord, newer: JobRecord) -> bool:
        return False


# ----- deadline: should this job stop now? ---------------------------------------------------------------------
class DeadlinePolicy(Policy):
    def stop_reason(self, job: JobRecord, now: float, time_to_next_exit: Callable[[], float]) -> EndReason | None:
        """Asked before every step (and right after each exit, to mark it final). `time_to_next_exit()` is the
        latency model's prediction, in seconds, for the job's steps up to and including its next exit under its
        current mask; it is computed only when called."""
        raise NotImplementedError


class IgnoreDeadlines(DeadlinePolicy):
    """Every job runs to its last exit; deadlines are still counted as hits and misses."""

    name = "none"

    def stop_reason(self, job, now, time_to_next_exit):
        return None


class StopAtDeadline(DeadlinePolicy):
    """Stop a job once its deadline has passed (checked between steps, so the overrun is at most one step)."""

    name = "deadline"

    def stop_reason(self, job, now, time_to_next_exit):
        if job.deadline is not None and now >= job.deadline:
            return EndReason.DEADLINE
        return None


class PredictiveDeadline(DeadlinePolicy):
    """Also do not start (or continue towards) an exit whose predicted finish, `now + safety_factor * predicted`,
    is past the deadline: the worker moves on instead of computing a result that would come too late."""

    name = "predictive"

    def __init__(self, safety_factor: float = 1.0):
        if isinstance(safety_factor, bool) or not isinstance(safety_factor, (int, float)) or not safety_factor > 0:
            raise ValueError(f"safety_factor must be a positive number, got {safety_factor!r}")
        self.safety_factor = float(safety_factor)

    def stop_reason(self, job, now, time_to_next_exit):
        if job.deadline is None:
            return None
        if now >= job.deadline:
            return EndReason.DEADLINE
        if now + self.safety_factor * time_to_next_exit() > job.deadline:
            return EndReason.PREDICTED_MISS
        return None


# ----- priority: which job runs next, and may it take the worker ----------------------------------------------
class PriorityPolicy(Policy):
    def order_key(self, job: JobRecord) -> tuple:
        """Smaller runs first."""
        raise NotImplementedError

    def preempts(self, waiting: JobRecord, running: JobRecord) -> bool:
        raise NotImplementedError


class PriorityThenEDF(PriorityPolicy):
    """Higher `priority` first; among equal priorities the earliest deadline, then the oldest stamp. With
    `preempt`, a waiting job of strictly higher priority stops the running one at the next step boundary."""

    name = "priority_edf"

    def __init__(self, preempt: bool = True):
        if not isinstance(preempt, bool):
            raise ValueError(f"preempt must be true or false, got {preempt!r}")
        self.preempt = preempt

    def order_key(self, job: JobRecord) -> tuple:
        deadline = math.inf if job.deadline is None else job.deadline
        return (-job.priority, deadline, job.stamp, job.id)

    def preempts(self, waiting: JobRecord, running: JobRecord) -> bool:
        return self.preempt and waiting.priority > running.priority


class ArrivalOrder(PriorityPolicy):
    """Jobs run in submission order; priorities are ignored and nothing preempts for priority."""

    name = "fifo"

    def order_key(self, job: JobRecord) -> tuple:
        return (job.id,)

    def preempts(self, waiting: JobRecord, running: JobRecord) -> bool:
        return False


# ----- suspend: keep a preempted job to resume later? ---------------------------------------------------------
class SuspendPolicy(Policy):
    """`max_suspended` bounds how many are kept; beyond it the least important (priority policy order) is evicted."""

    max_suspended: int = 0

    def keep(self, job: JobRecord, now: float) -> bool:
        """Asked when a job is preempted and again whenever the scheduler schedules; False drops it as stale."""
        raise NotImplementedError


class DropPreempted(SuspendPolicy):
    """A preempted job ends (`preempted`); its partial work is discarded."""

    name = "drop"

    def keep(self, job, now):
        return False


class SuspendResume(SuspendPolicy):
    """Keep up to `max_suspended` preempted jobs with their saved state and resume them when nothing more
    important waits, as long as their frame is at most `max_age` seconds old (stamp to now)."""

    name = "suspend"

    def __init__(self, max_suspended: int = 2, max_age: float = 1.0):
        self.max_suspended = _check_count("max_suspended", max_suspended, 1)
        self.max_age = _check_seconds("max_age", max_age)

    def keep(self, job, now):
        return now - job.stamp <= self.max_age


# ----- selection by name ---------------------------------------------------------------------------------------
REGISTRY: dict[str, dict[str, type[Policy]]] = {
    "frames": {c.name: c for c in (NewestFrameWins, FinishThenLatest, KeepAllFrames)},
    "deadline": {c.name: c for c in (IgnoreDeadlines, StopAtDeadline, PredictiveDeadline)},
    "priority": {c.name: c for c in (PriorityThenEDF, ArrivalOrder)},
    "suspend": {c.name: c for c in (DropPreempted, SuspendResume)},
}


def make_policy(kind: str, name: str, **params: Any) -> Policy:
    """`make_policy("frames", "newest_wins", min_exits_before_preempt=2)`."""
    if kind not in REGISTRY:
        raise ValueError(f"unknown policy kind {kind!r}; kinds: {', '.join(REGISTRY)}")
    choices = REGISTRY[kind]
    if name not in choices:
        raise ValueError(f"unknown {kind} policy {name!r}; choose one of: {', '.join(choices)}")
    cls = choices[name]
    accepted = _init_params(cls)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"{kind} policy {name!r} has no parameter {', '.join(unknown)}; "
                         f"it takes: {', '.join(accepted) or 'none'}")
    return cls(**params)


@dataclass
class Policies:
    frames: FramePolicy = field(default_factory=NewestFrameWins)
    deadline: DeadlinePolicy = field(default_factory=PredictiveDeadline)
    priority: PriorityPolicy = field(default_factory=PriorityThenEDF)
    suspend: SuspendPolicy = field(default_factory=SuspendResume)

    @classmethod
    def from_config(cls, config: Mapping[str, str | Mapping[str, Any]]) -> Policies:
        """Each kind maps to a name or to {"name": ..., **parameters}; kinds left out keep their default."""
        unknown = sorted(set(config) - set(REGISTRY))
        if unknown:
            raise ValueError(f"unknown policy kind {', '.join(unknown)}; kinds: {', '.join(REGISTRY)}")
        chosen = {}
        for kind, spec in config.items():
            if isinstance(spec, str):
                chosen[kind] = make_policy(kind, spec)
            else:
                params = dict(spec)
                if "name" not in params:
                    raise ValueError(f"{kind} policy given as parameters needs a 'name' (one of "
                                     f"{', '.join(REGISTRY[kind])})")
                chosen[kind] = make_policy(kind, params.pop("name"), **params)
        return cls(**chosen)

    def describe(self) -> dict[str, dict[str, Any]]:
        """The config this was built from, in `from_config`'s format."""
        return {kind: {"name": getattr(self, kind).name, **getattr(self, kind).params()} for kind in REGISTRY}
