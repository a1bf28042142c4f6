"""anytime_node in-process, with real rclpy and the generated messages: every exit out in order with the input's
header, preemption by a newer frame and by a PriorityEvent, the perceive action (feedback, result, cancel), bad
input counted and logged while the node keeps serving, parameters validated, outputs as rviz2 expects them,
diagnostics, QoS and the lifecycle variant.

Where scheduling matters the model is `GatedModel`: each model step waits until the test lets it run, so a test
publishes a newer frame / an event / a cancel while a known step runs and knows what the runtime must do. No
assertion depends on wall-clock timing; timeouts only stop a hung test.
"""
import os
import threading
import time
import uuid

import numpy as np
import pytest

from conftest import dependency_missing

try:
    import cv2
    import rclpy
    from action_msgs.msg import GoalStatus
    from diagnostic_msgs.msg import DiagnosticArray
    from rcl_interfaces.msg import Log
    from rclpy.action import ActionClient
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image
    from std_msgs.msg import Header
    from visualization_msgs.msg import MarkerArray

    from anytime_perception.action import Perceive
    from anytime_perception.msg import AnytimePose, AnytimeSegmentation, LabelInfo, PriorityEvent
    from anytime_perception.ros.image_codec import array_to_image, image_to_array, pinhole_camera_info
    from anytime_perception.ros.node import AnytimeNode, make_executor
    from anytime_perception.ros.testing import GatedModel
except ImportError as error:  # pragma: no cover - depends on the environment
    dependency_missing(error)

from anytime_perception.runtime import EndReason

RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
SEG_IMAGES = ("labels", "confidence", "computed", "overlay")


def wait_for(predicate, timeout=20.0, what="condition"):
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def header(sec, frame_id="front_cam", nanosec=123):
    h = Header(frame_id=frame_id)
    h.stamp.sec, h.stamp.nanosec = sec, nanosec
    return h


def frame(value=100, height=48, width=64, sec=None, frame_id="front_cam", encoding="rgb8"):
    """A uniform frame, stamped `sec` seconds (default: now, so deadlines are meaningful)."""
    if sec is None:
        now = time.time_ns()
        stamp = header(now // 10**9, frame_id, now % 10**9)
    else:
        stamp = header(sec, frame_id)
    pixels = np.full((height, width, 3), value, np.uint8)
    if encoding == "mono8":
        pixels = pixels[:, :, 0]
    return array_to_image(pixels, encoding, stamp)


class Harness:
    """The node under test on its own executor (`make_executor`: single-threaded, as anytime_node runs) plus a
    client node (publishers, subscribers, an action client) on another, each spun on a background thread; all in
    the test's own context and namespace."""

    def __init__(self, context, params=None, model=None, cameras=("",), lifecycle=False, task="seg"):
        self.context = context
        self.namespace = f"/t_{uuid.uuid4().hex[:8]}"
        overrides = [Parameter(k, value=v) for k, v in (params or {}).items()]
        kwargs = dict(context=context, namespace=self.namespace, parameter_overrides=overrides)
        if model is not None:
            kwargs["model_loader"] = model.loader()
        if lifecycle:
            from anytime_perception.ros.lifecycle import AnytimeLifecycleNode

            self.node = AnytimeLifecycleNode(**kwargs)
        else:
            self.node = AnytimeNode(**kwargs)
        self.client = rclpy.create_node("client", namespace=self.namespace, context=context)
        self.task = task
        self.results = {c: [] for c in cameras}
        self.images = {}
        self.publishers = {}
        for camera in cameras:
            prefix = f"{camera}/" if camera else ""
            result_type, result_topic = (AnytimePose, "pose") if task == "pose" else (AnytimeSegmentation,
                                                                                     "segmentation")
            self.client.create_subscription(result_type, prefix + result_topic, self.results[camera].append,
                                            RELIABLE)
            self.publishers[camera] = self.client.create_publisher(Image, prefix + "image", RELIABLE)
        self.events = self.client.create_publisher(PriorityEvent, "priority_event", RELIABLE)
        self.action_clients = []
        self.rosout = []
        self.client.create_subscription(Log, "/rosout", self.rosout.append, QoSProfile(depth=1000))
        self.executor = make_executor(self.node, context=context)
        self.client_executor = SingleThreadedExecutor(context=context)
        self.client_executor.add_node(self.client)
        self.threads = [threading.Thread(target=e.spin, daemon=True) for e in (self.executor, self.client_executor)]
        for thread in self.threads:
            thread.start()

    @property
    def perception(self):
        return self.node.perception

    def subscribe(self, msg_type, topic, qos=None):
        received = []
        self.client.create_subscription(msg_type, topic, received.append, qos or RELIABLE)
        return received

    def wait_matched(self, camera=""):
        wait_for(lambda: self.publishers[camera].get_subscription_count() > 0, what="the node's subscription")

    def publish(self, msg, camera=""):
        self.publishers[camera].publish(msg)

    def accepted(self, camera=""):
        return self.camera(camera).counters.accepted

    def camera(self, name=""):
        return next(c for c in self.perception.cameras if c.name == name)

    def wait_accepted(self, count, camera=""):
        wait_for(lambda: self.accepted(camera) >= count, what=f"{count} accepted frames")

    def logs(self, text):
        return [m.msg for m in self.rosout if text in m.msg and m.name.endswith(self.node.get_name())]

    def close(self):
        for executor, thread in zip((self.executor, self.client_executor), self.threads):
            executor.shutdown(timeout_sec=5)
            thread.join(timeout=5)
        self.node.destroy_node()
        self.client.destroy_node()


@pytest.fixture
def harnesses(ros_context):
    made = []

    def make(**kwargs):
        made.append(Harness(ros_context, **kwargs))
        return made[-1]

    yield make
    for harness in made:
        harness.close()


def exits_of(results, stamp_sec):
    return [(m.exit_index, m.is_final, m.stop_reason) for m in results if m.header.stamp.sec == stamp_sec]


# ----- the real model: every exit, headers, rviz2-ready outputs ------------------------------------------------
def test_every_exit_in_order_with_the_input_header_and_rviz_ready_outputs(harnesses):
    h = harnesses(params={"input_height": 64, "input_width": 96, "torch_threads": 1, "policies.frames": "fifo"})
    images = {kind: h.subscribe(Image, f"{kind}/image", qos=QoSProfile(depth=100)) for kind in SEG_IMAGES}
    infos = {kind: h.subscribe(CameraInfo, f"{kind}/camera_info", qos=QoSProfile(depth=100)) for kind in SEG_IMAGES}
    info_pub = h.client.create_publisher(CameraInfo, "camera_info", RELIABLE)
    h.wait_matched()
    wait_for(lambda: all(p.get_subscription_count() for p in h.perception.cameras[0].sink.progressive.publishers()[1:]),
             what="the image outputs to see their subscribers")
    first = int(time.time())
    sent = [frame(40 + 20 * i, 120, 160, sec=first + i, frame_id=f"cam_{i}", encoding=enc)
            for i, enc in enumerate(["rgb8", "bgr8", "mono8"])]
    calibration = pinhole_camera_info(sent[0].header, 160, 120, 90.0)
    info_pub.publish(calibration)
    wait_for(lambda: h.camera().camera_model.info is not None, what="camera_info")
    for msg in sent:
        h.publish(msg)
    wait_for(lambda: sum(m.is_final for m in h.results[""]) == 3, what="three final exits")

    results = h.results[""]
    for i, msg in enumerate(sent):
        mine = [m for m in results if m.header == msg.header]
        assert [m.exit_index for m in mine] == [1, 2, 3, 4]                          # every exit, in order
        assert [m.is_final for m in mine] == [False, False, False, True]
        assert [m.stop_reason for m in mine] == ["none"] * 3 + ["last_exit"]
        assert {m.header.frame_id for m in mine} == {f"cam_{i}"}
        assert len({m.frame_number for m in mine}) == 1 and mine[0].num_exits == 4
        assert mine[0].computed_fraction == 1.0 and all(0.0 <= m.computed_fraction <= 1.0 for m in mine)
        assert [m.gflops for m in mine] == sorted(m.gflops for m in mine) and mine[0].gflops > 0
        assert all(m.model_time_ms >= m.exit_time_ms > 0 for m in mine)
        for m in mine:
            assert (m.labels.encoding, m.labels.width, m.labels.height) == ("mono8", 160, 120)   # the input's size
            assert (m.confidence.encoding, m.confidence.width) == ("32FC1", 160)
            assert (m.computed.encoding, m.computed.height) == ("mono8", 120)
            assert m.labels.header == msg.header and m.confidence.header == msg.header
            assert image_to_array(m.labels).max() < 19
            conf = image_to_array(m.confidence)
            assert conf.min() >= 0.0 and conf.max() <= 1.0
        # exit 1 computes everything; later exits exactly where the previous exit was not confident
        assert (image_to_array(mine[0].computed) == 255).all()
        assert abs((image_to_array(mine[1].computed) == 255).mean() - mine[1].computed_fraction) < 1e-6
    assert len({m.frame_number for m in results}) == 3

    # rviz2: plain images with a camera_info of the same size, same stamp and frame_id
    wait_for(lambda: all(len(images[k]) == 12 and len(infos[k]) == 12 for k in SEG_IMAGES), what="image outputs")
    for kind in SEG_IMAGES:
        for image, info in zip(images[kind], infos[kind]):
            assert image.header == info.header
            assert (info.width, info.height) == (image.width, image.height)
            assert image.step == image.width * {"rgb8": 3, "mono8": 1, "32FC1": 4}[image.encoding]
        assert [i.header for i in images[kind]] == [m.header for m in results]
    assert {i.encoding for i in images["overlay"]} == {"rgb8"}
    assert (images["overlay"][0].width, images["overlay"][0].height) == (160, 120)    # the input's size
    assert {i.encoding for i in images["labels"]} == {"mono8"}
    assert {i.encoding for i in images["confidence"]} == {"32FC1"}
    # the input's calibration (90 deg at 160 px -> fx 80), scaled to each output's size
    assert infos["overlay"][0].k[0] == pytest.approx(80.0) and infos["labels"][0].k[0] == pytest.approx(80.0)

    # the class map, latched: a subscriber that comes late still gets it
    labels = h.subscribe(LabelInfo, "label_info", qos=LATCHED)
    wait_for(lambda: labels, what="label_info")
    assert labels[0].task == "segmentation" and labels[0].num_exits == 4
    # the default model is the shipped person model: its classes come from its weights' file
    assert [c.name for c in labels[0].classes] == ["background", "person"]
    assert "shipped weights" in h.perception.loaded.weights and not h.perception.loaded.untrained
    assert not any("NO TRAINED WEIGHTS" in m.msg for m in h.rosout)


def test_output_size_exit_publishes_masks_at_the_exit_resolution(harnesses):
    h = harnesses(params={"input_height": 64, "input_width": 96, "torch_threads": 1, "output_size": "exit"})
    overlay = h.subscribe(Image, "overlay/image", qos=QoSProfile(depth=100))
    labels_info = h.subscribe(CameraInfo, "labels/camera_info", qos=QoSProfile(depth=100))
    h.wait_matched()
    group = h.camera().sink.progressive
    wait_for(lambda: group.images["overlay"][0].get_subscription_count() and
             group.images["labels"][1].get_subscription_count(), what="the image outputs to see their subscribers")
    h.publish(frame(80, 120, 160, sec=int(time.time())))
    wait_for(lambda: h.results[""] and h.results[""][-1].is_final, what="the frame")
    wait_for(lambda: len(overlay) == 4 and len(labels_info) == 4, what="image outputs")
    for m in h.results[""]:
        assert (m.labels.width, m.labels.height, m.confidence.width, m.computed.height) == (24, 16, 24, 16)  # 1/4
    assert (overlay[0].width, overlay[0].height) == (96, 64)                             # the model's input size
    assert (labels_info[0].width, labels_info[0].height) == (24, 16)


def test_pose_outputs_keypoints_markers_and_overlay(harnesses):
    h = harnesses(params={"model": "adpc_hrnet_w32_pose", "checkpoint": "calibrated-untrained", "input_height": 64,
                          "input_width": 64, "torch_threads": 1}, task="pose")
    markers = h.subscribe(MarkerArray, "pose_markers")
    overlay = h.subscribe(Image, "overlay/image", qos=QoSProfile(depth=10))
    h.wait_matched()
    wait_for(lambda: h.camera().sink.progressive.markers.get_subscription_count(), what="marker subscriber")
    sent = frame(90, 96, 128)
    h.publish(sent)
    wait_for(lambda: h.results[""] and h.results[""][-1].is_final and len(overlay) == len(h.results[""]),
             what="pose exits")
    results = h.results[""]
    assert [m.exit_index for m in results] == [1, 2, 3, 4]
    for m in results:
        assert m.header == sent.header and (m.image_width, m.image_height) == (128, 96)
        assert [k.name for k in m.keypoints][:2] == ["r_ankle", "r_knee"] and len(m.keypoints) == 16
        assert all(-0.5 <= k.x <= 127.5 and -0.5 <= k.y <= 95.5 for k in m.keypoints)   # input pixels
    assert (overlay[0].encoding, overlay[0].width, overlay[0].height) == ("rgb8", 128, 96)      # the input's size
    assert (results[0].computed.width, results[0].computed.height) == (128, 96)
    wait_for(lambda: len(markers) == 4, what="markers")
    joints, bones = markers[-1].markers
    visible = [k.score >= 0.0 for k in results[-1].keypoints]              # keypoint_min_score = 0
    skeleton = [(0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9), (10, 11), (11, 12), (12, 7),
                (7, 13), (13, 14), (14, 15)]
    assert joints.header == sent.header and joints.type == joints.SPHERE_LIST
    assert len(joints.points) == sum(visible)
    assert bones.type == bones.LINE_LIST and len(bones.points) == 2 * sum(visible[a] and visible[b]
                                                                          for a, b in skeleton)
    assert {p.z for p in joints.points} == {1.0}                                   # back-projected to 1 m


# ----- scheduling: preemption by a newer frame, by a priority event ------------------------------------------
def test_a_newer_frame_preempts_the_running_one(harnesses):
    model = GatedModel()
    h = harnesses(model=model)
    h.wait_matched()
    h.publish(frame(10, sec=100))
    assert model.wait_blocked()
    model.allow(2)                                     # module1, exit1 of frame 100
    wait_for(lambda: len(h.results[""]) == 1, what="exit 1")
    model.allow(1)                                     # module2 runs ...
    assert model.wait_steps(3)
    assert model.wait_blocked()                        # ... and the worker waits before exit2 of frame 100
    h.publish(frame(20, sec=101))                      # a newer frame arrives meanwhile
    h.wait_accepted(2)
    model.allow(1)                                     # exit2 of frame 100: delivered, then preempted
    wait_for(lambda: len(h.results[""]) == 2, what="exit 2")
    model.open()
    wait_for(lambda: h.results[""][-1].header.stamp.sec == 101 and h.results[""][-1].is_final, what="frame 101")
    assert exits_of(h.results[""], 100) == [(1, False, "none"), (2, True, "preempted")]
    assert exits_of(h.results[""], 101) == [(1, False, "none"), (2, False, "none"), (3, False, "none"),
                                            (4, True, "last_exit")]
    stats = h.perception.scheduler.stats().sources["image"]
    assert stats.ended_by_reason == {"preempted": 1, "last_exit": 1}


def test_a_frame_preempted_between_exits_publishes_nothing_more_and_is_counted(harnesses):
    model = GatedModel()
    h = harnesses(model=model)
    h.wait_matched()
    h.publish(frame(10, sec=100))
    model.allow(2)
    wait_for(lambda: len(h.results[""]) == 1, what="exit 1")
    assert model.wait_blocked()                        # before module2 of frame 100
    h.publish(frame(20, sec=101))
    h.wait_accepted(2)
    model.allow(1)                                     # module2 of frame 100; then the newer frame takes over
    model.open()
    wait_for(lambda: h.results[""][-1].header.stamp.sec == 101 and h.results[""][-1].is_final, what="frame 101")
    assert exits_of(h.results[""], 100) == [(1, False, "none")]          # no extra message for frame 100
    values = {}
    wait_for(lambda: values.update(_diagnostic_values(h)) or values.get("ended.preempted") == "1",
             what="diagnostics counting the preemption")
    assert values["jobs.preempted"] == "1" and values["exit_1.published"] == "2"


def test_a_priority_event_makes_the_next_frame_preempt_lower_priority_work(harnesses):
    model = GatedModel()
    h = harnesses(model=model, params={"cameras": ["front", "rear"]}, cameras=("front", "rear"))
    h.wait_matched("front")
    h.wait_matched("rear")
    # without an event, a front frame waits for the rear frame (equal priorities: no preemption)
    h.publish(frame(10, sec=100, frame_id="rear"), "rear")
    model.allow(2)
    wait_for(lambda: len(h.results["rear"]) == 1, what="rear exit 1")
    assert model.wait_blocked()
    h.publish(frame(20, sec=101, frame_id="front"), "front")
    h.wait_accepted(1, "front")
    model.allow(1)
    assert model.wait_blocked()
    assert h.perception.scheduler.stats().sources["front"].queued == 1       # still waiting
    model.open()
    wait_for(lambda: h.results["front"] and h.results["front"][-1].is_final, what="front frame")
    assert exits_of(h.results["rear"], 100)[-1] == (4, True, "last_exit")

    # with an event for the front camera, its next frame preempts the running rear frame
    model.gated = True
    h.events.publish(PriorityEvent(priority=5, deadline_ms=0.0, reason="obstacle ahead", source="front",
                                   num_frames=1))
    wait_for(lambda: h.camera("front").event is not None, what="the event")
    h.publish(frame(30, sec=102, frame_id="rear"), "rear")
    model.allow(2)
    wait_for(lambda: len(exits_of(h.results["rear"], 102)) == 1, what="rear exit 1")
    assert model.wait_blocked()
    h.publish(frame(40, sec=103, frame_id="front"), "front")
    h.wait_accepted(2, "front")
    model.allow(1)                                     # module2 of the rear frame, then the front frame takes over
    model.open()
    wait_for(lambda: exits_of(h.results["front"], 103) and exits_of(h.results["front"], 103)[-1][1],
             what="front frame under the event")
    assert exits_of(h.results["rear"], 102) == [(1, False, "none")]               # preempted between exits
    front = [m for m in h.results["front"] if m.header.stamp.sec == 103]
    assert {m.priority for m in front} == {5}
    assert h.camera("front").event is None                                      # used up (num_frames = 1)
    assert h.camera("front").counters.event_frames == 1
    assert h.perception.scheduler.stats().sources["rear"].ended_by_reason.get("preempted") == 1
    wait_for(lambda: h.logs("obstacle ahead"), what="log line")


def test_priority_event_for_all_inputs_with_deadline_and_unknown_source(harnesses):
    model = GatedModel(gated=False)
    h = harnesses(model=model)
    h.wait_matched()
    h.events.publish(PriorityEvent(priority=3, deadline_ms=250.0, reason="all", source="", num_frames=2))
    wait_for(lambda: h.camera().event is not None, what="the event")
    for i in range(3):
        h.publish(frame(10 + i, frame_id=f"f{i}"))
        wait_for(lambda: sum(m.is_final for m in h.results[""]) == i + 1, what="a frame")
    by_frame = {}
    for m in h.results[""]:
        by_frame.setdefault(m.header.frame_id, set()).add((m.priority, m.deadline_ms))
    assert [by_frame[f"f{i}"] for i in range(3)] == [{(3, 250.0)}, {(3, 250.0)}, {(0, 0.0)}]
    h.events.publish(PriorityEvent(priority=3, reason="nobody", source="no_such_camera"))
    wait_for(lambda: h.perception.intake.events_ignored == 1, what="the unknown source to be counted")
    wait_for(lambda: h.logs("unknown source 'no_such_camera'"), what="log line")


# ----- the perceive action ------------------------------------------------------------------------------------
def _send_goal(h, image, deadline_ms=0.0, priority=0, feedback=None):
    client = ActionClient(h.client, Perceive, "perceive")
    h.action_clients.append(client)                   # keep it (and its feedback subscription) alive
    assert client.wait_for_server(timeout_sec=10)
    future = client.send_goal_async(Perceive.Goal(image=image, deadline_ms=deadline_ms, priority=priority),
                                    feedback_callback=(feedback.append if feedback is not None else None))
    wait_for(future.done, what="goal response")
    # feedback goes to a topic: make sure the client's feedback subscription is matched before exits come
    wait_for(lambda: h.node.count_subscribers(f"{h.namespace}/perceive/_action/feedback") >= 1,
             what="the feedback subscription")
    return client, future.result()


def test_action_streams_every_exit_as_feedback_and_returns_the_last(harnesses):
    model = GatedModel()
    h = harnesses(model=model)
    feedback = []
    image = frame(60, sec=200, frame_id="on_demand")
    _, handle = _send_goal(h, image, deadline_ms=-1.0, priority=2, feedback=feedback)
    assert handle.accepted
    for k in (1, 2, 3):                               # one exit at a time, each feedback before the next exit
        model.allow(2)
        wait_for(lambda: len(feedback) == k, what=f"feedback {k}")
    model.open()
    future = handle.get_result_async()
    wait_for(future.done, what="result")
    response = future.result()
    assert response.status == GoalStatus.STATUS_SUCCEEDED
    result = response.result
    assert (result.stop_reason, result.exits_completed) == ("last_exit", 4)
    assert result.segmentation.exit_index == 4 and result.segmentation.header == image.header
    # exits 1-3 arrive as feedback before the result; the last exit is in the result, and its feedback may come
    # after the result reached the client (feedback and result travel on different DDS entities), when rclpy's
    # client no longer delivers feedback for the goal
    wait_for(lambda: len(feedback) >= 3, what=f"feedback {[f.feedback.segmentation.exit_index for f in feedback]}")
    assert [f.feedback.segmentation.exit_index for f in feedback] == [1, 2, 3, 4][:len(feedback)]
    assert {f.feedback.segmentation.priority for f in feedback} == {2}
    assert {f.feedback.segmentation.deadline_ms for f in feedback} == {0.0}
    assert h.results[""] == []                                      # goals do not go out on the topics
    assert h.perception.action.finished == {"succeeded": 1}


def test_action_cancel_preempts_the_computation(harnesses):
    model = GatedModel()
    h = harnesses(model=model)
    feedback = []
    _, handle = _send_goal(h, frame(60, sec=200), feedback=feedback)
    model.allow(2)
    wait_for(lambda: len(feedback) == 1, what="first feedback")
    assert model.wait_blocked()
    cancel = handle.cancel_goal_async()
    wait_for(cancel.done, what="cancel response")
    assert len(cancel.result().goals_canceling) == 1
    model.allow(1)                                    # the running step finishes; the job stops before the next
    result_future = handle.get_result_async()
    wait_for(result_future.done, what="result")
    response = result_future.result()
    assert response.status == GoalStatus.STATUS_CANCELED
    assert (response.result.stop_reason, response.result.exits_completed) == ("cancelled", 1)
    assert response.result.segmentation.exit_index == 1 and response.result.segmentation.is_final
    assert [name for _, name in model.log] == ["module1", "exit1", "module2"]       # nothing ran after the cancel
    model.open()


def test_a_higher_priority_goal_preempts_camera_frames_and_bad_goals_are_rejected(harnesses):
    model = GatedModel()
    h = harnesses(model=model, params={"max_concurrent_goals": 1, "policies.suspend": "suspend"})
    h.wait_matched()
    h.publish(frame(10))
    model.allow(2)
    wait_for(lambda: len(h.results[""]) == 1, what="camera exit 1")
    assert model.wait_blocked()
    feedback = []
    _, handle = _send_goal(h, frame(60), priority=10, feedback=feedback)
    assert handle.accepted
    wait_for(lambda: h.perception.action.counters.accepted == 1, what="goal submitted")
    _, busy = _send_goal(h, frame(70))                               # max_concurrent_goals = 1
    assert not busy.accepted
    _, bad = _send_goal(h, Image(height=4, width=4, encoding="rgb8", step=12, data=b"\x00" * 5))
    assert not bad.accepted
    model.open()
    result = handle.get_result_async()
    wait_for(result.done, what="goal result")
    assert result.result().result.exits_completed == 4
    wait_for(lambda: h.results[""][-1].is_final, what="the camera frame to resume and finish")
    stats = h.perception.scheduler.stats()
    assert stats.sources["image"].suspensions == 1 and stats.sources["image"].resumes == 1
    # the camera frame was suspended when the goal arrived, and resumed after it
    names = [name for _, name in model.log]
    assert names[:3] == ["module1", "exit1", "module2"] and names[3:11] == [s for k in range(1, 5)
                                                                           for s in (f"module{k}", f"exit{k}")]
    assert h.perception.action.counters.rejected == {"busy": 1, "bad_length": 1}
    wait_for(lambda: h.logs("rejected frame") and h.logs("busy"), what="log line")


def test_frames_are_served_while_goals_are_in_flight_on_the_single_threaded_executor(harnesses):
    """Two goals await their jobs as coroutines: the node's one executor thread still takes a camera frame, whose
    exits all arrive while both goals are held by the gated model."""
    model = GatedModel()
    h = harnesses(model=model, params={"priority": 5, "policies.suspend": "suspend", "max_concurrent_goals": 2})
    h.wait_matched()
    feedback = {"a": [], "b": []}
    _, first = _send_goal(h, frame(60, frame_id="goal_a"), feedback=feedback["a"])
    _, second = _send_goal(h, frame(70, frame_id="goal_b"), feedback=feedback["b"])
    assert first.accepted and second.accepted
    wait_for(lambda: h.perception.action.counters.accepted == 2, what="both goals submitted")
    model.allow(2)                                     # module1, exit1 of the first goal
    wait_for(lambda: len(feedback["a"]) == 1, what="first goal's exit 1")
    assert model.wait_blocked()                        # the worker holds the first goal before module2
    h.publish(frame(10, sec=100))                      # taken by the executor while two goals are in flight
    h.wait_accepted(1)
    model.allow(1)                                     # module2 of the goal; then the camera frame preempts it
    model.allow(8)                                     # the camera frame's eight steps
    wait_for(lambda: h.results[""] and h.results[""][-1].is_final, what="the camera frame's last exit")
    assert exits_of(h.results[""], 100) == [(1, False, "none"), (2, False, "none"), (3, False, "none"),
                                            (4, True, "last_exit")]
    results = [first.get_result_async(), second.get_result_async()]
    assert model.wait_blocked()                        # the goals are held at the gate again
    assert not any(r.done() for r in results) and h.perception.action.finished == {}
    assert len(h.perception.action._goals) == 2
    model.open()
    for result in results:
        wait_for(result.done, what="goal result")
        assert result.result().status == GoalStatus.STATUS_SUCCEEDED
        assert result.result().result.exits_completed == 4
    assert h.perception.action.finished == {"succeeded": 2}
    assert h.perception.scheduler.stats().sources["action_0"].suspensions == 1


def test_a_future_completed_on_another_thread_wakes_the_single_threaded_executor(ros_context):
    """What the goals rely on: a coroutine awaiting an rclpy Future that another thread completes resumes, although
    nothing else ever wakes the executor (without wake_on_done it would wait forever)."""
    from rclpy.task import Future

    from anytime_perception.ros.perceive_action import wake_on_done

    node = rclpy.create_node("waker", namespace=f"/t_{uuid.uuid4().hex[:8]}", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        future = Future()
        wake_on_done(future, executor)
        awaiting = threading.Event()

        async def waiter():
            awaiting.set()
            return await future

        task = executor.create_task(waiter)
        assert awaiting.wait(10)
        time.sleep(0.2)                                # let the executor go back to waiting (ordering, not timing)
        threading.Thread(target=future.set_result, args=(42,)).start()
        wait_for(task.done, what="the coroutine to resume")
        assert task.result() == 42
    finally:
        executor.shutdown(timeout_sec=5)
        thread.join(timeout=5)
        node.destroy_node()


# ----- bad input: counted, logged, and the node keeps serving ---------------------------------------------------
def _bad_images():
    good = frame(50, 8, 10)
    yield "unsupported_encoding", Image(header=good.header, height=8, width=10, encoding="bayer_rggb8", step=10,
                                        data=bytes(80))
    yield "zero_size", Image(header=good.header, height=0, width=0, encoding="rgb8", step=0, data=b"")
    yield "too_large", frame(50, 40, 40)                                  # max_image_pixels = 1000
    yield "bad_step", Image(header=good.header, height=8, width=10, encoding="rgb8", step=20, data=bytes(160))
    yield "bad_length", Image(header=good.header, height=8, width=10, encoding="rgb8", step=30, data=bytes(100))
    yield "bad_shape", Image(header=good.header, height=8, width=9, encoding="yuv422", step=18, data=bytes(144))


def test_every_bad_input_is_counted_and_logged_while_the_node_keeps_serving(harnesses):
    model = GatedModel(gated=False)
    h = harnesses(model=model, params={"max_image_pixels": 1000, "subscribe_compressed": True,
                                       "policies.frames": "fifo"})
    compressed = h.client.create_publisher(CompressedImage, "image/compressed", RELIABLE)
    h.wait_matched()
    wait_for(lambda: compressed.get_subscription_count(), what="compressed subscription")
    counters = h.camera().counters
    expected = {}
    for reason, msg in _bad_images():
        h.publish(msg)
        expected[reason] = expected.get(reason, 0) + 1
        wait_for(lambda: counters.rejected == expected, what=f"{reason} to be counted")
    ok, jpeg = cv2.imencode(".jpg", np.full((8, 10, 3), 80, np.uint8))
    corrupt = CompressedImage(header=header(7), format="jpeg", data=jpeg.tobytes()[:20] + b"\x00" * 40)
    bad_format = CompressedImage(header=header(8), format="rgb8; compressedDepth png", data=b"\x89PNG")
    for reason, msg in (("decode_failed", corrupt), ("unsupported_encoding", bad_format)):
        compressed.publish(msg)
        expected[reason] = expected.get(reason, 0) + 1
        wait_for(lambda: counters.rejected == expected, what=f"compressed {reason} to be counted")
    assert h.results[""] == [] and counters.accepted == 0
    for reason in ("unsupported_encoding", "zero_size", "too_large", "bad_step", "bad_length", "bad_shape",
                   "decode_failed"):
        wait_for(lambda: h.logs(f": {reason}: "), what=f"a log line for {reason}")
    # still serving: a good raw frame and a good JPEG go through
    h.publish(frame(50, 8, 10, sec=300))
    compressed.publish(CompressedImage(header=header(301), format="jpeg", data=jpeg.tobytes()))
    wait_for(lambda: sum(m.is_final for m in h.results[""]) == 2, what="good frames after the bad ones")
    assert counters.accepted == 2 and counters.received == len(expected) + sum(expected.values()) - len(expected) + 2
    values = {}
    wait_for(lambda: values.update(_diagnostic_values(h)) or values.get("rejected") == str(sum(expected.values())),
             what="diagnostics with the rejections")
    assert values["rejected.too_large"] == "1" and values["rejected.unsupported_encoding"] == "2"


def test_a_frame_that_cannot_be_prepared_is_counted_logged_and_reported_at_once(harnesses, monkeypatch):
    model = GatedModel(gated=False)
    h = harnesses(model=model, params={"diagnostics_period_s": 3600.0})      # only the reports made here
    h.wait_matched()
    prepare = h.perception.intake.prepare

    def out_of_memory_for_frame_400(rgb, frame_header, *args, **kwargs):
        if frame_header.stamp.sec == 400:
            raise MemoryError("cannot allocate 3.2 GB")
        return prepare(rgb, frame_header, *args, **kwargs)

    monkeypatch.setattr(h.perception.intake, "prepare", out_of_memory_for_frame_400)
    counters = h.camera().counters
    h.publish(frame(50, sec=400))
    wait_for(lambda: counters.rejected == {"prepare_failed": 1}, what="the failure counted")
    wait_for(lambda: h.logs(": prepare_failed: MemoryError: cannot allocate"), what="a log line")
    (status,) = [s for s in h.perception.publish_diagnostics().status if s.name.endswith("input image")]
    assert status.level == diag_level("WARN") and "1 frames rejected" in status.message   # the first report
    h.publish(frame(50, sec=401))
    wait_for(lambda: exits_of(h.results[""], 401) and exits_of(h.results[""], 401)[-1][1], what="the next frame")
    assert counters.accepted == 1 and exits_of(h.results[""], 400) == []
    (status,) = [s for s in h.perception.publish_diagnostics().status if s.name.endswith("input image")]
    assert status.level == diag_level("OK")                               # nothing new since the last report


def diag_level(name):
    from anytime_perception.ros import diagnostics

    return bytes([getattr(diagnostics, name)])


def test_cancel_of_an_accepted_goal_that_has_not_started_is_accepted(harnesses):
    from rclpy.action import CancelResponse
    from unique_identifier_msgs.msg import UUID

    h = harnesses(model=GatedModel(gated=False))

    class NotStarted:
        goal_id = UUID(uuid=list(range(16)))

    assert h.perception.action.on_cancel(NotStarted()) == CancelResponse.ACCEPT


def test_load_model_picks_the_execution_and_refuses_devices_it_cannot_use():
    from anytime_perception.models.sparse import SparseExecution
    from anytime_perception.ros.weights import ModelLoadError, load_model

    sparse = load_model("adpc_hrnet_w18s_seg", "", "cpu", (64, 128), "sparse")
    assert isinstance(sparse.model.execution, SparseExecution)
    emulated = load_model("adpc_hrnet_w18s_seg", "", "cpu", (64, 128), "emulate")
    assert type(emulated.model.execution).__name__ == "EmulatedExecution"
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA is not available"):
            load_model("adpc_hrnet_w18s_seg", "", "cuda:0", None)
    with pytest.raises(ModelLoadError, match="(CUDA device|CUDA is not available)"):
        load_model("adpc_hrnet_w18s_seg", "", f"cuda:{torch.cuda.device_count() + 3}", None)


def test_auto_execution_is_measured_at_the_input_size_where_the_hardware_decides(monkeypatch):
    """Where `auto_candidates` names executions (CUDA with Triton; here the CPU pretends, with emulate and sparse),
    the node keeps the one that timed faster and says so; elsewhere, and for other requests, nothing changes."""
    from anytime_perception.models import execution
    from anytime_perception.ros.weights import load_model, measure_auto_execution

    loaded = load_model("adpc_hrnet_w18s_person_seg", "pretrained", "cpu", (64, 96), "emulate")
    assert measure_auto_execution(loaded, "auto", (64, 96), "cpu") is loaded  # the CPU's choice is fixed
    monkeypatch.setattr(execution, "auto_candidates", lambda device: ("emulate", "sparse"))
    assert measure_auto_execution(loaded, "emulate", (64, 96), "cpu") is loaded  # asked for by name
    assert measure_auto_execution(loaded, "auto", None, "cpu") is loaded  # size known only from the frames
    timed = {}
    monkeypatch.setattr(execution, "time_executions",
                        lambda model, images, names: timed.setdefault("s", {"emulate": 0.02, "sparse": 0.01}))
    chosen = measure_auto_execution(loaded, "auto", (64, 96), "cpu")
    assert chosen.execution == "sparse" and chosen.model.execution.name == "sparse"
    assert chosen.execution_reason == chosen.model.execution_reason == (
        "auto on cpu: sparse measured fastest for an adaptive forward at 64x96 (emulate 20.0 ms, sparse 10.0 ms)")


def test_unstamped_frames_run_from_arrival(harnesses):
    model = GatedModel(gated=False)
    h = harnesses(model=model, params={"deadline_ms": 5000.0})
    h.wait_matched()
    unstamped = frame(50)
    unstamped.header.stamp.sec = unstamped.header.stamp.nanosec = 0
    h.publish(unstamped)                              # header.stamp zero
    wait_for(lambda: h.results[""] and h.results[""][-1].is_final, what="the frame")
    assert [m.exit_index for m in h.results[""]] == [1, 2, 3, 4]
    assert h.results[""][0].header.stamp.sec == 0                  # published unchanged
    assert h.camera().counters.unstamped == 1
    wait_for(lambda: h.logs("without header.stamp"), what="log line")


# ----- parameters ------------------------------------------------------------------------------------------------
def test_parameters_have_descriptors_and_bad_values_are_rejected_with_a_reason(harnesses):
    model = GatedModel(gated=False)
    h = harnesses(model=model, params={"cameras": ["front"]}, cameras=("front",))
    node = h.node
    for name in ("model", "checkpoint", "device", "deadline_ms", "priority", "policies.frames", "overlay_alpha",
                 "cameras.front.priority"):
        assert node.describe_parameter(name).description, name
    assert node.describe_parameter("model").read_only and not node.describe_parameter("deadline_ms").read_only
    assert node.describe_parameter("overlay_alpha").floating_point_range[0].to_value == 1.0
    bad = {
        "policies.frames": ("bogus", "policies.frames must be one of"),
        "confidence_encoding": ("rgb8", "32FC1, mono8"),
        "overlay_alpha": (1.5, "out of range"),
        "deadline_ms": (-1.0, "out of range"),
        "model": ("adpc_hrnet_w48_seg", "read-only"),
        "input_height": (32, "read-only"),
        "cameras.front.deadline_ms": (-5.0, "out of range"),
        "policies.max_age_s": (0.0, "out of range"),
        "priority": ("high", "type"),
    }
    # through the parameter services, as `ros2 param set` does
    remote = AsyncParameterClient(h.client, node.get_fully_qualified_name())
    assert remote.wait_for_services(timeout_sec=10)

    def set_remote(*parameters):
        future = remote.set_parameters(list(parameters))
        wait_for(future.done, what="set_parameters response")
        return future.result().results

    for name, (value, reason) in bad.items():
        (result,) = set_remote(Parameter(name, value=value))
        assert not result.successful, name
        assert reason.lower() in result.reason.lower(), (name, result.reason)
    (result,) = set_remote(Parameter("cameras.rear.priority", value=3))       # no camera "rear"
    assert not result.successful
    # good values are applied at run time
    results = set_remote(Parameter("cameras.front.deadline_ms", value=80.0), Parameter("cameras.front.priority",
                                                                                        value=4),
                         Parameter("policies.frames", value="fifo"), Parameter("policies.max_queued", value=3))
    assert all(r.successful for r in results)
    executor = h.perception.scheduler
    assert executor.source_config("front").priority == 4
    assert executor.source_config("front").budget == pytest.approx(0.080)
    assert executor.policies.frames.name == "fifo" and executor.policies.frames.max_queued == 3
    wait_for(lambda: h.logs("rejected parameter change"), what="log line")
    # still serving
    h.wait_matched("front")
    h.publish(frame(50), "front")
    wait_for(lambda: h.results["front"] and h.results["front"][-1].is_final, what="a frame")


def test_policies_are_selectable_by_parameter_and_qos_overridable(harnesses):
    model = GatedModel(gated=False)
    h = harnesses(model=model, params={"policies.frames": "finish_then_latest", "policies.deadline": "deadline",
                                       "policies.priority": "fifo", "policies.suspend": "suspend",
                                       "policies.max_suspended": 3})
    policies = h.perception.scheduler.policies.describe()
    assert policies == {"frames": {"name": "finish_then_latest"}, "deadline": {"name": "deadline"},
                        "priority": {"name": "fifo"}, "suspend": {"name": "suspend", "max_suspended": 3,
                                                                  "max_age": 1.0}}
    subscriptions = h.node.get_subscriptions_info_by_topic(f"{h.namespace}/image")
    mine = [s for s in subscriptions if s.node_name == h.node.get_name()]
    assert mine[0].qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT      # sensor data by default
    publishers = {t: h.node.get_publishers_info_by_topic(f"{h.namespace}/{t}") for t in ("segmentation",
                                                                                        "label_info",
                                                                                        "overlay/image")}
    assert publishers["segmentation"][0].qos_profile.reliability == ReliabilityPolicy.RELIABLE
    assert publishers["label_info"][0].qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
    assert publishers["overlay/image"][0].qos_profile.reliability == ReliabilityPolicy.RELIABLE  # matches any


def test_qos_override_parameter_changes_the_image_subscription(ros_context):
    namespace = f"/t_{uuid.uuid4().hex[:8]}"
    node = AnytimeNode(context=ros_context, namespace=namespace, model_loader=GatedModel(gated=False).loader(),
                       parameter_overrides=[Parameter(f"qos_overrides.{namespace}/image.subscription.reliability",
                                                      value="reliable"),
                                            Parameter(f"qos_overrides.{namespace}/overlay/image.publisher.depth",
                                                      value=1)])
    try:
        (sub,) = [s for s in node.get_subscriptions_info_by_topic(f"{namespace}/image")]
        assert sub.qos_profile.reliability == ReliabilityPolicy.RELIABLE
        overlay = node.perception.cameras[0].sink.progressive.images["overlay"][0]
        assert overlay.qos_profile.depth == 1 and overlay.qos_profile.reliability == ReliabilityPolicy.RELIABLE
    finally:
        node.destroy_node()


# ----- diagnostics, lifecycle -----------------------------------------------------------------------------------
def _diagnostic_values(h, name_part="input image"):
    array = h.perception.publish_diagnostics()
    (status,) = [s for s in array.status if name_part in s.name]
    return {kv.key: kv.value for kv in status.values}


def test_diagnostics_on_slash_diagnostics(harnesses):
    model = GatedModel(gated=False)
    h = harnesses(model=model, params={"deadline_ms": 60000.0, "diagnostics_period_s": 0.1})
    received = h.subscribe(DiagnosticArray, "/diagnostics")
    h.wait_matched()
    h.publish(frame(50))
    wait_for(lambda: h.results[""] and h.results[""][-1].is_final, what="a frame")

    def latest():
        for array in reversed(received):
            for status in array.status:
                if status.name.endswith("input image"):
                    values = {kv.key: kv.value for kv in status.values}
                    if values.get("jobs.completed") == "1":
                        return array, values
        return None

    wait_for(latest, what="/diagnostics with the completed frame")
    array, values = latest()
    names = [s.name for s in array.status]
    assert any(n.endswith("runtime") for n in names) and any(n.endswith("action perceive") for n in names)
    assert values["received"] == "1" and values["ended.last_exit"] == "1"
    assert values["deadline.exit_hit_rate"] == "1" and "exit_4.latency_p50_ms" in values
    runtime = {kv.key: kv.value for s in array.status if s.name.endswith("runtime") for kv in s.values}
    assert runtime["weights"] == "gated test model" and "policy.frames" in runtime


def test_lifecycle_node_loads_on_configure_serves_when_active_and_frees_on_cleanup(harnesses):
    from rclpy.lifecycle import TransitionCallbackReturn as Transition

    model = GatedModel(gated=False)
    h = harnesses(model=model, lifecycle=True)
    node = h.node
    assert h.perception.scheduler is None                                   # nothing loaded before configure
    assert node.trigger_configure() == Transition.SUCCESS
    assert h.perception.loaded is not None
    h.publish(frame(50, sec=500))                                          # inactive: not subscribed yet
    assert node.trigger_activate() == Transition.SUCCESS
    h.wait_matched()
    h.publish(frame(50, sec=501))
    wait_for(lambda: h.results[""] and h.results[""][-1].is_final, what="a frame while active")
    assert {m.header.stamp.sec for m in h.results[""]} == {501}
    h.publish(Image(header=header(509), height=0, width=0, encoding="rgb8", step=0, data=b""))
    wait_for(lambda: h.camera().counters.rejected == {"zero_size": 1}, what="a rejected frame")
    h.perception.publish_diagnostics()                                     # reported before the cleanup
    assert node.trigger_deactivate() == Transition.SUCCESS
    wait_for(lambda: h.publishers[""].get_subscription_count() == 0, what="the input unsubscribed")
    assert node.trigger_cleanup() == Transition.SUCCESS
    assert h.perception.loaded is None and h.perception.scheduler is None

    # configured again: fresh goal slots and counters (no negative deltas in the first report), serving again
    assert node.trigger_configure() == Transition.SUCCESS and node.trigger_activate() == Transition.SUCCESS
    assert len(h.perception.action._free_slots) == h.perception.settings.max_concurrent_goals
    h.wait_matched()
    h.publish(frame(50, sec=502))
    wait_for(lambda: exits_of(h.results[""], 502) and exits_of(h.results[""], 502)[-1][1], what="a frame again")
    (status,) = [s for s in h.perception.publish_diagnostics().status if s.name.endswith("input image")]
    assert status.level == diag_level("OK") and "-" not in status.message


def test_lifecycle_configure_fails_cleanly_on_a_missing_checkpoint(harnesses, tmp_path):
    from rclpy.lifecycle import TransitionCallbackReturn as Transition

    h = harnesses(lifecycle=True, params={"checkpoint": str(tmp_path / "missing.pth")})
    assert h.node.trigger_configure() == Transition.FAILURE
    wait_for(lambda: h.logs("does not exist"), what="the error in the log")


def test_stop_reasons_cover_every_runtime_end_reason():
    for cls in (AnytimeSegmentation, AnytimePose):
        constants = {getattr(cls, n) for n in dir(cls) if n.startswith("STOP_")}
        assert constants == {r.value for r in EndReason} | {"none"}


@pytest.mark.parametrize("config", ["seg.yaml", "pose.yaml"])
def test_parameter_files_hold_only_declared_parameters_and_start_the_node(ros_context, config):
    import yaml
    from pathlib import Path

    from anytime_perception.ros.params import SPECS

    path = Path(__file__).resolve().parents[1] / "config" / config

    def flatten(prefix, mapping):
        for key, value in mapping.items():
            name = f"{prefix}.{key}" if prefix else key
            yield from flatten(name, value) if isinstance(value, dict) else [(name, value)]

    values = dict(flatten("", yaml.safe_load(path.read_text())["/**"]["ros__parameters"]))
    assert set(values) <= set(SPECS), set(values) - set(SPECS)
    context = rclpy.Context()
    rclpy.init(context=context, args=["--ros-args", "--params-file", str(path)])
    try:
        model = GatedModel(gated=False, task="pose" if config == "pose.yaml" else "seg")
        node = AnytimeNode(context=context, model_loader=model.loader())
        assert {name: node.get_parameter(name).value for name in values} == values
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def test_readme_parameter_table_is_current():
    from pathlib import Path

    from anytime_perception.ros.params import markdown_table

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert markdown_table() in readme, "README's parameter table differs from params.markdown_table()"


# ----- every frame accounted for (issue 10) -----------------------------------------------------------------------
def test_every_accepted_frame_ends_with_one_frame_end_whatever_ended_it(harnesses):
    from anytime_perception.msg import FrameEnd

    model = GatedModel()
    h = harnesses(model=model)
    ends = h.subscribe(FrameEnd, "frame_end")
    h.wait_matched()
    h.publish(frame(10, sec=100))
    assert model.wait_blocked()
    model.allow(2)                                     # module1, exit1 of frame 100
    wait_for(lambda: len(h.results[""]) == 1, what="exit 1")
    assert model.wait_blocked()                        # before module2 of frame 100
    h.publish(frame(20, sec=101))                      # preempts frame 100 between its exits ...
    h.wait_accepted(2)
    h.publish(frame(30, sec=102))                      # ... and is superseded by 102 before it starts
    h.wait_accepted(3)
    model.open()
    # Published after the frame's last exit message, but on another topic: DDS may deliver the two in either order.
    wait_for(lambda: len(ends) == 3 and len(exits_of(h.results[""], 102)) == 4,
             what="three frame_end messages and frame 102's four exits")
    by_stamp = {m.header.stamp.sec: (m.exits_delivered, m.stop_reason, m.num_exits) for m in ends}
    assert by_stamp == {100: (1, "preempted", 4), 101: (0, "superseded", 4), 102: (4, "last_exit", 4)}
    # after the frame's last exit message, which says is_final itself where that is known then
    assert exits_of(h.results[""], 102)[-1] == (4, True, "last_exit")
    assert exits_of(h.results[""], 100) == [(1, False, "none")]
    numbers = {m.header.stamp.sec: m.frame_number for m in h.results[""]}
    assert all(numbers[m.header.stamp.sec] == m.frame_number for m in ends if m.header.stamp.sec in numbers)
    assert ends[-1].header == h.results[""][-1].header


def test_frames_with_stamps_far_from_the_node_clock_are_counted_warned_once_and_timed_from_arrival(harnesses):
    model = GatedModel(gated=False)
    h = harnesses(model=model, params={"deadline_ms": 5000.0, "max_stamp_skew_s": 10.0, "policies.frames": "fifo"})
    h.wait_matched()
    for sec in (1, -5, 2**31 - 1):                     # 1970, before 1970, 2038
        h.publish(frame(50, sec=sec))
    wait_for(lambda: sum(m.is_final for m in h.results[""]) == 3, what="the three frames")
    # all ran every exit within their deadline, measured from arrival (from their stamps they would have expired)
    assert [m.stop_reason for m in h.results[""] if m.is_final] == ["last_exit"] * 3
    assert {m.header.stamp.sec for m in h.results[""]} == {1, -5, 2**31 - 1}    # published unchanged
    assert h.camera().counters.bad_stamp == 3 and h.camera().counters.unstamped == 0
    values = _diagnostic_values(h)
    assert values["bad_stamp"] == "3" and float(values["exit_4.latency_p99_ms"]) < 60_000
    wait_for(lambda: h.logs("max_stamp_skew_s"), what="the warning")
    assert len(h.logs("max_stamp_skew_s")) == 1                                   # once
    h.publish(frame(50))                                                          # a good stamp: its own time
    wait_for(lambda: sum(m.is_final for m in h.results[""]) == 4, what="a well stamped frame")
    assert h.camera().counters.bad_stamp == 3


def test_refusals_by_rclpy_itself_are_logged_by_the_node(harnesses):
    h = harnesses(model=GatedModel(gated=False))
    for parameter in (Parameter("model", value="adpc_hrnet_w48_seg"),          # read-only
                      Parameter("overlay_alpha", value=1.5),                   # out of range
                      Parameter("priority", value="high")):                    # wrong type
        (result,) = h.node.set_parameters([parameter])
        assert not result.successful
    wait_for(lambda: len(h.logs("rejected parameter change")) == 3, what="three log lines")
    lines = h.logs("rejected parameter change")
    assert "read-only" in lines[0] and "1.5" in lines[1] and "type" in lines[2]


def test_lost_frames_are_the_gaps_in_each_publishers_sequence_numbers():
    from anytime_perception.ros.intake import PublisherSequences

    sequences = PublisherSequences()
    a, b = {"data": b"a" * 16}, {"data": b"b" * 16}
    gaps = [sequences.gap({"publication_sequence_number": n, "publisher_gid": gid})
            for n, gid in ((5, a), (6, a), (9, a), (1, b), (10, a), (4, b))]
    assert gaps == [0, 0, 2, 0, 0, 2] and sequences.available      # counting starts at each publisher's first
    unsupported = PublisherSequences()
    assert unsupported.gap({"publication_sequence_number": 2**64 - 1, "publisher_gid": a}) == 0
    assert unsupported.gap(None) == 0 and not unsupported.available


def test_an_output_backlog_between_reports_makes_the_runtime_status_warn():
    from anytime_perception.ros import diagnostics
    from anytime_perception.runtime.stats import RuntimeStats

    info = {"output_queue_depth": 0, "output_queue_peak_since_report": diagnostics.OUTPUT_BACKLOG_WARN + 13}
    status = diagnostics.runtime_status("node: runtime", "hw", info, RuntimeStats(), {})
    assert status.level == diag_level("WARN") and "29 exits" in status.message
    quiet = diagnostics.runtime_status("node: runtime", "hw", dict(info, output_queue_peak_since_report=3),
                                       RuntimeStats(), {})
    assert quiet.level == diag_level("OK")


def test_the_gated_test_model_is_a_staged_model():
    from anytime_perception.runtime import StagedModel

    assert isinstance(GatedModel(), StagedModel)
