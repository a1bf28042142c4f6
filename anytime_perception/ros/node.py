"""``anytime_node``: progressive segmentation or pose on camera topics, every exit published the moment it exists.

    anytime_node --ros-args -p model:=adpc_hrnet_w18s_seg -p input_height:=288 -p input_width:=384 \\
                 -p deadline_ms:=150.0 -r image:=/camera/image_raw
    ros2 launch anytime_perception seg.launch.py image:=/camera/image_raw        (a ROS 2 install)

The node is a thin adapter over :class:`anytime_perception.runtime.AnytimeScheduler`, and this module its
coordinator: it owns the parts and runs their life cycle. Data flows one way through them:

    intake (.intake)  ->  runtime worker  ->  output thread (.publishing)  ->  the frame's sink
    perceive action (.perceive_action) ->-^                                   (camera topics + frame_end, or a goal)

Parameters are :mod:`.params` (described and checked) and :mod:`.node_parameters` (on rclpy); messages per task
:mod:`.task_outputs`; ``/diagnostics`` :mod:`.diagnostics`; model loading :mod:`.weights`.

Topics (relative names: namespaces and remaps apply; with ``cameras:=[front, rear]`` everything below except
``label_info``, ``priority_event`` and ``perceive`` is repeated under ``front/`` and ``rear/``):

    in   image (sensor_msgs/Image), image/compressed (sensor_msgs/CompressedImage, if subscribe_compressed),
         camera_info (sensor_msgs/CameraInfo, optional), priority_event (anytime_perception/PriorityEvent)
    out  segmentation (AnytimeSegmentation) | pose (AnytimePose), every exit, reliable
         frame_end (FrameEnd), one per accepted frame, whatever ended it
         labels/{image,camera_info}, confidence/{image,camera_info}, computed/{image,camera_info},
         overlay/{image,camera_info} (segmentation); pose_markers (MarkerArray), overlay/{...} (pose)
         exit_<k>/..., final/... (same sub-structure, if per_exit_topics)
         label_info (LabelInfo, transient local), /diagnostics (DiagnosticArray)
    action perceive (anytime_perception/action/Perceive)
"""
from __future__ import annotations

import time
from typing import Callable

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from std_msgs.msg import Header

from ..data.preprocess import Preprocessor
from ..msg import LabelInfo
from . import diagnostics as diag
from . import outputs as out
from .intake import Intake, make_cameras
from .node_parameters import ConfigurationError, NodeParameters
from .params import CALIBRATED_UNTRAINED, Settings
from .perceive_action import ACTION_SOURCE, PerceiveAction
from .publishing import LATCHED_QOS, CameraSink, OutputThread
from .task_outputs import outputs_for
from .throttle import ThrottledLog
from .weights import LoadedModel, ModelLoadError, load_model, measure_auto_execution, warm_up


class RosClock:
    """The runtime's clock on ROS time: ``now()`` is the node clock (sim time with use_sim_time), the timebase of
    header stamps and deadlines; ``monotonic()`` measures durations."""

    def __init__(self, node: Node):
        self._clock = node.get_clock()

    def now(self) -> float:
        return self._clock.now().nanoseconds * 1e-9

    def monotonic(self) -> float:
        return time.perf_counter()


class AnytimePerception:
    """Everything anytime_node does, on a given rclpy node: ``declare()`` the parameters, ``configure()`` (model,
    runtime, publishers, action server), ``activate()`` (subscriptions, worker, diagnostics), ``deactivate()``,
    ``cleanup()``. :class:`AnytimeNode` runs all of it at construction; the lifecycle node maps it on
    transitions."""

    def __init__(self, node: Node, create_publisher: Callable | None = None,
                 model_loader: Callable[[Settings], LoadedModel] | None = None):
        self.node = node
        self._model_loader = model_loader
        self.create_publisher = create_publisher or node.create_publisher
        self.log = node.get_logger()
        self.settings = Settings()
        self.parameters = NodeParameters(node, self.settings, self._apply_parameters)
        self.loaded: LoadedModel | None = None
        self.scheduler = None
        self._throttled = ThrottledLog()
        self._control_group = MutuallyExclusiveCallbackGroup()
        self.intake = Intake(node, self.settings, self.log, self._throttled, MutuallyExclusiveCallbackGroup(),
                             self._control_group)
        self.action = PerceiveAction(node, self.settings, self.intake, ReentrantCallbackGroup())
        self.outputs: OutputThread | None = None
        self._label_pub = self._diag_pub = self._diag_timer = None
        self.reporter = diag.Reporter(node.get_name(), ACTION_SOURCE)

    @property
    def cameras(self):
        return self.intake.cameras

    @property
    def active(self) -> bool:
        return self.intake.active

    def declare(self) -> None:
        self.parameters.declare()

    def _apply_parameters(self, names: set[str]) -> None:
        if self.scheduler is not None:
            if any(n.startswith("policies.") for n in names):
                self.scheduler.set_policies(self.settings.policies())
            if names & {"priority", "deadline_ms"} or any(n.startswith("cameras.") for n in names):
                self._configure_sources()
        if "diagnostics_period_s" in names and self._diag_timer is not None:
            self.node.destroy_timer(self._diag_timer)
            self._diag_timer = self._diagnostics_timer()

    # ----- configure: model, runtime, publishers, action server ---------------------------------------------------
    def configure(self) -> None:
        from ..runtime import AnytimeScheduler

        s = self.settings
        if s.torch_threads:
            import torch

            torch.set_num_threads(int(s.torch_threads))
        if self._model_loader is None and s.checkpoint.strip() == CALIBRATED_UNTRAINED and s.model.startswith("adpc_"):
            self.log.info(f"drawing calibrated untrained weights for {s.model} on the shipped clip (one-off, a few "
                          "seconds)")
        try:
            self.loaded = (self._model_loader(s) if self._model_loader is not None else
                           load_model(s.model, s.checkpoint, s.device, s.input_size, s.execution))
        except ModelLoadError as error:
            raise ConfigurationError(str(error)) from None
        model = self.loaded.model
        if self.loaded.untrained:
            self.log.warning(f"NO TRAINED WEIGHTS: {self.loaded.weights}. Set checkpoint:=/path/to/weights.pth "
                             "for real results.")
        if self.loaded.execution_warning:
            self.log.warning(self.loaded.execution_warning)
        labels = out.LabelMap(self.loaded.task, model.config.outputs, getattr(model, "labels", None))
        builder = outputs_for(self.loaded.task, s, labels)
        try:
            self.loaded = measure_auto_execution(self.loaded, s.execution, s.input_size, s.device, self.log)
            latency = warm_up(model, s.input_size, s.device, self.log)
        except Exception as error:  # noqa: BLE001 - e.g. out of device memory: one clear line, no traceback
            raise ConfigurationError(f"warm-up of {s.model} on {s.device} failed: {type(error).__name__}: "
                                     f"{error}") from None
        self.outputs = OutputThread(f"{self.node.get_name()}-output", self.log, self.node.context.ok,
                                    self._throttled)
        self.scheduler = AnytimeScheduler(model, policies=s.policies(), clock=RosClock(self.node),
                                        on_result=self.outputs.on_result, on_end=self.outputs.on_end,
                                        latency_model=latency, name=f"{self.node.get_name()}-runtime")
        cameras = make_cameras(s.camera_names)
        self.intake.configure(cameras, self.scheduler, Preprocessor(model, s.input_size, s.device))
        self._configure_sources()
        for camera in cameras:
            camera.sink = CameraSink(camera, self.create_publisher, builder, s, model.num_exits,
                                     self.scheduler.clock.now, self.log, self._throttled)
        self._label_pub = self.create_publisher(LabelInfo, "label_info", LATCHED_QOS)
        self._label_message = labels.message
        self._diag_pub = self.node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.reporter.reset()                                        # a re-configure reports from zero
        self.action.configure(self.scheduler, builder)
        size = "each frame's own size" if s.input_size is None else f"{s.input_size[0]}x{s.input_size[1]}"
        self.log.info(f"{s.model} on {s.device} at {size}, {model.num_exits} exits, execution "
                      f"{self.loaded.execution} ({self.loaded.execution_reason or 'as configured'}), ready in "
                      f"{self.loaded.seconds:.1f} s; weights: {self.loaded.weights}")

    def _configure_sources(self) -> None:
        from ..runtime import SourceConfig

        for camera in self.cameras:
            if camera.name:
                priority = self.settings.camera_priority(camera.name)
                deadline_ms = self.settings.camera_deadline_ms(camera.name)
            else:
                priority, deadline_ms = self.settings.priority, self.settings.deadline_ms
            self.scheduler.configure_source(camera.source, SourceConfig(
                priority=int(priority), budget=deadline_ms / 1000.0 if deadline_ms > 0 else None))

    def _diagnostics_timer(self):
        return self.node.create_timer(self.settings.diagnostics_period_s, self.publish_diagnostics,
                                      callback_group=self._control_group)

    # ----- activate / deactivate / cleanup ------------------------------------------------------------------------
    def activate(self) -> None:
        self.outputs.start()
        self.scheduler.start()
        self.intake.start()
        header = Header(stamp=self.node.get_clock().now().to_msg())
        self._label_pub.publish(self._label_message(header, self.settings.model, self.loaded.model.num_exits))
        self._diag_timer = self._diagnostics_timer()
        inputs = ", ".join(c.image_topic for c in self.cameras)
        self.log.info(f"listening on {inputs}" + (" (+ /compressed)" if self.settings.subscribe_compressed else "")
                      + f"; policies: {self.scheduler.policies.describe()}")

    def deactivate(self) -> None:
        """Stop taking input and stop the worker: frames and goals in flight end with ``shutdown`` (and each camera
        frame with its ``frame_end``)."""
        self.intake.stop()
        if self._diag_timer is not None:
            self.node.destroy_timer(self._diag_timer)
            self._diag_timer = None
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.outputs is not None:
            self.outputs.stop()         # after every result and end the stopped runtime delivered

    def cleanup(self) -> None:
        """Release the model, the runtime, the publishers and the action server."""
        if self.active:
            self.deactivate()
        self.action.destroy()
        for camera in self.cameras:
            if camera.sink is not None:
                for publisher in camera.sink.publishers():
                    self.node.destroy_publisher(publisher)
        for publisher in (self._label_pub, self._diag_pub):
            if publisher is not None:
                self.node.destroy_publisher(publisher)
        self._label_pub = self._diag_pub = None
        self.intake.cameras = []
        self.scheduler = self.intake.scheduler = None
        self.loaded = None
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001 - freeing memory is best effort
            pass

    def publish_diagnostics(self) -> DiagnosticArray | None:
        """Publish one /diagnostics report now (the timer calls it every diagnostics_period_s)."""
        if self.scheduler is None or self._diag_pub is None:
            return None
        s = self.settings
        info = {"model": s.model, "weights": self.loaded.weights, "device": s.device,
                "execution": self.loaded.execution, "execution_reason": self.loaded.execution_reason,
                "input_size": "frame size" if s.input_size is None else "x".join(map(str, s.input_size)),
                "frames_accepted": self.intake.frame_count, "priority_events_ignored": self.intake.events_ignored,
                "output_queue_peak": self.outputs.peak,
                "output_queue_peak_since_report": self.outputs.take_recent_peak(),
                "output_queue_depth": self.outputs.depth()}
        array = self.reporter.report(Header(stamp=self.node.get_clock().now().to_msg()), f"{s.model}@{s.device}",
                                     info, self.scheduler.stats(), self.cameras, self.action,
                                     self.outputs.output_time, self.intake.input_time)
        self._diag_pub.publish(array)
        return array


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
