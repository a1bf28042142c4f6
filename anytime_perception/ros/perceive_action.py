"""The ``perceive`` action: one image in, every exit back as feedback, the last exit as the result.

Every goal request gets a goal response (accepted, or rejected with a reason that is logged and counted), and every
accepted goal reaches a terminal status (SUCCEEDED with at least one exit, CANCELED, or ABORTED), also under bursts
of goals and storms of cancels: the action's services keep :data:`ACTION_SERVICE_QOS` deep queues (rclpy's default
of 10 overwrote all but 10 of 50 goals sent at once, which then got no response at all). Clients that send bursts
need the same depth on their side (``ActionClient(..., goal_service_qos_profile=ACTION_SERVICE_QOS, ...)``).

Goals share the node's model and runtime with the cameras: each runs as one of ``max_concurrent_goals`` runtime
sources (``action_0``, ``action_1``, ...). Its exits go to a :class:`GoalSink` (feedback) instead of the topics.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.executors import Executor
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.task import Future

from ..action import Perceive
from ..msg import AnytimeSegmentation
from . import diagnostics as diag
from . import outputs as out
from .image_codec import ImageError, check_image, image_to_rgb

ACTION_SOURCE = "action"
LABEL = "perceive action"
#: The goal, cancel and result services: reliable, volatile, and deep enough for a burst of hundreds of requests
#: (a goal request holds its image, so the depth bounds memory only under such a burst).
ACTION_SERVICE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                                durability=DurabilityPolicy.VOLATILE)
#: Feedback: one message per exit of every goal in flight.
FEEDBACK_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)


def wake_on_done(future: Future, executor: Executor | None) -> None:
    """Make completing ``future`` from any thread wake ``executor``, so that a coroutine task awaiting it resumes
    at once. rclpy resumes a pending coroutine only when its executor wakes; a Future completed outside the
    executor's thread wakes nothing by itself. A Future made without an executor runs its done callbacks in the
    completing thread, and ``Executor.wake()`` triggers the executor's guard condition (thread-safe; rclpy's own
    ``spin_once_until_future_complete`` does the same)."""
    if executor is not None:
        future.add_done_callback(lambda _future: executor.wake())


@dataclass
class GoalSink:
    """Where the exits and the end of one goal's frame go: feedback, then the goal's coroutine."""

    handle: Any
    builder: Any                # the task's output builder (task_outputs)
    counters: diag.InputCounters
    now: Any                    # the runtime clock's now()
    slot: str = ""              # the runtime source this goal runs as ("" = none free)
    generation: int = 0         # the configuration the slot belongs to (a lifecycle re-configure makes new slots)
    job_id: int | None = None
    cancel_requested: bool = False
    last: Any = None            # the last exit's message
    done: Future = field(default_factory=Future)    # completed with the JobEnd by the output thread

    def exit(self, result, frame: out.FrameInfo) -> None:
        msg = self.builder.message(result, frame, result.timings.job_model_time).message
        msg.end_to_end_ms = (self.now() - frame.stamp) * 1000.0
        self.last = msg
        self.handle.publish_feedback(Perceive.Feedback(**self.builder.feedback_fields(msg)))

    def end(self, end, frame: out.FrameInfo) -> None:
        self.done.set_result(end)      # wakes the node's executor (wake_on_done): the goal resumes


class PerceiveAction:
    """The action server and its goals. ``configure`` makes the server and fresh slots, ``destroy`` removes it."""

    def __init__(self, node, settings, intake, callback_group):
        self.node = node
        self.settings = settings
        self.intake = intake
        self.log = node.get_logger()
        self._group = callback_group
        self.counters = diag.InputCounters()
        self.finished: dict[str, int] = {}       # terminal status -> goals
        self._lock = threading.Lock()
        self._goals: dict[bytes, GoalSink] = {}
        self._free_slots: list[str] = []
        self._pending = 0
        self._generation = 0
        self._server = None
        self.scheduler = None          # the runtime's AnytimeScheduler, once configured
        self.builder = None

    def configure(self, scheduler, builder) -> None:
        """A lifecycle cleanup -> configure starts from zero: new slots (goals of the old configuration do not
        return theirs) and no pending goals."""
        self.scheduler, self.builder = scheduler, builder
        with self._lock:
            self._generation += 1
            self._free_slots = [f"{ACTION_SOURCE}_{i}" for i in range(self.settings.max_concurrent_goals)]
            self._pending = 0
        self._server = ActionServer(
            self.node, Perceive, "perceive", self._execute, goal_callback=self.on_goal,
            cancel_callback=self.on_cancel, callback_group=self._group,
            goal_service_qos_profile=ACTION_SERVICE_QOS, result_service_qos_profile=ACTION_SERVICE_QOS,
            cancel_service_qos_profile=ACTION_SERVICE_QOS, feedback_pub_qos_profile=FEEDBACK_QOS)

    def destroy(self) -> None:
        if self._server is not None:
            self._server.destroy()
            self._server = None
        self.scheduler = None

    def in_flight(self) -> int:
        with self._lock:
            return len(self._goals) + self._pending

    def wait_finished(self, timeout: float) -> bool:
        """Wait (while the node's executor spins elsewhere) until no goal executes; whether none does."""
        end = time.monotonic() + timeout
        while True:
            with self._lock:
                if not self._goals:
                    return True
            if time.monotonic() > end:
                return False
            time.sleep(0.01)

    def _reject(self, reason: str, text: str, header) -> None:
        self.intake.reject(self.counters, LABEL, reason, text, header)

    def _busy_text(self) -> str:
        return f"{self.settings.max_concurrent_goals} goals in flight (max_concurrent_goals)"

    # ----- goal response and cancel ----------------------------------------------------------------------------
    def on_goal(self, goal) -> GoalResponse:
        self.counters.received += 1
        if not self.intake.active:
            self._reject("inactive", "the node is not active", goal.image.header)
            return GoalResponse.REJECT
        try:
            check_image(goal.image, int(self.settings.max_image_pixels))
        except ImageError as error:
            self._reject(error.reason, str(error), goal.image.header)
            return GoalResponse.REJECT
        if not math.isfinite(goal.deadline_ms):
            self._reject("bad_deadline", f"deadline_ms {goal.deadline_ms}", goal.image.header)
            return GoalResponse.REJECT
        with self._lock:
            busy = self._pending + len(self._goals) >= int(self.settings.max_concurrent_goals)
            if not busy:
                self._pending += 1
        if busy:
            self._reject("busy", self._busy_text(), goal.image.header)
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def on_cancel(self, goal_handle) -> CancelResponse:
        key = bytes(goal_handle.goal_id.uuid)
        with self._lock:
            sink = self._goals.get(key)
            if sink is None:              # accepted, not executing yet: _run sees is_cancel_requested
                return CancelResponse.ACCEPT
            sink.cancel_requested = True
            job_id = sink.job_id
        if job_id is not None and self.scheduler is not None:
            self.scheduler.cancel(job_id)
        return CancelResponse.ACCEPT

    # ----- execution -------------------------------------------------------------------------------------------
    async def _execute(self, goal_handle):
        """The action's execute callback, a coroutine: it awaits its job's end without holding an executor thread,
        so one single-threaded executor serves frames, goals, cancels and parameters while goals are in flight."""
        key = bytes(goal_handle.goal_id.uuid)
        sink = GoalSink(handle=goal_handle, builder=self.builder, counters=self.counters,
                        now=self.scheduler.clock.now if self.scheduler is not None else None)
        wake_on_done(sink.done, self.node.executor)
        with self._lock:
            self._pending = max(0, self._pending - 1)
            sink.generation = self._generation
            sink.slot = self._free_slots.pop(0) if self._free_slots else ""
            self._goals[key] = sink
        try:
            return await self._run(goal_handle, goal_handle.request, sink)
        finally:
            with self._lock:
                self._goals.pop(key, None)
                if sink.slot and sink.generation == self._generation:
                    self._free_slots.append(sink.slot)

    def _abort(self, goal_handle, result, stop_reason: str, reason: str, text: str, header):
        self._reject(reason, text, header)
        result.stop_reason = stop_reason
        goal_handle.abort()
        self._count("aborted")
        return result

    async def _run(self, goal_handle, request, sink: GoalSink):
        result = Perceive.Result()
        header = request.image.header
        if not sink.slot:            # accepted before a lifecycle re-configure, executing after it: all slots taken
            return self._abort(goal_handle, result, AnytimeSegmentation.STOP_FAILED, "busy", self._busy_text(), header)
        if not self.intake.active or self.scheduler is None:   # deactivated between acceptance and execution
            return self._abort(goal_handle, result, AnytimeSegmentation.STOP_SHUTDOWN, "inactive",
                               "the node is not active", header)
        try:
            rgb = image_to_rgb(request.image, int(self.settings.max_image_pixels))
        except ImageError as error:   # validated on arrival; only a changed max_image_pixels gets here
            return self._abort(goal_handle, result, AnytimeSegmentation.STOP_FAILED, error.reason, str(error), header)
        try:
            prepared = self.intake.prepare(rgb, header, self.counters, sink, LABEL)
        except Exception as error:  # noqa: BLE001 - e.g. out of memory: the goal fails, the node keeps serving
            return self._abort(goal_handle, result, AnytimeSegmentation.STOP_FAILED, "prepare_failed",
                               f"{type(error).__name__}: {error}", header)
        frame = prepared[0]
        deadline = None
        if request.deadline_ms > 0:
            deadline = frame.stamp + request.deadline_ms / 1000.0
        elif request.deadline_ms == 0 and self.settings.deadline_ms > 0:
            deadline = frame.stamp + self.settings.deadline_ms / 1000.0
        with self._lock:
            if sink.cancel_requested or goal_handle.is_cancel_requested:
                job_id = None
            else:
                job_id = sink.job_id = self.intake.submit(prepared, sink.slot, int(request.priority), deadline)
                self.counters.accepted += 1
        if job_id is None:
            goal_handle.canceled()
            result.stop_reason = AnytimeSegmentation.STOP_CANCELLED
            self._count("canceled")
            return result
        end = await sink.done        # every job ends exactly once (deactivate ends those in flight: shutdown)
        reason = end.reason.value if end is not None else AnytimeSegmentation.STOP_SHUTDOWN
        result.stop_reason = reason
        result.exits_completed = end.exits_delivered if end is not None else 0
        if sink.last is not None:
            last = sink.last
            last.is_final = True
            last.stop_reason = reason
            for name, value in self.builder.feedback_fields(last).items():
                setattr(result, name, value)
        if reason == "cancelled" and goal_handle.is_cancel_requested:
            goal_handle.canceled()
            self._count("canceled")
        elif result.exits_completed > 0:
            goal_handle.succeed()
            self._count("succeeded")
        else:
            goal_handle.abort()
            self._count("aborted")
        return result

    def _count(self, status: str) -> None:
        with self._lock:
            self.finished[status] = self.finished.get(status, 0) + 1
