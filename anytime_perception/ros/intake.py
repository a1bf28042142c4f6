"""The node's input side: camera subscriptions, decoding, stamps, priority events, submission, lost-frame counts.

Subscription callbacks only decode, resize and normalise a frame and submit it to the runtime; inference never
runs here. Every message a camera's publisher sent is accounted for, from the publisher's side: it was received
(then accepted or rejected with a reason) or it is counted ``lost``. A message is lost when the subscription
queue (keep-last) overwrote it before the node took it, or when the transport dropped it; both show as a gap in the
publication sequence numbers of its publisher (rclpy's message info), which :class:`PublisherSequences` counts.
The DDS message-lost events are reported beside (``lost.dds_events``); they are not added, since the messages
they report leave gaps too.
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ..data.preprocess import Preprocessor
from ..msg import PriorityEvent
from ..runtime.stats import Histogram
from . import diagnostics as diag
from . import outputs as out
from .image_codec import ImageError, compressed_to_rgb, image_to_rgb
from .publishing import EVENT_QOS, IMAGE_QOS
from .throttle import ThrottledLog

DEFAULT_CAMERA_SOURCE = "image"
#: rmw's "sequence numbers not supported" value.
SEQUENCE_UNSUPPORTED = 2**64 - 1
#: Publishers remembered per subscription (a restarted camera driver is a new publisher).
MAX_PUBLISHERS = 64


@dataclass
class ActiveEvent:
    priority: int
    deadline_ms: float
    remaining: int | None       # frames left; None = until the next event
    reason: str


class PublisherSequences:
    """Messages a subscription never delivered, from the gaps in each publisher's sequence numbers.

    Counting starts at the first message seen from a publisher (a camera that ran before the node started is not
    "lost" for what it sent earlier). Without sequence numbers (an rmw that has none) ``gap`` returns 0 and
    ``available`` stays False; the node then reports the DDS lost events as ``lost``."""

    def __init__(self):
        self._last: OrderedDict[bytes, int] = OrderedDict()
        self.available = False

    def gap(self, info: dict | None) -> int:
        """Messages of this message's publisher sent since the previous one and never delivered."""
        sequence = (info or {}).get("publication_sequence_number")
        gid = (info or {}).get("publisher_gid")
        if not sequence or sequence == SEQUENCE_UNSUPPORTED or not gid:
            return 0
        self.available = True
        key = bytes(gid["data"])
        previous = self._last.pop(key, None)
        self._last[key] = sequence
        if len(self._last) > MAX_PUBLISHERS:
            self._last.popitem(last=False)
        if previous is None or sequence <= previous:
            return 0
        return sequence - previous - 1


@dataclass
class CameraInput:
    name: str                   # "" for the one unnamed input
    source: str                 # the runtime's source name
    prefix: str                 # "" or "<name>/"
    counters: diag.InputCounters = field(default_factory=diag.InputCounters)
    camera_model: out.CameraModel = field(default_factory=out.CameraModel)
    event: ActiveEvent | None = None
    subscriptions: list = field(default_factory=list)
    sequences: PublisherSequences = field(default_factory=PublisherSequences)
    sink: Any = None            # publishing.CameraSink: where this camera's frames go
    image_topic: str = ""

    @property
    def label(self) -> str:
        return f"camera {self.name!r}" if self.name else f"input {self.image_topic or 'image'}"


def make_cameras(names: list[str]) -> list[CameraInput]:
    """The camera inputs for the ``cameras`` parameter (one unnamed input on ``image`` when empty)."""
    return [CameraInput(name=n, source=n or DEFAULT_CAMERA_SOURCE, prefix=f"{n}/" if n else "") for n in names or [""]]


class Intake:
    """Takes frames from the cameras (and prepares the action's goal images) and submits them to the runtime."""

    def __init__(self, node, settings, log, throttled: ThrottledLog, callback_group, control_group):
        self.node = node
        self.settings = settings
        self.log = log
        self._throttled = throttled
        self._group = callback_group
        self._control_group = control_group
        self._lock = threading.Lock()
        self.cameras: list[CameraInput] = []
        self.scheduler = None
        self.preprocessor: Preprocessor | None = None
        self.active = False
        self.frame_count = 0
        self.events_ignored = 0          # priority events for unknown sources or with bad values
        self.input_time = Histogram()    # header.stamp -> frame submitted to the runtime (seconds; stamped frames)
        self._event_sub = None
        self._warned_unstamped = False
        self._warned_bad_stamp: set[str] = set()

    def configure(self, cameras: list[CameraInput], scheduler, preprocessor: Preprocessor) -> None:
        self.cameras, self.scheduler, self.preprocessor = cameras, scheduler, preprocessor
        for camera in cameras:
            camera.image_topic = self.node.resolve_topic_name(camera.prefix + "image")
            camera.camera_model.warn = lambda text, c=camera: self.log.warning(f"{c.label}: {text}")

    # ----- subscriptions ---------------------------------------------------------------------------------------
    def start(self) -> None:
        for camera in self.cameras:
            camera.subscriptions = [
                self._subscribe_image(camera, Image, "image", compressed=False),
                self.node.create_subscription(CameraInfo, camera.prefix + "camera_info",
                                              lambda m, c=camera: c.camera_model.update(m), IMAGE_QOS,
                                              callback_group=self._group)]
            if self.settings.subscribe_compressed:
                camera.subscriptions.append(self._subscribe_image(camera, CompressedImage, "image/compressed",
                                                                  compressed=True))
        self._event_sub = self.node.create_subscription(PriorityEvent, "priority_event", self.on_priority_event,
                                                        EVENT_QOS, callback_group=self._control_group)
        self.active = True

    def stop(self) -> None:
        self.active = False
        for camera in self.cameras:
            for subscription in camera.subscriptions:
                self.node.destroy_subscription(subscription)
            camera.subscriptions = []
        if self._event_sub is not None:
            self.node.destroy_subscription(self._event_sub)
            self._event_sub = None

    def _subscribe_image(self, camera: CameraInput, msg_type, topic: str, compressed: bool):
        """An input subscription whose callback also gets the message info (for the sequence gaps) and whose DDS
        lost events are counted; its QoS is overridable by parameters (qos_overrides./<topic>.subscription.*)."""
        return self.node.create_subscription(
            msg_type, camera.prefix + topic,
            lambda msg, info, c=camera: self.on_image(c, msg, compressed=compressed, info=info),
            IMAGE_QOS, callback_group=self._group,
            event_callbacks=SubscriptionEventCallbacks(message_lost=lambda event, c=camera: self._on_lost(c, event)),
            qos_overriding_options=QoSOverridingOptions.with_default_policies())

    def _on_lost(self, camera: CameraInput, event) -> None:
        camera.counters.lost_dds_events += int(event.total_count_change)
        self._throttled(self.log.warning, ("lost", camera.name),
                        f"{camera.label}: {event.total_count_change} input message(s) lost in transport "
                        f"({event.total_count} in total); large images need the Fast DDS profile (README)")

    def reject(self, counters: diag.InputCounters, label: str, reason: str, text: str, header) -> None:
        counters.reject(reason)
        self._throttled(self.log.warning, ("reject", label, reason),
                        f"{label}: rejected frame (stamp {header.stamp.sec}.{header.stamp.nanosec:09d}, frame_id "
                        f"{header.frame_id!r}): {reason}: {text} [{counters.rejected[reason]} rejected for {reason}]")

    # ----- frames ----------------------------------------------------------------------------------------------
    def on_image(self, camera: CameraInput, msg, compressed: bool = False, info: dict | None = None) -> None:
        """Subscription callback: count, decode, resize, normalise, submit. No inference here."""
        counters = camera.counters
        counters.received += 1
        gap = camera.sequences.gap(info)
        if gap:
            counters.lost_in_queue += gap
            self._throttled(self.log.warning, ("overwritten", camera.name),
                            f"{camera.label}: {gap} frame(s) of its publisher never reached the node (overwritten "
                            "in the subscription queue or lost in transport: frames arrive faster than the node "
                            "decodes them)")
        counters.sequence_numbers = camera.sequences.available
        if not self.active:
            self.reject(counters, camera.label, "inactive", "the node is not active", msg.header)
            return
        max_pixels = int(self.settings.max_image_pixels)
        try:
            rgb = compressed_to_rgb(msg, max_pixels) if compressed else image_to_rgb(msg, max_pixels)
        except ImageError as error:
            self.reject(counters, camera.label, error.reason, str(error), msg.header)
            return
        except Exception as error:  # noqa: BLE001 - a malformed message must never stop the node
            self.reject(counters, camera.label, "decode_failed", f"{type(error).__name__}: {error}", msg.header)
            return
        priority = deadline = None
        with self._lock:
            event = camera.event
            if event is not None:
                priority = event.priority
                if event.remaining is not None:
                    event.remaining -= 1
                    if event.remaining <= 0:
                        camera.event = None
                counters.event_frames += 1
        try:
            prepared = self.prepare(rgb, msg.header, counters, camera.sink, camera.label)
            if event is not None and event.deadline_ms > 0:
                deadline = prepared[0].stamp + event.deadline_ms / 1000.0
            self.submit(prepared, camera.source, priority, deadline)
        except Exception as error:  # noqa: BLE001 - out of memory or a resize failure must not stop the node
            self.reject(counters, camera.label, "prepare_failed", f"{type(error).__name__}: {error}", msg.header)
            return
        counters.accepted += 1
        if prepared[0].stamped:
            self.input_time.add(max(0.0, self.scheduler.clock.now() - prepared[0].stamp))

    def frame_stamp(self, header, counters: diag.InputCounters, label: str) -> tuple[float, bool]:
        """(seconds the runtime times the frame from, whether that is the header's stamp). A zero stamp (unstamped)
        or one further than max_stamp_skew_s from the node clock (bad_stamp) is replaced by the arrival time, so it
        sets no deadline and no latency from a meaningless origin."""
        now = self.scheduler.clock.now()
        if header.stamp.sec == 0 and header.stamp.nanosec == 0:
            counters.unstamped += 1
            if not self._warned_unstamped:
                self._warned_unstamped = True
                self.log.warning("frames without header.stamp: deadlines and latencies are measured from their "
                                 "arrival instead (published outputs keep the zero stamp)")
            return now, False
        try:
            stamp = Time.from_msg(header.stamp).nanoseconds * 1e-9
        except ValueError:        # a negative stamp: no Time represents it
            stamp = -math.inf
        skew = float(self.settings.max_stamp_skew_s)
        if skew > 0 and abs(stamp - now) > skew:
            counters.bad_stamp += 1
            if label not in self._warned_bad_stamp:
                self._warned_bad_stamp.add(label)
                self.log.warning(f"{label}: header.stamp {header.stamp.sec}.{header.stamp.nanosec:09d} is more "
                                 f"than max_stamp_skew_s = {skew:g} s from the node clock ({now:.3f}): such frames "
                                 "are counted (bad_stamp) and timed from their arrival (deadlines, latencies); is "
                                 "the publisher's clock synchronised, or use_sim_time set on one side only? (logged "
                                 "once)")
            return now, False
        return stamp, True

    def prepare(self, rgb, header, counters: diag.InputCounters, sink, label: str):
        """(FrameInfo, model input tensor) of a decoded frame."""
        height, width = rgb.shape[:2]
        resized = self.preprocessor.resized(rgb)
        tensor = self.preprocessor.tensor(resized)
        stamp, stamped = self.frame_stamp(header, counters, label)
        with self._lock:
            self.frame_count += 1
            number = self.frame_count
        overlay_rgb = rgb if self.settings.output_size == "input" else resized
        return out.FrameInfo(header=header, stamp=stamp, number=number, width=width, height=height, rgb=overlay_rgb,
                             stamped=stamped, sink=sink), tensor

    def submit(self, prepared, source: str, priority: int | None, deadline: float | None) -> int:
        from ..runtime import Job

        frame, tensor = prepared
        job = Job(tensor, stamp=frame.stamp, frame_id=frame.header.frame_id, source=source, priority=priority,
                  deadline=deadline, meta={"frame": frame})
        return self.scheduler.submit(job)

    # ----- priority events -------------------------------------------------------------------------------------
    def on_priority_event(self, msg: PriorityEvent) -> None:
        targets = [c for c in self.cameras
                   if not msg.source or msg.source in (c.name, c.image_topic, c.prefix + "image")]
        if not targets:
            self.log.warning(f"priority event {msg.reason!r} for unknown source {msg.source!r} ignored; sources: "
                             + ", ".join(repr(c.name or c.image_topic) for c in self.cameras))
            self.events_ignored += 1
            return
        if msg.deadline_ms < 0 or not math.isfinite(msg.deadline_ms):
            self.log.warning(f"priority event {msg.reason!r} with deadline_ms {msg.deadline_ms} ignored (must be "
                             ">= 0)")
            self.events_ignored += 1
            return
        event = ActiveEvent(priority=int(msg.priority), deadline_ms=float(msg.deadline_ms),
                            remaining=int(msg.num_frames) or None, reason=msg.reason)
        with self._lock:
            for camera in targets:
                camera.event = ActiveEvent(**vars(event))
                camera.counters.events += 1
        frames = f"next {msg.num_frames} frame(s)" if msg.num_frames else "frames until the next event"
        deadline = f", deadline {msg.deadline_ms:g} ms" if msg.deadline_ms > 0 else ""
        self.log.info(f"priority event {msg.reason!r}: {frames} of "
                      f"{', '.join(c.label for c in targets)} at priority {msg.priority}{deadline}")

