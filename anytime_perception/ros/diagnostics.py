"""``/diagnostics`` for anytime_node: the runtime's accounting and the node's own counters as
``diagnostic_msgs/DiagnosticArray`` (what ``rqt_runtime_monitor`` and the diagnostic aggregator read).

One status for the runtime (model, weights, device, policies, steps, preemptions, scheduler and output overhead),
one per input (each camera, and the ``perceive`` action as one input) with: frames received / accepted /
rejected by reason / lost (DDS message-lost events); jobs completed / preempted / dropped and ended by reason;
exits delivered per exit; deadline hit rates; stamp-to-result latency percentiles per exit. Levels: ERROR when
jobs failed (the model raised) since the last report, WARN when frames were rejected or lost since the last report,
OK otherwise; the message says why.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from ..runtime.stats import Histogram, SourceStats

QUANTILES = (0.5, 0.9, 0.99)
OK, WARN, ERROR = 0, 1, 2      # DiagnosticStatus levels (the message constants are bytes)


@dataclass
class InputCounters:
    """The node's counters of one input (a camera, or the action server)."""

    received: int = 0                 # messages the subscriptions delivered (raw + compressed), or goals received
    accepted: int = 0                 # submitted to the runtime
    rejected: dict[str, int] = field(default_factory=dict)   # reason -> count (never submitted)
    lost: int = 0                     # DDS message-lost events (messages that never reached the callback)
    unstamped: int = 0                # frames with header.stamp 0 (stamped on arrival instead)
    events: int = 0                   # priority events received for this input
    event_frames: int = 0             # frames that ran under a priority event
    published: dict[int, int] = field(default_factory=dict)  # exit index -> results published
    output_errors: int = 0            # results that could not be turned into messages (logged)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def copy(self) -> InputCounters:
        return InputCounters(self.received, self.accepted, dict(self.rejected), self.lost, self.unstamped,
                             self.events, self.event_frames, dict(self.published), self.output_errors)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _kv(values: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=_fmt(v)) for k, v in values.items()]


def _ms(histogram: Histogram, q: float) -> float:
    return histogram.quantile(q) * 1000.0


def latency_values(stats: SourceStats) -> dict[str, Any]:
    """Per-exit stamp-to-delivery latency percentiles (ms, bucket upper bounds, ~20% resolution) and counts."""
    out: dict[str, Any] = {}
    for index in sorted(stats.latency):
        histogram = stats.latency[index]
        for q in QUANTILES:
            out[f"exit_{index}.latency_p{round(q * 100)}_ms"] = _ms(histogram, q)
        out[f"exit_{index}.latency_mean_ms"] = histogram.mean * 1000.0
    return out


def input_values(stats: SourceStats, counters: InputCounters) -> dict[str, Any]:
    values: dict[str, Any] = {
        "received": counters.received, "accepted": counters.accepted, "rejected": counters.rejected_total}
    for reason, n in sorted(counters.rejected.items()):
        values[f"rejected.{reason}"] = n
    values["lost"] = counters.lost
    values["unstamped"] = counters.unstamped
    values.update({"jobs.completed": stats.completed, "jobs.preempted": stats.preempted,
                   "jobs.dropped": stats.dropped, "jobs.in_flight": stats.in_flight})
    for reason, n in sorted(stats.ended_by_reason.items()):
        values[f"ended.{reason}"] = n
    for index in sorted(stats.exits_delivered):
        values[f"exit_{index}.delivered"] = stats.exits_delivered[index]
    for index in sorted(counters.published):
        values[f"exit_{index}.published"] = counters.published[index]
    exits = stats.exit_deadline_hits + stats.exit_deadline_misses
    jobs = stats.job_deadline_hits + stats.job_deadline_misses
    values["deadline.exit_hit_rate"] = stats.exit_deadline_hits / exits if exits else math.nan
    values["deadline.job_hit_rate"] = stats.job_deadline_hits / jobs if jobs else math.nan
    values["deadline.exit_hits"] = stats.exit_deadline_hits
    values["deadline.exit_misses"] = stats.exit_deadline_misses
    values.update(latency_values(stats))
    values["suspensions"] = stats.suspensions
    values["resumes"] = stats.resumes
    values["priority_events"] = counters.events
    values["priority_event_frames"] = counters.event_frames
    values["output_errors"] = counters.output_errors
    return values


def input_status(name: str, hardware_id: str, stats: SourceStats, counters: InputCounters,
                 previous: InputCounters | None, failed_before: int) -> DiagnosticStatus:
    level, problems = OK, []
    failed = stats.ended_by_reason.get("failed", 0)
    if failed > failed_before:
        level = ERROR
        problems.append(f"{failed - failed_before} jobs failed (model error, see the log)")
    previous = previous if previous is not None else InputCounters()     # the first report: since the start
    rejected = counters.rejected_total - previous.rejected_total
    lost = counters.lost - previous.lost
    errors = counters.output_errors - previous.output_errors
    if rejected or lost or errors:
        level = max(level, WARN)
        for n, what in ((rejected, "frames rejected"), (lost, "messages lost"), (errors, "output errors")):
            if n:
                problems.append(f"{n} {what}")
    summary = (f"{counters.accepted} frames, {stats.completed} completed, {stats.preempted} preempted, "
               f"{stats.dropped} dropped")
    message = "; ".join(problems + [summary]) if problems else summary
    return DiagnosticStatus(level=bytes([level]), name=name, message=message, hardware_id=hardware_id,
                            values=_kv(input_values(stats, counters)))


#: More exits than this waiting on the node's output thread at a report make the runtime status WARN.
OUTPUT_BACKLOG_WARN = 16


def runtime_status(name: str, hardware_id: str, info: Mapping[str, Any], stats, output_time: Mapping[int, Histogram],
                   input_time: Histogram | None = None) -> DiagnosticStatus:
    """input: header.stamp to the frame's submission (transport, decoding, resizing, normalising); output: an exit
    computed to its messages published (the output thread's queue and work)."""
    values: dict[str, Any] = dict(info)
    values.update({"steps": stats.steps, "model_time_s": stats.model_time,
                   "scheduler_overhead": stats.scheduler_overhead, "preemptions": stats.preemptions})
    if stats.preemption_reaction.count:
        values["preemption_reaction_p50_ms"] = _ms(stats.preemption_reaction, 0.5)
        values["preemption_reaction_max_ms"] = stats.preemption_reaction.max * 1000.0
    for kind, policy in stats.policies.items():
        values[f"policy.{kind}"] = ", ".join(f"{k}={v}" for k, v in policy.items())
    if input_time is not None and input_time.count:
        values["input_mean_ms"] = input_time.mean * 1000.0
        values["input_p90_ms"] = _ms(input_time, 0.9)
        values["input_count"] = input_time.count
    for index in sorted(output_time):
        values[f"exit_{index}.output_mean_ms"] = output_time[index].mean * 1000.0
        values[f"exit_{index}.output_p90_ms"] = _ms(output_time[index], 0.9)
        values[f"exit_{index}.output_count"] = output_time[index].count
    level, message = OK, f"{stats.steps} model steps, {stats.preemptions} preemptions"
    backlog = int(info.get("output_queue_depth", 0))
    if backlog > OUTPUT_BACKLOG_WARN:
        # each queued exit holds its tensors and its frame: publishing falls behind the model
        level = WARN
        message = f"{backlog} exits waiting for publication (output thread behind the model); {message}"
    return DiagnosticStatus(level=bytes([level]), name=name, message=message, hardware_id=hardware_id,
                            values=_kv(values))


def diagnostic_array(header, statuses: Iterable[DiagnosticStatus]) -> DiagnosticArray:
    return DiagnosticArray(header=header, status=list(statuses))
