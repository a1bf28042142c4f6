"""``anytime_node``: progressive segmentation or pose on camera topics, every exit published the moment it exists.

    anytime_node --ros-args -p model:=adpc_hrnet_w18s_seg -p input_height:=288 -p input_width:=384 \\
                 -p deadline_ms:=150.0 -r image:=/camera/image_raw
    ros2 launch anytime_perception seg.launch.py image:=/camera/image_raw        (a ROS 2 install)

The node is a thin adapter over :class:`anytime_perception.runtime.AnytimeExecutor`: subscription callbacks only
decode, resize and normalise a frame and submit it; the runtime's worker thread runs the model one step at a time
(so a newer frame, a priority event, an action cancel or a deadline takes effect within one step) and calls back
with each exit, which is turned into messages and published from that thread. Inference never runs in a
subscription callback.

Topics (relative names: namespaces and remaps apply; with ``cameras:=[front, rear]`` everything below except
``label_info``, ``priority_event`` and ``perceive`` is repeated under ``front/`` and ``rear/``):

    in   image (sensor_msgs/Image), image/compressed (sensor_msgs/CompressedImage, if subscribe_compressed),
         camera_info (sensor_msgs/CameraInfo, optional), priority_event (anytime_perception/PriorityEvent)
    out  segmentation (AnytimeSegmentation) | pose (AnytimePose), every exit, reliable
         labels/{image,camera_info}, confidence/{image,camera_info}, computed/{image,camera_info},
         overlay/{image,camera_info} (segmentation); pose_markers (MarkerArray), overlay/{...} (pose)
         exit_<k>/..., final/... (same sub-structure, if per_exit_topics)
         label_info (LabelInfo, transient local), /diagnostics (DiagnosticArray)
    action perceive (anytime_perception/action/Perceive)

Every output carries the input's header unchanged. The parameters are described in :mod:`.params` (and by
``ros2 param describe``); the README has the tables and the semantics of priority events and the action.
"""
from __future__ import annotations

import math
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import cv2
import numpy as np
import rclpy
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType,
                                SetParametersResult)
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data)
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.task import Future
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from diagnostic_msgs.msg import DiagnosticArray
from visualization_msgs.msg import MarkerArray

from ..action import Perceive
from ..msg import AnytimePose, AnytimeSegmentation, LabelInfo, PriorityEvent
from ..runtime.stats import Histogram, SourceStats
from . import diagnostics as diag
from . import outputs as out
from .fastdds import use_large_image_profile
from .image_codec import ImageError, check_image, compressed_to_rgb, image_to_rgb
from .params import CALIBRATED_UNTRAINED, PARAMETERS, ParamSpec, Settings, camera_parameters, check, spec_of
from .weights import LoadedModel, ModelLoadError, load_model, normalise, normalizer

#: QoS of the custom result messages and markers: reliable, so a planner gets every exit it keeps up with.
RESULT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
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
ACTION_SOURCE = "action"
DEFAULT_CAMERA_SOURCE = "image"
WARMUP_FRAMES = 2


class ConfigurationError(RuntimeError):
    """The node cannot start as configured (bad parameter, model or checkpoint); the message says why."""


def stamp_seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


class RosClock:
    """The runtime's clock on ROS time: ``now()`` is the node clock (sim time with use_sim_time), the timebase of
    header stamps and deadlines; ``monotonic()`` measures durations."""

    def __init__(self, node: Node):
        self._clock = node.get_clock()

    def now(self) -> float:
        return self._clock.now().nanoseconds * 1e-9

    def monotonic(self) -> float:
        return time.perf_counter()


class _ThrottledLog:
    """Logs the first of each kind at once, then at most one line per ``period`` seconds per kind, each saying how
    many were not logged since the previous line (so every event is accounted for in the log)."""

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


# ----- outputs of one camera --------------------------------------------------------------------------------------
class OutputGroup:
    """The publishers of one output namespace: the progressive one (``""``), ``exit_<k>/`` or ``final/``."""

    def __init__(self, core: "AnytimePerception", prefix: str, task: str):
        create = core.create_publisher
        overrides = QoSOverridingOptions.with_default_policies()
        self.result = create(AnytimePose if task == "pose" else AnytimeSegmentation,
                             prefix + ("pose" if task == "pose" else "segmentation"), RESULT_QOS)
        kinds = ("overlay",) if task == "pose" else ("labels", "confidence", "computed", "overlay")
        self.images = {kind: (create(Image, f"{prefix}{kind}/image", OUTPUT_IMAGE_QOS,
                                     qos_overriding_options=overrides),
                              create(CameraInfo, f"{prefix}{kind}/camera_info", OUTPUT_IMAGE_QOS,
                                     qos_overriding_options=overrides))
                       for kind in kinds}
        self.markers = create(MarkerArray, prefix + "pose_markers", RESULT_QOS) if task == "pose" else None

    def publishers(self) -> list:
        pubs = [self.result] + [p for pair in self.images.values() for p in pair]
        return pubs + ([self.markers] if self.markers is not None else [])


@dataclass
class ActiveEvent:
    priority: int
    deadline_ms: float
    remaining: int | None       # frames left; None = until the next event
    reason: str


@dataclass
class CameraInput:
    name: str                   # "" for the one unnamed input
    source: str                 # the runtime's source name
    prefix: str                 # "" or "<name>/"
    counters: diag.InputCounters = field(default_factory=diag.InputCounters)
    camera_model: out.CameraModel = field(default_factory=out.CameraModel)
    event: ActiveEvent | None = None
    subscriptions: list = field(default_factory=list)
    progressive: OutputGroup | None = None
    per_exit: dict[Any, OutputGroup] = field(default_factory=dict)
    image_topic: str = ""

    @property
    def label(self) -> str:
        return f"camera {self.name!r}" if self.name else f"input {self.image_topic or 'image'}"


@dataclass
class GoalState:
    handle: Any
    slot: str = ""              # the runtime source this goal runs as ("" = none free)
    generation: int = 0         # the configuration the slot belongs to (a lifecycle re-configure makes new slots)
    job_id: int | None = None
    cancel_requested: bool = False
    last: Any = None            # the last exit's message
    end: Any = None             # the runtime's JobEnd
    done: Future = field(default_factory=Future)    # completed with the JobEnd by the output thread


def wake_on_done(future: Future, executor: Executor | None) -> None:
    """Make completing ``future`` from any thread wake ``executor``, so that a coroutine task awaiting it resumes
    at once. rclpy resumes a pending coroutine only when its executor wakes; a Future completed outside the
    executor's thread wakes nothing by itself. A Future made without an executor runs its done callbacks in the
    completing thread, and ``Executor.wake()`` triggers the executor's guard condition (thread-safe; rclpy's own
    ``spin_once_until_future_complete`` does the same)."""
    if executor is not None:
        future.add_done_callback(lambda _future: executor.wake())


# ----- the node's core, shared by the plain and the lifecycle node -------------------------------------------------
class AnytimePerception:
    """Everything anytime_node does, on a given rclpy node: ``declare()`` the parameters, ``configure()`` (model,
    runtime, publishers, action server), ``activate()`` (subscriptions, worker, diagnostics), ``deactivate()``,
    ``cleanup()``. :class:`AnytimeNode` runs all of it at construction; :class:`AnytimeLifecycleNode` maps it on
    lifecycle transitions."""

    def __init__(self, node: Node, create_publisher: Callable | None = None,
                 model_loader: Callable[[Settings], LoadedModel] | None = None):
        self.node = node
        self._model_loader = model_loader
        self.create_publisher = create_publisher or node.create_publisher
        self.log = node.get_logger()
        self.settings = Settings()
        self.loaded: LoadedModel | None = None
        self.executor = None
        self.cameras: list[CameraInput] = []
        self.labels: out.LabelMap | None = None
        self.action_counters = diag.InputCounters()
        self.goals_finished: dict[str, int] = {}
        self.frame_count = 0
        self.events_ignored = 0       # priority events for unknown sources or with bad values
        self.active = False
        self._lock = threading.Lock()
        self._goals: dict[bytes, GoalState] = {}
        self._free_slots: list[str] = []
        self._goals_pending = 0
        self._generation = 0
        self._output_time: dict[int, Histogram] = {}    # exit computed -> its messages published (seconds)
        self._input_time = Histogram()                   # header.stamp -> frame submitted to the runtime (seconds)
        self._previous_counters: dict[str, diag.InputCounters] = {}
        self._failed_reported: dict[str, int] = {}
        self._throttled = _ThrottledLog()
        self._scale = self._offset = None
        self._input_group = MutuallyExclusiveCallbackGroup()
        self._control_group = MutuallyExclusiveCallbackGroup()
        self._action_group = ReentrantCallbackGroup()
        self._publishers: list = []
        # Results go from the runtime's worker to this queue and are turned into messages and published by the
        # output thread, in order, so the next model step never waits for message building and publication.
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._output_thread: threading.Thread | None = None
        self.outbox_peak = 0
        self._event_sub = self._label_pub = self._diag_pub = self._diag_timer = self._action_server = None
        self._warned_unstamped = False

    # ----- parameters ---------------------------------------------------------------------------------------------
    def declare(self) -> None:
        """Declare every parameter with its descriptor; raises ConfigurationError for a bad initial value."""
        for spec in PARAMETERS:
            self._declare(spec)
        for camera in self.settings.camera_names:
            for spec in camera_parameters(camera, self.settings.values["priority"],
                                          self.settings.values["deadline_ms"]):
                self._declare(spec)
        reason = check(self.settings.values)
        if reason:
            raise ConfigurationError(f"bad parameter: {reason}")
        self.node.add_on_set_parameters_callback(self._validate_parameters)
        self.node.add_post_set_parameters_callback(self._apply_parameters)

    def _declare(self, spec: ParamSpec) -> None:
        kind = {"bool": ParameterType.PARAMETER_BOOL, "integer": ParameterType.PARAMETER_INTEGER,
                "double": ParameterType.PARAMETER_DOUBLE, "string": ParameterType.PARAMETER_STRING,
                "string_array": ParameterType.PARAMETER_STRING_ARRAY}[spec.type_name]
        description = spec.description + (f" (one of: {', '.join(spec.choices)})" if spec.choices else "")
        descriptor = ParameterDescriptor(name=spec.name, type=kind, description=description,
                                         read_only=spec.read_only)
        if spec.choices:
            descriptor.additional_constraints = f"one of: {', '.join(spec.choices)}"
        if spec.range is not None and spec.type_name == "integer":
            descriptor.integer_range = [IntegerRange(from_value=int(spec.range[0]), to_value=int(spec.range[1]),
                                                     step=1)]
        elif spec.range is not None:
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(spec.range[0]),
                                                                  to_value=float(spec.range[1]), step=0.0)]
        default = Parameter.Type.STRING_ARRAY if spec.type_name == "string_array" else spec.default
        try:
            value = self.node.declare_parameter(spec.name, default, descriptor).value
        except InvalidParameterTypeException as error:
            raise ConfigurationError(f"parameter {spec.name} must be of type {spec.type_name} "
                                     f"(e.g. {spec.default!r}): {error}") from None
        except InvalidParameterValueException as error:
            raise ConfigurationError(f"bad value for parameter {spec.name}: {error}") from None
        self.settings.values[spec.name] = [] if value is None and spec.type_name == "string_array" else value

    def _validate_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        values = dict(self.settings.values)
        changed = []
        for parameter in parameters:
            if spec_of(parameter.name) is None:
                continue
            if parameter.name not in values:
                return SetParametersResult(successful=False, reason=f"{parameter.name} is not a parameter of "
                                           "this node (per-camera parameters exist for the names in `cameras`)")
            values[parameter.name] = parameter.value
            changed.append(parameter.name)
        if not changed:
            return SetParametersResult(successful=True)
        reason = check(values, changed)
        if reason:
            self.log.warning(f"rejected parameter change: {reason}")
            return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _apply_parameters(self, parameters: list[Parameter]) -> None:
        changed = [p for p in parameters if p.name in self.settings.values]
        for parameter in changed:
            self.settings.values[parameter.name] = parameter.value
            self.log.info(f"parameter {parameter.name} set to {parameter.value!r}")
        names = {p.name for p in changed}
        if self.executor is not None:
            if any(n.startswith("policies.") for n in names):
                self.executor.set_policies(self.settings.policies())
            if names & {"priority", "deadline_ms"} or any(n.startswith("cameras.") for n in names):
                self._configure_sources()
        if "diagnostics_period_s" in names and self._diag_timer is not None:
            self.node.destroy_timer(self._diag_timer)
            self._diag_timer = self.node.create_timer(self.settings.diagnostics_period_s, self.publish_diagnostics,
                                                      callback_group=self._control_group)

    # ----- configure: model, runtime, publishers, action server ---------------------------------------------------
    def configure(self) -> None:
        from ..runtime import AnytimeExecutor

        s = self.settings
        if s.torch_threads:
            import torch

            torch.set_num_threads(int(s.torch_threads))
        if self._model_loader is None and s.checkpoint.strip() == CALIBRATED_UNTRAINED and s.model.startswith("adpc_"):
            self.log.info(f"drawing calibrated untrained weights for {s.model} on the shipped clip (one-off, a few "
                          "seconds)")
        try:
            if self._model_loader is not None:
                self.loaded = self._model_loader(s)
            else:
                self.loaded = load_model(s.model, s.checkpoint, s.device, s.input_size, s.execution)
        except ModelLoadError as error:
            raise ConfigurationError(str(error)) from None
        model = self.loaded.model
        if self.loaded.untrained:
            self.log.warning(f"NO TRAINED WEIGHTS: {self.loaded.weights}. Set checkpoint:=/path/to/weights.pth "
                             "for real results.")
        self._scale, self._offset = (np.asarray(v, np.float32) for v in normalizer(model))
        self.labels = out.LabelMap(self.loaded.task, model.config.outputs)
        try:
            latency = self._warm_up(model, s.input_size)
        except Exception as error:  # noqa: BLE001 - e.g. out of device memory: one clear line, no traceback
            raise ConfigurationError(f"warm-up of {s.model} on {s.device} failed: {type(error).__name__}: "
                                     f"{error}") from None
        self.executor = AnytimeExecutor(model, policies=s.policies(), clock=RosClock(self.node),
                                        on_result=self._queue_result, on_end=self._outbox.put, latency_model=latency,
                                        name=f"{self.node.get_name()}-runtime")
        names = s.camera_names or [""]
        self.cameras = [CameraInput(name=n, source=n or DEFAULT_CAMERA_SOURCE, prefix=f"{n}/" if n else "")
                        for n in names]
        self._configure_sources()
        for camera in self.cameras:
            camera.image_topic = self.node.resolve_topic_name(camera.prefix + "image")
            camera.camera_model.warn = lambda text, c=camera: self.log.warning(f"{c.label}: {text}")
            camera.progressive = OutputGroup(self, camera.prefix, self.loaded.task)
            if s.per_exit_topics:
                for k in range(1, model.num_exits + 1):
                    camera.per_exit[k] = OutputGroup(self, f"{camera.prefix}exit_{k}/", self.loaded.task)
                camera.per_exit["final"] = OutputGroup(self, f"{camera.prefix}final/", self.loaded.task)
        self._label_pub = self.create_publisher(LabelInfo, "label_info", LATCHED_QOS)
        self._diag_pub = self.node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # A lifecycle cleanup -> configure starts from zero: new slots (goals of the old configuration do not
        # return theirs), no pending goals, fresh counters to report deltas against.
        self._generation += 1
        self._free_slots = [f"{ACTION_SOURCE}_{i}" for i in range(s.max_concurrent_goals)]
        self._goals_pending = 0
        self._previous_counters = {}
        self._failed_reported = {}
        self._action_server = ActionServer(
            self.node, Perceive, "perceive", self._execute_goal, goal_callback=self._on_goal,
            cancel_callback=self._on_cancel, callback_group=self._action_group)
        size = "each frame's own size" if s.input_size is None else f"{s.input_size[0]}x{s.input_size[1]}"
        self.log.info(f"{s.model} on {s.device} at {size}, {model.num_exits} exits, ready in "
                      f"{self.loaded.seconds:.1f} s; weights: {self.loaded.weights}")

    def _warm_up(self, model, size: tuple[int, int] | None):
        """Run WARMUP_FRAMES frames of the shipped clip through a throw-away runtime at the model's input size, so
        that the first real frame does not pay for one-off work (the FLOPs table the latency model reads, PyTorch's
        first calls) and the latency model starts with measured step times. Returns that latency model."""
        from ..runtime import AnytimeExecutor, Job, LatencyModel
        from .weights import clip_batch

        from ..models import AnytimeHRNet

        latency = LatencyModel()
        if size is None or not isinstance(model, AnytimeHRNet):
            return latency        # the size is known only when frames arrive: the first frame warms up
        began = time.perf_counter()
        warm = AnytimeExecutor(model, latency_model=latency, name="warm-up")
        for image in clip_batch(size, WARMUP_FRAMES, model):
            warm.submit(Job(image.to(self.settings.device), stamp=0.0))
            warm.run_until_idle()
        self.log.info(f"warmed up on {WARMUP_FRAMES} frames in {time.perf_counter() - began:.1f} s")
        return latency

    def _configure_sources(self) -> None:
        from ..runtime import SourceConfig

        for camera in self.cameras:
            if camera.name:
                priority = self.settings.camera_priority(camera.name)
                deadline_ms = self.settings.camera_deadline_ms(camera.name)
            else:
                priority, deadline_ms = self.settings.priority, self.settings.deadline_ms
            self.executor.configure_source(camera.source, SourceConfig(
                priority=int(priority), budget=deadline_ms / 1000.0 if deadline_ms > 0 else None))

    # ----- activate / deactivate / cleanup ------------------------------------------------------------------------
    def activate(self) -> None:
        s = self.settings
        for camera in self.cameras:
            camera.subscriptions = [
                self._subscribe_image(camera, Image, "image", compressed=False),
                self.node.create_subscription(CameraInfo, camera.prefix + "camera_info",
                                              lambda m, c=camera: c.camera_model.update(m), IMAGE_QOS,
                                              callback_group=self._input_group)]
            if s.subscribe_compressed:
                camera.subscriptions.append(self._subscribe_image(camera, CompressedImage, "image/compressed",
                                                                  compressed=True))
        self._event_sub = self.node.create_subscription(PriorityEvent, "priority_event", self._on_priority_event,
                                                        EVENT_QOS, callback_group=self._control_group)
        self._output_thread = threading.Thread(target=self._output_loop, name=f"{self.node.get_name()}-output",
                                               daemon=True)
        self._output_thread.start()
        self.executor.start()
        self.active = True
        header = Header(stamp=self.node.get_clock().now().to_msg())
        self._label_pub.publish(self.labels.message(header, s.model, self.loaded.model.num_exits))
        self._diag_timer = self.node.create_timer(s.diagnostics_period_s, self.publish_diagnostics,
                                                  callback_group=self._control_group)
        inputs = ", ".join(c.image_topic for c in self.cameras)
        self.log.info(f"listening on {inputs}" + (" (+ /compressed)" if s.subscribe_compressed else "")
                      + f"; policies: {self.executor.policies.describe()}")

    def _subscribe_image(self, camera: CameraInput, msg_type, topic: str, compressed: bool):
        """An input subscription whose lost messages are counted for ``camera``; its QoS is overridable by
        parameters (qos_overrides./<topic>.subscription.*)."""
        return self.node.create_subscription(
            msg_type, camera.prefix + topic, lambda m, c=camera: self._on_image(c, m, compressed=compressed),
            IMAGE_QOS, callback_group=self._input_group,
            event_callbacks=SubscriptionEventCallbacks(message_lost=lambda info, c=camera: self._on_lost(c, info)),
            qos_overriding_options=QoSOverridingOptions.with_default_policies())

    def deactivate(self) -> None:
        """Stop taking input and stop the worker: frames and goals in flight end with ``shutdown``."""
        self.active = False
        for camera in self.cameras:
            for subscription in camera.subscriptions:
                self.node.destroy_subscription(subscription)
            camera.subscriptions = []
        if self._event_sub is not None:
            self.node.destroy_subscription(self._event_sub)
            self._event_sub = None
        if self._diag_timer is not None:
            self.node.destroy_timer(self._diag_timer)
            self._diag_timer = None
        if self.executor is not None:
            self.executor.stop()
        if self._output_thread is not None:
            self._outbox.put(None)          # after every result and end the stopped executor delivered
            self._output_thread.join()
            self._output_thread = None

    def cleanup(self) -> None:
        """Release the model, the runtime, the publishers and the action server."""
        if self.active:
            self.deactivate()
        if self._action_server is not None:
            self._action_server.destroy()
            self._action_server = None
        for camera in self.cameras:
            for group in [camera.progressive, *camera.per_exit.values()]:
                if group is not None:
                    for publisher in group.publishers():
                        self.node.destroy_publisher(publisher)
        for publisher in (self._label_pub, self._diag_pub):
            if publisher is not None:
                self.node.destroy_publisher(publisher)
        self._label_pub = self._diag_pub = None
        self.cameras = []
        self.executor = None
        self.loaded = None
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001 - freeing memory is best effort
            pass

    # ----- input ----------------------------------------------------------------------------------------------------
    def _on_lost(self, camera: CameraInput, info) -> None:
        camera.counters.lost += int(info.total_count_change)
        self._throttled(self.log.warning, ("lost", camera.name),
                        f"{camera.label}: {info.total_count_change} input message(s) lost in transport "
                        f"({info.total_count} in total); the publisher is faster than this node takes them, or "
                        "large images need the Fast DDS profile (README)")

    def _reject(self, counters: diag.InputCounters, label: str, reason: str, text: str, header) -> None:
        counters.reject(reason)
        self._throttled(self.log.warning, ("reject", label, reason),
                        f"{label}: rejected frame (stamp {header.stamp.sec}.{header.stamp.nanosec:09d}, frame_id "
                        f"{header.frame_id!r}): {reason}: {text} [{counters.rejected[reason]} rejected for {reason}]")

    def _on_image(self, camera: CameraInput, msg, compressed: bool = False) -> None:
        """Subscription callback: decode, resize, normalise, submit. No inference here."""
        counters = camera.counters
        counters.received += 1
        if not self.active:
            self._reject(counters, camera.label, "inactive", "the node is not active", msg.header)
            return
        max_pixels = int(self.settings.max_image_pixels)
        try:
            rgb = compressed_to_rgb(msg, max_pixels) if compressed else image_to_rgb(msg, max_pixels)
        except ImageError as error:
            self._reject(counters, camera.label, error.reason, str(error), msg.header)
            return
        except Exception as error:  # noqa: BLE001 - a malformed message must never stop the node
            self._reject(counters, camera.label, "decode_failed", f"{type(error).__name__}: {error}", msg.header)
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
            prepared = self._prepare(rgb, msg.header, counters, camera=camera)
            if event is not None and event.deadline_ms > 0:
                deadline = prepared[0].stamp + event.deadline_ms / 1000.0
            self._submit(prepared, camera.source, priority, deadline)
        except Exception as error:  # noqa: BLE001 - out of memory or a resize failure must not stop the node
            self._reject(counters, camera.label, "prepare_failed", f"{type(error).__name__}: {error}", msg.header)
            return
        counters.accepted += 1
        if prepared[0].stamped:
            self._input_time.add(max(0.0, self.executor.clock.now() - prepared[0].stamp))

    def _prepare(self, rgb: np.ndarray, header, counters: diag.InputCounters, camera=None, goal=None):
        import torch

        height, width = rgb.shape[:2]
        size = self.settings.input_size or (height, width)
        frame_rgb = rgb
        if (height, width) != size:
            shrink = size[0] * size[1] < height * width
            rgb = cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        tensor = torch.from_numpy(normalise(rgb, self._scale, self._offset))
        stamp = stamp_seconds(header.stamp)
        stamped = stamp != 0.0
        if not stamped:
            counters.unstamped += 1
            stamp = self.executor.clock.now()
            if not self._warned_unstamped:
                self._warned_unstamped = True
                self.log.warning("frames without header.stamp: deadlines and latencies are measured from their "
                                 "arrival instead (published outputs keep the zero stamp)")
        with self._lock:
            self.frame_count += 1
            number = self.frame_count
        overlay_rgb = frame_rgb if self.settings.output_size == "input" else rgb
        return out.FrameInfo(header=header, stamp=stamp, number=number, width=width, height=height, rgb=overlay_rgb,
                             camera=camera, goal=goal, stamped=stamped), tensor

    def _submit(self, prepared, source: str, priority: int | None, deadline: float | None) -> int:
        from ..runtime import Job

        frame, tensor = prepared
        job = Job(tensor, stamp=frame.stamp, frame_id=frame.header.frame_id, source=source, priority=priority,
                  deadline=deadline, meta={"frame": frame})
        return self.executor.submit(job)

    def _on_priority_event(self, msg: PriorityEvent) -> None:
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

    # ----- results (output thread) ---------------------------------------------------------------------------------
    def _output_loop(self) -> None:
        while True:
            depth = self._outbox.qsize()
            if depth > self.outbox_peak:
                self.outbox_peak = depth
            note = self._outbox.get()
            if note is None:
                return
            try:
                if isinstance(note, tuple):
                    self._on_result(*note)
                else:
                    self._on_end(note)
            except Exception as error:  # noqa: BLE001 - the output thread must keep going
                self.log.error(f"output thread: {type(error).__name__}: {error}")

    def _queue_result(self, result) -> None:
        """Runtime worker thread: hand the exit to the output thread, with the time it was computed."""
        self._outbox.put((result, time.perf_counter()))

    def _on_result(self, result, computed_at: float | None = None) -> None:
        began = time.perf_counter() if computed_at is None else computed_at
        frame: out.FrameInfo = result.job.meta["frame"]
        model_time = result.timings.job_model_time
        counters = frame.camera.counters if frame.camera is not None else self.action_counters
        try:
            if frame.goal is not None:
                self._publish_feedback(result, frame, model_time)
            else:
                self._publish(result, frame, model_time)
            index = result.exit_index
            counters.published[index] = counters.published.get(index, 0) + 1
        except Exception as error:  # noqa: BLE001 - count, log and keep serving
            counters.output_errors += 1
            self.log.error(f"could not publish exit {result.exit_index} of frame {frame.number}: "
                           f"{type(error).__name__}: {error}")
        self._output_time.setdefault(result.exit_index, Histogram()).add(time.perf_counter() - began)

    def _end_to_end(self, frame: out.FrameInfo) -> float:
        return self.executor.clock.now() - frame.stamp

    def _wanted(self, groups: list[OutputGroup], kind: str) -> bool:
        if not self.settings.lazy_outputs:
            return True
        for group in groups:
            image, info = group.images[kind] if kind in group.images else (group.markers, None)
            if image is not None and image.get_subscription_count() > 0:
                return True
            if info is not None and info.get_subscription_count() > 0:
                return True
        return False

    def _result_message(self, result, frame: out.FrameInfo, model_time: float):
        """The exit's AnytimeSegmentation / AnytimePose, end_to_end_ms taken now (as close to the publication as
        possible), and what the image outputs reuse: the segmentation arrays, or the keypoints and their scores."""
        at_input = self.settings.output_size == "input"
        if self.loaded.task == "pose":
            coords, scores = out.pose_keypoints(result.exit, frame.width, frame.height)
            computed = out.computed_mask(result.exit)
            if at_input:
                computed = cv2.resize(computed, (frame.width, frame.height), interpolation=cv2.INTER_NEAREST)
            msg = out.pose_message(result, frame, coords, scores, self.labels, model_time, 0.0, computed)
            rendered = (coords, scores)
        else:
            rendered = out.segmentation_arrays(result.exit)
            if at_input:
                rendered = out.resize_arrays(rendered, frame.width, frame.height)
            msg = out.segmentation_message(result, frame, rendered, self.settings.confidence_encoding, model_time, 0.0)
        msg.end_to_end_ms = self._end_to_end(frame) * 1000.0
        return msg, rendered

    def _publish(self, result, frame: out.FrameInfo, model_time: float) -> None:
        camera: CameraInput = frame.camera
        groups = [camera.progressive]
        if camera.per_exit:
            groups.append(camera.per_exit[result.exit_index])
            if result.is_final:
                groups.append(camera.per_exit["final"])
        header, s = frame.header, self.settings
        msg, rendered = self._result_message(result, frame, model_time)
        for group in groups:
            group.result.publish(msg)
        if self.loaded.task == "pose":
            coords, scores = rendered
            if self._wanted(groups, "markers"):
                markers = out.pose_markers(header, coords, scores, camera.camera_model.intrinsics(frame.width,
                                                                                                  frame.height),
                                           self.labels, s.keypoint_min_score, s.marker_scale,
                                           f"anytime_pose/{camera.name}" if camera.name else "anytime_pose")
                for group in groups:
                    group.markers.publish(markers)
            if s.publish_overlay and frame.rgb is not None and self._wanted(groups, "overlay"):
                image = out.rgb_to_image(out.pose_overlay(frame.rgb, coords, scores, frame.width, frame.height,
                                                          self.labels, s.keypoint_min_score), header)
                self._publish_image(groups, "overlay", image, camera, frame)
            return
        for kind, image in (("labels", msg.labels), ("confidence", msg.confidence), ("computed", msg.computed)):
            if self._wanted(groups, kind):
                self._publish_image(groups, kind, image, camera, frame)
        if s.publish_overlay and frame.rgb is not None and self._wanted(groups, "overlay"):
            overlay = out.segmentation_overlay(frame.rgb, rendered.labels, self.labels.lut, float(s.overlay_alpha))
            self._publish_image(groups, "overlay", out.rgb_to_image(overlay, header), camera, frame)

    def _publish_image(self, groups, kind: str, image, camera: CameraInput, frame: out.FrameInfo) -> None:
        info = camera.camera_model.for_size(frame.header, frame.width, frame.height, image.width, image.height)
        for group in groups:
            image_pub, info_pub = group.images[kind]
            image_pub.publish(image)
            info_pub.publish(info)

    def _publish_feedback(self, result, frame: out.FrameInfo, model_time: float) -> None:
        goal: GoalState = frame.goal
        msg, _ = self._result_message(result, frame, model_time)
        goal.last = msg
        feedback = Perceive.Feedback(pose=msg) if self.loaded.task == "pose" else Perceive.Feedback(segmentation=msg)
        goal.handle.publish_feedback(feedback)

    def _on_end(self, end) -> None:
        frame: out.FrameInfo = end.job.meta["frame"]
        if frame.goal is not None:
            frame.goal.end = end
            frame.goal.done.set_result(end)      # wakes the node's executor (wake_on_done): the goal resumes
        elif end.reason.value == "expired":
            age = self.executor.clock.now() - frame.stamp
            self._throttled(self.log.warning, ("expired", frame.camera.name),
                            f"{frame.camera.label}: frame {frame.number} expired before it started: its stamp is "
                            f"{age * 1000:.0f} ms old, its budget {(end.deadline - frame.stamp) * 1000:.0f} ms. If "
                            "every frame expires, the publisher's clock differs from this node's (use_sim_time?)")
        else:
            self.log.debug(f"frame {frame.number} of {frame.camera.label} ended with {end.reason.value} after "
                           f"{end.exits_delivered} exits")

    # ----- action server ----------------------------------------------------------------------------------------
    def _on_goal(self, goal) -> GoalResponse:
        counters = self.action_counters
        counters.received += 1
        if not self.active:
            self._reject(counters, "perceive action", "inactive", "the node is not active", goal.image.header)
            return GoalResponse.REJECT
        try:
            check_image(goal.image, int(self.settings.max_image_pixels))
        except ImageError as error:
            self._reject(counters, "perceive action", error.reason, str(error), goal.image.header)
            return GoalResponse.REJECT
        if not math.isfinite(goal.deadline_ms):
            self._reject(counters, "perceive action", "bad_deadline", f"deadline_ms {goal.deadline_ms}",
                         goal.image.header)
            return GoalResponse.REJECT
        with self._lock:
            if self._goals_pending + len(self._goals) >= int(self.settings.max_concurrent_goals):
                busy = True
            else:
                busy = False
                self._goals_pending += 1
        if busy:
            self._reject(counters, "perceive action", "busy",
                         f"{self.settings.max_concurrent_goals} goals in flight (max_concurrent_goals)",
                         goal.image.header)
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def _on_cancel(self, goal_handle) -> CancelResponse:
        key = bytes(goal_handle.goal_id.uuid)
        with self._lock:
            state = self._goals.get(key)
            if state is None:             # accepted, not executing yet: _run_goal sees is_cancel_requested
                return CancelResponse.ACCEPT
            state.cancel_requested = True
            job_id = state.job_id
        if job_id is not None and self.executor is not None:
            self.executor.cancel(job_id)
        return CancelResponse.ACCEPT

    async def _execute_goal(self, goal_handle):
        """The action's execute callback, a coroutine: it awaits its job's end without holding an executor thread,
        so one single-threaded executor serves frames, goals, cancels and parameters while goals are in flight."""
        key = bytes(goal_handle.goal_id.uuid)
        request = goal_handle.request
        state = GoalState(handle=goal_handle)
        wake_on_done(state.done, self.node.executor)
        with self._lock:
            self._goals_pending = max(0, self._goals_pending - 1)
            state.generation = self._generation
            state.slot = self._free_slots.pop(0) if self._free_slots else ""
            self._goals[key] = state
        try:
            return await self._run_goal(goal_handle, request, state)
        finally:
            with self._lock:
                self._goals.pop(key, None)
                if state.slot and state.generation == self._generation:
                    self._free_slots.append(state.slot)

    async def _run_goal(self, goal_handle, request, state: GoalState):
        counters = self.action_counters
        result = Perceive.Result()
        if not state.slot:            # accepted before a lifecycle re-configure, executing after it with all slots taken
            self._reject(counters, "perceive action", "busy",
                         f"{self.settings.max_concurrent_goals} goals in flight (max_concurrent_goals)",
                         request.image.header)
            result.stop_reason = AnytimeSegmentation.STOP_FAILED
            goal_handle.abort()
            self._count_goal("aborted")
            return result
        if not self.active:           # deactivated between acceptance and execution: nothing would run the job
            self._reject(counters, "perceive action", "inactive", "the node is not active", request.image.header)
            result.stop_reason = AnytimeSegmentation.STOP_SHUTDOWN
            goal_handle.abort()
            self._count_goal("aborted")
            return result
        try:
            rgb = image_to_rgb(request.image, int(self.settings.max_image_pixels))
        except ImageError as error:   # validated on arrival; only a changed max_image_pixels gets here
            self._reject(counters, "perceive action", error.reason, str(error), request.image.header)
            result.stop_reason = AnytimeSegmentation.STOP_FAILED
            goal_handle.abort()
            self._count_goal("aborted")
            return result
        try:
            prepared = self._prepare(rgb, request.image.header, counters, goal=state)
        except Exception as error:  # noqa: BLE001 - e.g. out of memory: the goal fails, the node keeps serving
            self._reject(counters, "perceive action", "prepare_failed", f"{type(error).__name__}: {error}",
                         request.image.header)
            result.stop_reason = AnytimeSegmentation.STOP_FAILED
            goal_handle.abort()
            self._count_goal("aborted")
            return result
        frame = prepared[0]
        deadline = None
        if request.deadline_ms > 0:
            deadline = frame.stamp + request.deadline_ms / 1000.0
        elif request.deadline_ms == 0 and self.settings.deadline_ms > 0:
            deadline = frame.stamp + self.settings.deadline_ms / 1000.0
        with self._lock:
            if state.cancel_requested or goal_handle.is_cancel_requested:
                job_id = None
            else:
                job_id = state.job_id = self._submit(prepared, state.slot, int(request.priority), deadline)
                counters.accepted += 1
        if job_id is None:
            goal_handle.canceled()
            result.stop_reason = AnytimeSegmentation.STOP_CANCELLED
            self._count_goal("canceled")
            return result
        end = await state.done        # every job ends exactly once (deactivate ends those in flight: shutdown)
        reason = end.reason.value if end is not None else AnytimeSegmentation.STOP_SHUTDOWN
        result.stop_reason = reason
        result.exits_completed = end.exits_delivered if end is not None else 0
        if state.last is not None:
            last = state.last
            last.is_final = True
            last.stop_reason = reason
            if self.loaded is not None and self.loaded.task == "pose":
                result.pose = last
            else:
                result.segmentation = last
        if reason == "cancelled" and goal_handle.is_cancel_requested:
            goal_handle.canceled()
            self._count_goal("canceled")
        elif result.exits_completed > 0:
            goal_handle.succeed()
            self._count_goal("succeeded")
        else:
            goal_handle.abort()
            self._count_goal("aborted")
        return result

    def _count_goal(self, status: str) -> None:
        with self._lock:
            self.goals_finished[status] = self.goals_finished.get(status, 0) + 1

    # ----- diagnostics --------------------------------------------------------------------------------------------
    def source_stats(self, stats=None) -> dict[str, tuple[SourceStats, diag.InputCounters]]:
        """Runtime stats and node counters per input: camera names ("" for the unnamed one) and "action"; from
        ``stats`` (a snapshot of the runtime's) when given."""
        if stats is None and self.executor is not None:
            stats = self.executor.stats()
        result = {}
        for camera in self.cameras:
            source = stats.sources.get(camera.source, SourceStats()) if stats else SourceStats()
            result[camera.name] = (source, camera.counters)
        action = SourceStats()
        if stats is not None:
            for name, source in stats.sources.items():
                if name.startswith(ACTION_SOURCE + "_"):
                    action.merge(source)
        result[ACTION_SOURCE] = (action, self.action_counters)
        return result

    def publish_diagnostics(self) -> DiagnosticArray | None:
        if self.executor is None or self._diag_pub is None:
            return None
        stats = self.executor.stats()
        node = self.node.get_name()
        hardware = f"{self.settings.model}@{self.settings.device}"
        info = {"model": self.settings.model, "weights": self.loaded.weights, "device": self.settings.device,
                "input_size": "frame size" if self.settings.input_size is None else
                "x".join(map(str, self.settings.input_size)), "frames_accepted": self.frame_count,
                "priority_events_ignored": self.events_ignored, "output_queue_peak": self.outbox_peak,
                "output_queue_depth": self._outbox.qsize()}
        statuses = [diag.runtime_status(f"{node}: runtime", hardware, info, stats, dict(self._output_time),
                                        self._input_time)]
        for name, (source, counters) in self.source_stats(stats).items():
            label = f"{node}: {'action perceive' if name == ACTION_SOURCE else f'camera {name}' if name else 'input image'}"
            snapshot = counters.copy()
            status = diag.input_status(label, hardware, source, snapshot, self._previous_counters.get(name),
                                       self._failed_reported.get(name, 0))
            if name == ACTION_SOURCE:
                for key, value in sorted(self.goals_finished.items()):
                    status.values.append(diag.KeyValue(key=f"goals.{key}", value=str(value)))
            statuses.append(status)
            self._previous_counters[name] = snapshot
            self._failed_reported[name] = source.ended_by_reason.get("failed", 0)
        array = diag.diagnostic_array(Header(stamp=self.node.get_clock().now().to_msg()), statuses)
        self._diag_pub.publish(array)
        return array


# ----- the nodes ---------------------------------------------------------------------------------------------------
class AnytimeNode(Node):
    """The perception node: declares its parameters, loads the model and starts serving at construction. Raises
    :class:`ConfigurationError` (after logging it) if the parameters, model or checkpoint are not usable."""

    def __init__(self, node_name: str = "anytime_node", *,
                 model_loader: Callable[[Settings], LoadedModel] | None = None, **node_kwargs):
        super().__init__(node_name, **node_kwargs)
        self.perception = AnytimePerception(self, model_loader=model_loader)
        try:
            self.perception.declare()
            self.perception.configure()
            self.perception.activate()
        except ConfigurationError as error:
            self.get_logger().fatal(str(error))
            raise

    def destroy_node(self) -> None:
        self.perception.cleanup()
        super().destroy_node()


def make_executor(node: Node, context=None) -> SingleThreadedExecutor:
    """The executor the node runs on: single-threaded. Every callback is short (decode, normalise and submit a
    frame; take a goal, a cancel, a parameter, an event; publish diagnostics) and the perceive action's execute
    callback is a coroutine that awaits its job's end, so nothing blocks the executor. One thread takes an image
    from its subscription sooner than a pool of threads contending for the GIL with the model's worker (2-11 ms
    with a 7-thread MultiThreadedExecutor, ~1.7 ms with this one, for a 1.5 MB image in one process)."""
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    return executor


def main(argv: list[str] | None = None) -> int:
    """Console script ``anytime_node [--lifecycle] --ros-args ...``."""
    from rclpy.utilities import remove_ros_args

    argv = sys.argv if argv is None else argv
    try:
        extra = remove_ros_args(argv)[1:]
    except Exception as error:  # noqa: BLE001 - rclpy's RCLInvalidROSArgsError is not importable by name
        print(f"anytime_node: bad --ros-args: {error}", file=sys.stderr)
        return 2
    lifecycle = "--lifecycle" in extra
    unknown = [a for a in extra if a != "--lifecycle"]
    if unknown:
        print(f"anytime_node: unknown argument(s) {' '.join(unknown)}\nusage: anytime_node [--lifecycle] "
              "[--ros-args -p name:=value -r from:=to --params-file FILE ...]", file=sys.stderr)
        return 2
    use_large_image_profile()
    rclpy.init(args=argv)
    node = None
    code = 0
    try:
        if lifecycle:
            from .lifecycle import AnytimeLifecycleNode

            node = AnytimeLifecycleNode()
        else:
            node = AnytimeNode()
        executor = make_executor(node)
        executor.spin()
    except ConfigurationError:
        code = 1          # logged by the node
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
