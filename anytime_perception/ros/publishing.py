"""The node's output side: QoS, the publishers of each camera, the output thread, and the camera sink.

The runtime's worker hands every exit and every job end to :class:`OutputThread` (a queue, so the next model step
never waits for message building and publication). The thread gives each to the sink of its frame
(``FrameInfo.sink``): :class:`CameraSink` for camera frames (progressive, per-exit and ``final/`` topics, and one
``frame_end`` per frame), :class:`~.perceive_action.GoalSink` for action goals. Nothing here knows the task: the
task's output builder (:mod:`.task_outputs`) makes the messages.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, Image
from visualization_msgs.msg import MarkerArray

from ..msg import FrameEnd
from ..runtime.stats import Histogram
from . import outputs as out
from .diagnostics import OUTPUT_BACKLOG_WARN
from .throttle import ThrottledLog

#: QoS of the custom result messages and markers: reliable, so a planner gets every exit it keeps up with.
RESULT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
#: frame_end: reliable and deep (the messages are tiny), so a planner that falls behind for a few frames still
#: learns the end of each.
FRAME_END_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
#: label_info: latched, late subscribers get the class map.
LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
#: Image and camera_info inputs: sensor data (best effort, keep last 5): matches any camera driver's publisher.
IMAGE_QOS = qos_profile_sensor_data
#: Image and camera_info outputs: reliable, keep last 5. A reliable publisher matches reliable and best-effort
#: subscribers alike (a best-effort one would leave reliable subscribers, the default of many tools, with nothing),
#: and with keep-last history publishing never blocks on a slow subscriber. Overridable by parameters.
OUTPUT_IMAGE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE)
EVENT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)


class OutputGroup:
    """The publishers of one output namespace: the progressive one (``""``), ``exit_<k>/`` or ``final/``."""

    def __init__(self, create_publisher: Callable, prefix: str, builder):
        overrides = QoSOverridingOptions.with_default_policies()
        self.result = create_publisher(builder.result_type, prefix + builder.result_topic, RESULT_QOS)
        self.images = {kind: (create_publisher(Image, f"{prefix}{kind}/image", OUTPUT_IMAGE_QOS,
                                               qos_overriding_options=overrides),
                              create_publisher(CameraInfo, f"{prefix}{kind}/camera_info", OUTPUT_IMAGE_QOS,
                                               qos_overriding_options=overrides))
                       for kind in builder.image_kinds}
        self.markers = (create_publisher(MarkerArray, prefix + builder.marker_topic, RESULT_QOS)
                        if builder.marker_topic else None)

    def publishers(self) -> list:
        pubs = [self.result] + [p for pair in self.images.values() for p in pair]
        return pubs + ([self.markers] if self.markers is not None else [])

    def wanted(self, kind: str) -> bool:
        """Whether anything subscribes to output ``kind`` (an image kind, or "markers") of this group."""
        image, info = self.images[kind] if kind in self.images else (self.markers, None)
        return any(p is not None and p.get_subscription_count() > 0 for p in (image, info))


class CameraSink:
    """Where a camera's frames go: its output groups and its ``frame_end`` publisher. One per camera; every frame
    of the camera carries it as ``FrameInfo.sink``."""

    def __init__(self, camera, create_publisher: Callable, builder, settings, num_exits: int,
                 now: Callable[[], float], log, throttled: ThrottledLog):
        self.camera = camera
        self.builder = builder
        self.settings = settings
        self.num_exits = num_exits
        self._now = now
        self._log = log
        self._throttled = throttled
        prefix = camera.prefix
        self.progressive = OutputGroup(create_publisher, prefix, builder)
        self.per_exit: dict[Any, OutputGroup] = {}
        if settings.per_exit_topics:
            for k in range(1, num_exits + 1):
                self.per_exit[k] = OutputGroup(create_publisher, f"{prefix}exit_{k}/", builder)
            self.per_exit["final"] = OutputGroup(create_publisher, f"{prefix}final/", builder)
        self.frame_end = create_publisher(FrameEnd, prefix + "frame_end", FRAME_END_QOS)

    @property
    def counters(self):
        return self.camera.counters

    def publishers(self) -> list:
        groups = [self.progressive, *self.per_exit.values()]
        return [p for group in groups for p in group.publishers()] + [self.frame_end]

    def _wanted(self, groups: list[OutputGroup], kind: str) -> bool:
        return not self.settings.lazy_outputs or any(group.wanted(kind) for group in groups)

    def exit(self, result, frame: out.FrameInfo) -> None:
        """Publish one exit on the progressive topics (and exit_<k>/, final/ with per_exit_topics)."""
        groups = [self.progressive]
        if self.per_exit:
            groups.append(self.per_exit[result.exit_index])
            if result.is_final:
                groups.append(self.per_exit["final"])
        exit_message = self.builder.message(result, frame, result.timings.job_model_time)
        exit_message.message.end_to_end_ms = (self._now() - frame.stamp) * 1000.0
        for group in groups:
            group.result.publish(exit_message.message)
        self.builder.publish_images(exit_message, frame, self.camera, groups, self._wanted,
                                    lambda targets, kind, image: self._publish_image(targets, kind, image, frame))

    def _publish_image(self, groups: list[OutputGroup], kind: str, image, frame: out.FrameInfo) -> None:
        info = self.camera.camera_model.for_size(frame.header, frame.width, frame.height, image.width, image.height)
        for group in groups:
            image_pub, info_pub = group.images[kind]
            image_pub.publish(image)
            info_pub.publish(info)

    def end(self, end, frame: out.FrameInfo) -> None:
        """The frame is over: one ``frame_end``, whatever ended it."""
        self.frame_end.publish(FrameEnd(header=frame.header, frame_number=frame.number % (1 << 32),
                                        exits_delivered=min(int(end.exits_delivered), 255),
                                        num_exits=self.num_exits, stop_reason=end.reason.value))
        camera = self.camera
        if end.reason.value == "expired":
            age = self._now() - frame.stamp
            budget = (end.deadline - frame.stamp) * 1000.0 if end.deadline is not None else float("nan")
            self._throttled(self._log.warning, ("expired", camera.name),
                            f"{camera.label}: frame {frame.number} expired before it started: its stamp is "
                            f"{age * 1000:.0f} ms old, its budget {budget:.0f} ms. If every frame expires, the "
                            "publisher's clock differs from this node's (use_sim_time?)")
        else:
            self._log.debug(f"frame {frame.number} of {camera.label} ended with {end.reason.value} after "
                            f"{end.exits_delivered} exits")


class OutputThread:
    """The runtime's results and job ends, in order, to the sinks of their frames, on a thread of its own.

    ``context_ok`` tells whether the node's context still publishes: after an external shutdown (a launch system
    ending the process group) the last results are dropped quietly instead of logging an error for each."""

    def __init__(self, name: str, log, context_ok: Callable[[], bool], throttled: ThrottledLog):
        self._name = name
        self._log = log
        self._context_ok = context_ok
        self._throttled = throttled
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.peak = 0                                 # deepest backlog since start
        self._recent_peak = 0                         # ... since the last take_recent_peak()
        self.output_time: dict[int, Histogram] = {}   # exit computed -> its messages published (seconds)
        self.dropped_after_shutdown = 0

    # ----- the runtime's callbacks (its worker thread) ---------------------------------------------------------
    def on_result(self, result) -> None:
        self._queue.put((result, time.perf_counter()))

    def on_end(self, end) -> None:
        self._queue.put(end)

    # ----- control ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Deliver everything queued so far, then end the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def depth(self) -> int:
        return self._queue.qsize()

    def take_recent_peak(self) -> int:
        """The deepest backlog since the previous call (what a report covers), at least the current one."""
        peak, self._recent_peak = max(self._recent_peak, self.depth()), 0
        return peak

    # ----- the thread ------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            depth = self._queue.qsize()
            self.peak = max(self.peak, depth)
            self._recent_peak = max(self._recent_peak, depth)
            if depth > OUTPUT_BACKLOG_WARN:
                self._throttled(self._log.warning, "output backlog",
                                f"{depth} exits wait for publication: the output thread is behind the model "
                                "(each holds its frame and tensors); fewer image outputs, output_size:=exit or "
                                "lazy_outputs help")
            note = self._queue.get()
            if note is None:
                return
            self._deliver(note)

    def _deliver(self, note) -> None:
        is_result = isinstance(note, tuple)
        result, computed_at = note if is_result else (note, None)
        frame: out.FrameInfo = result.job.meta["frame"]
        try:
            if is_result:
                frame.sink.exit(result, frame)
                counters = frame.sink.counters
                counters.published[result.exit_index] = counters.published.get(result.exit_index, 0) + 1
                self.output_time.setdefault(result.exit_index, Histogram()).add(time.perf_counter() - computed_at)
            else:
                frame.sink.end(result, frame)
        except Exception as error:  # noqa: BLE001 - the output thread must keep going
            if not self._context_ok():
                self.dropped_after_shutdown += 1    # the process is ending: nothing can be published any more
                return
            what = f"exit {result.exit_index}" if is_result else "the end"
            if is_result:
                frame.sink.counters.output_errors += 1
            self._throttled(self._log.error, ("output", type(error).__name__),
                            f"could not publish {what} of frame {frame.number}: {type(error).__name__}: {error}")
