"""``/diagnostics`` for anytime_node: the runtime's accounting and the node's own counters as
``diagnostic_msgs/DiagnosticArray`` (what ``rqt_runtime_monitor`` and the diagnostic aggregator read).

One status for the runtime (model, weights, device, policies, steps, preemptions, scheduler and output overhead),
one per input (each camera, and the ``perceive`` action as one input) with: frames received / accepted /
rejected by reason / lost (gaps in the publishers' sequence numbers: overwritten in the subscription queue or lost
in transport, so that published = received + lost; the DDS message-lost events beside) / bad stamps; jobs completed / preempted / dropped and ended by reason;
exits delivered per exit; deadline hit rates; stamp-to-result latency percentiles per exit. Levels: ERROR when
jobs failed (the model raised) since the last report, WARN when frames were rejected or lost since the last report,
OK otherwise; the message says why.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
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
    lost_in_queue: int = 0            # gaps in the publishers' sequence numbers: sent, never delivered
    lost_dds_events: int = 0          # DDS message-lost events (a subset of the gaps when sequence numbers exist)
    sequence_numbers: bool = False    # the publishers' sequence numbers are available (then lost = the gaps)
    unstamped: int = 0                # frames with header.stamp 0 (stamped on arrival instead)
    bad_stamp: int = 0                # frames stamped further than max_stamp_skew_s from the node clock
    events: int = 0                   # priority events received for this input
    event_frames: int = 0             # frames that ran under a priority event
    published: dict[int, int] = field(default_factory=dict)  # exit index -> results published
    output_errors: int = 0            # results that could not be turned into messages (logged)

    @property
    def lost(self) -> int:
        """Messages sent to this input that it never received: published = received + lost."""
        return self.lost_in_queue if self.sequence_numbers else self.lost_dds_events

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def copy(self) -> InputCounters:
        return replace(self, rejected=dict(self.rejected), published=dict(self.published))


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
    values["lost.sequence_gaps"] = counters.lost_in_queue
    values["lost.dds_events"] = counters.lost_dds_events
    values["unstamped"] = counters.unstamped
    values["bad_stamp"] = counters.bad_stamp
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
    # the deepest backlog since the last report, not only at the report: a burst between reports counts
    backlog = max(int(info.get("output_queue_depth", 0)), int(info.get("output_queue_peak_since_report", 0)))
    if backlog > OUTPUT_BACKLOG_WARN:
        # each queued exit holds its tensors and its frame: publishing falls behind the model
        level = WARN
        message = f"up to {backlog} exits waited for publication (output thread behind the model); {message}"
    return DiagnosticStatus(level=bytes([level]), name=name, message=message, hardware_id=hardware_id,
                            values=_kv(values))


def diagnostic_array(header, statuses: Iterable[DiagnosticStatus]) -> DiagnosticArray:
    return DiagnosticArray(header=header, status=list(statuses))


class Reporter:
    """Builds the node's reports: one runtime status, one status per camera and one for the ``perceive`` action;
    input levels compare with the previous report (WARN for rejections, losses or output errors since then, ERROR
    for jobs that failed since then)."""

    def __init__(self, node_name: str, action_source: str):
        self.node_name = node_name
        self.action_source = action_source     # the action's runtime sources are <action_source>_<i>
        self._previous: dict[str, InputCounters] = {}
        self._failed_reported: dict[str, int] = {}

    def reset(self) -> None:
        """Report from zero again (a lifecycle re-configure makes fresh counters)."""
        self._previous, self._failed_reported = {}, {}

    def source_stats(self, stats, cameras, action_counters: InputCounters) -> dict[str, tuple[SourceStats,
                                                                                            InputCounters]]:
        """Runtime stats and node counters per input: camera names ("" for the unnamed one) and "action" (its
        runtime sources ``action_<i>`` merged)."""
        result = {c.name: (stats.sources.get(c.source, SourceStats()), c.counters) for c in cameras}
        action = SourceStats()
        for name, source in stats.sources.items():
            if name.startswith(self.action_source + "_"):
                action.merge(source)
        result[self.action_source] = (action, action_counters)
        return result

    def report(self, header, hardware_id: str, info: Mapping[str, Any], stats, cameras, action,
               output_time: Mapping[int, Histogram], input_time: Histogram) -> DiagnosticArray:
        statuses = [runtime_status(f"{self.node_name}: runtime", hardware_id, info, stats, dict(output_time),
                                   input_time)]
        for name, (source, counters) in self.source_stats(stats, cameras, action.counters).items():
            label = "action perceive" if name == self.action_source else f"camera {name}" if name else "input image"
            snapshot = counters.copy()
            status = input_status(f"{self.node_name}: {label}", hardware_id, source, snapshot,
                                  self._previous.get(name), self._failed_reported.get(name, 0))
            if name == self.action_source:
                status.values += [KeyValue(key=f"goals.{k}", value=str(v)) for k, v in sorted(action.finished.items())]
            statuses.append(status)
            self._previous[name] = snapshot
            self._failed_reported[name] = source.ended_by_reason.get("failed", 0)
        return diagnostic_array(header, statuses)
