"""What goes into the scheduler (jobs, source settings) and what comes out (one result per exit, one end per job)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from torch import Tensor

from ..models.anytime import AnytimeState, ExitResult


class EndReason(str, Enum):
    """Why a job produced no further exits. Each reason belongs to exactly one accounting category."""

    LAST_EXIT = "last_exit"  # every exit delivered
    DEADLINE = "deadline"  # its deadline passed while it ran
    PREDICTED_MISS = "predicted_miss"  # the next exit was predicted to finish after the deadline
    PREEMPTED = "preempted"  # a newer frame or a higher-priority job took the worker and it was not kept
    CANCELLED = "cancelled"  # `scheduler.cancel(job_id)`
    SUPERSEDED = "superseded"  # a newer frame from its source replaced it in the queue before it started
    EXPIRED = "expired"  # its deadline passed, or its first exit could not finish in time, before it started
    STALE = "stale"  # suspended for longer than the suspend policy allows
    EVICTED = "evicted"  # suspended, then pushed out by a more important suspended job (count bound)
    FAILED = "failed"  # the model raised; the exception is logged
    SHUTDOWN = "shutdown"  # the scheduler stopped

    def __str__(self) -> str:
        return self.value

    @property
    def category(self) -> str:
        return CATEGORY[self]


COMPLETED, PREEMPTED, DROPPED = "completed", "preempted", "dropped"
CATEGORIES = (COMPLETED, PREEMPTED, DROPPED)
# "completed" means the job ran until its last exit or its own time budget stopped it; how many exits that gave is
# in the stats' exits-per-job counts. Everything the system or the user removed is "dropped".
CATEGORY = {
    EndReason.LAST_EXIT: COMPLETED, EndReason.DEADLINE: COMPLETED, EndReason.PREDICTED_MISS: COMPLETED,
    EndReason.PREEMPTED: PREEMPTED,
    EndReason.CANCELLED: DROPPED, EndReason.SUPERSEDED: DROPPED, EndReason.EXPIRED: DROPPED,
    EndReason.STALE: DROPPED, EndReason.EVICTED: DROPPED, EndReason.FAILED: DROPPED, EndReason.SHUTDOWN: DROPPED,
}


@dataclass(frozen=True)
class Job:
    """One frame to run through the model.

    `images`: (3, H, W) or (B, 3, H, W), normalised like the model's training data; moved to the scheduler's device
    when the job starts. `stamp`: capture time in the clock's `now()` timebase (seconds; for ROS, the header
    stamp). `priority` and `deadline` (absolute, same timebase) default to the source's settings; `meta` is carried
    untouched into every result (a ROS header, a sequence number, ...).
    """

    images: Tensor
    stamp: float
    frame_id: str = ""
    source: str = "default"
    priority: int | None = None
    deadline: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class SourceConfig:
    """Per-source defaults: a job's priority (higher runs first and preempts lower) and time budget (deadline =
    stamp + budget; None: no deadline)."""

    priority: int = 0
    budget: float | None = None

    def __post_init__(self):
        if self.budget is not None and not (self.budget > 0 and math.isfinite(self.budget)):
            raise ValueError(f"budget must be a positive number of seconds or None, got {self.budget!r}")


@dataclass(frozen=True)
class Timings:
    """Seconds. `queue_wait`: submit -> first step started. `model_time`: compute of the steps that led to this
    exit since the previous one (for a job's end: all its steps). `end_to_end`: stamp -> delivery, in the stamp
    timebase. `since_submit`: submit -> delivery. `job_model_time`: compute of all the job's steps so far."""

    queue_wait: float
    model_time: float
    end_to_end: float
    since_submit: float
    job_model_time: float = 0.0


@dataclass(frozen=True)
class JobResult:
    """One exit of one job, delivered the moment the exit is computed.

    `is_final` is True when no further exit will come for this job; `final_reason` then says why. A job can also
    end between exits (preempted mid-way, cancelled); that is reported only by its `JobEnd`.
    """

    job_id: int
    job: Job
    exit: ExitResult  # the model's output; tensors stay on the scheduler's device
    is_final: bool
    final_reason: EndReason | None
    priority: int
    deadline: float | None
    deadline_met: bool | None  # delivered by the deadline; None without one
    timings: Timings

    @property
    def exit_index(self) -> int:
        return self.exit.index

    @property
    def num_exits(self) -> int:
        return self.exit.num_exits


@dataclass(frozen=True)
class JobEnd:
    """Exactly one per submitted job, after its last result (if any)."""

    job_id: int
    job: Job
    reason: EndReason
    exits_delivered: int
    suspensions: int  # how often it was suspended and kept
    priority: int
    deadline: float | None
    timings: Timings  # model_time: all of its steps; queue_wait: nan if it never started

    @property
    def category(self) -> str:
        return self.reason.category


class JobRecord:
    """The scheduler's bookkeeping for one job. Policies read it; only the scheduler writes it."""

    __slots__ = ("id", "job", "priority", "deadline", "received_at", "status", "state", "started_at",
                 "queue_wait", "exits_delivered", "blocked_until", "preemption_blocked", "resumed_at", "suspended_at", "suspensions",
                 "model_time", "model_time_since_exit", "cancel_requested", "work", "work_for_exit",
                 "deadline_met_once", "end_reason")

    def __init__(self, job_id: int, job: Job, priority: int, deadline: float | None, received_at: float):
        self.id = job_id
        self.job = job
        self.priority = priority
        self.deadline = deadline
        self.received_at = received_at  # monotonic
        self.status = "queued"  # queued -> running <-> suspended -> ended
        self.state: AnytimeState | None = None  # None until the first step and after the end
        self.started_at: float | None = None  # monotonic, when its first step began
        self.queue_wait = math.nan
        self.exits_delivered = 0
        # A newer frame that the frame policy did not yet let in (too few exits) may be let in after the next step;
        # that moment, not the newcomer's arrival, starts the preemption reaction time.
        self.preemption_blocked = False
        self.blocked_until: float | None = None  # monotonic
        self.resumed_at: float | None = None
        self.suspended_at: float | None = None
        self.suspensions = 0
        self.model_time = 0.0
        self.model_time_since_exit = 0.0
        self.cancel_requested = False
        self.work: list[float] = []  # predicted work of each remaining step up to the next exit
        self.work_for_exit = -1  # the exit count `work` was computed for (masks change only at exits)
        self.deadline_met_once = False
        self.end_reason: EndReason | None = None

    @property
    def source(self) -> str:
        return self.job.source

    @property
    def stamp(self) -> float:
        return self.job.stamp

    @property
    def started(self) -> bool:
        return self.started_at is not None

    def recency(self) -> tuple[float, int]:
        """Larger is newer: stamp first, submission order for equal stamps."""
        return (self.job.stamp, self.id)

    def __repr__(self) -> str:
        return f"JobRecord(id={self.id}, source={self.source!r}, status={self.status}, exits={self.exits_delivered})"
