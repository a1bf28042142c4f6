"""The generated interfaces (msg/, action/): importable from the venv, serialization round trips, pub/sub through
the middleware, and the ament index of the dev install."""
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from conftest import dependency_missing

try:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.serialization import deserialize_message, serialize_message
    from std_msgs.msg import ColorRGBA, Header

    from anytime_perception.action import Perceive
    from anytime_perception.msg import (AnytimePose, AnytimeSegmentation, ClassLabel, Keypoint, LabelInfo,
                                        PriorityEvent)
except ImportError as error:  # pragma: no cover - depends on the environment
    dependency_missing(error)

from anytime_perception.ros.image_codec import confidence_to_image, image_to_array, labels_to_image

ROOT = Path(__file__).resolve().parents[1]
STOP_REASONS = ("none", "last_exit", "deadline", "preempted", "predicted_miss", "cancelled", "superseded", "expired",
                "stale", "evicted", "failed", "shutdown")   # "none" + every runtime EndReason


def _header(sec=12, nanosec=345, frame_id="front_camera"):
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = sec, nanosec
    return header


def _segmentation(exit_index=2) -> AnytimeSegmentation:
    rng = np.random.default_rng(exit_index)
    labels = rng.integers(0, 19, (8, 16)).astype(np.uint8)
    confidence = rng.random((8, 16)).astype(np.float32)
    return AnytimeSegmentation(
        header=_header(), exit_index=exit_index, num_exits=4, is_final=True,
        stop_reason=AnytimeSegmentation.STOP_DEADLINE, frame_number=41,
        labels=labels_to_image(labels, _header()), confidence=confidence_to_image(confidence, _header()),
        # float32-exact values (messages compare by value after a round trip)
        computed_fraction=0.625, gflops=34.75, deadline_ms=100.0, priority=2,
        queue_wait_ms=1.5, exit_time_ms=12.25, model_time_ms=30.5, end_to_end_ms=40.0,
    )


def _pose() -> AnytimePose:
    keypoints = [Keypoint(id=i, name=n, x=10.0 + i, y=20.5, score=0.125 * i)
                 for i, n in enumerate(("r_ankle", "r_knee", "r_hip"))]
    return AnytimePose(header=_header(), exit_index=1, num_exits=4, is_final=False,
                       stop_reason=AnytimePose.STOP_NONE, frame_number=7, image_width=768, image_height=576,
                       keypoints=keypoints, computed_fraction=1.0, gflops=2.5, deadline_ms=0.0, priority=0,
                       queue_wait_ms=0.5, exit_time_ms=3.0, model_time_ms=3.0, end_to_end_ms=5.0)


def _fields(msg) -> dict:
    return {name: getattr(msg, name) for name in msg.get_fields_and_field_types()}


def test_message_fields_are_the_public_interface():
    seg = AnytimeSegmentation.get_fields_and_field_types()
    for name, kind in [("header", "std_msgs/Header"), ("exit_index", "uint8"), ("num_exits", "uint8"),
                       ("is_final", "boolean"), ("stop_reason", "string"), ("labels", "sensor_msgs/Image"),
                       ("confidence", "sensor_msgs/Image"), ("computed_fraction", "float"), ("gflops", "float"),
                       ("queue_wait_ms", "double"), ("exit_time_ms", "double"), ("model_time_ms", "double"),
                       ("end_to_end_ms", "double")]:
        assert seg[name] == kind, name
    pose = AnytimePose.get_fields_and_field_types()
    assert pose["keypoints"] == "sequence<anytime_perception/Keypoint>"
    for name in ("header", "exit_index", "num_exits", "is_final", "stop_reason", "computed_fraction", "gflops"):
        assert pose[name] == seg[name]
    assert Keypoint.get_fields_and_field_types() == {"id": "uint16", "name": "string", "x": "float", "y": "float",
                                                     "score": "float"}
    assert set(PriorityEvent.get_fields_and_field_types()) == {"header", "priority", "deadline_ms", "reason", "source",
                                                               "num_frames"}
    for cls in (AnytimeSegmentation, AnytimePose):
        assert sorted(getattr(cls, f"STOP_{r.upper()}") for r in STOP_REASONS) == sorted(STOP_REASONS)


@pytest.mark.parametrize("make", [_segmentation, _pose,
                                  lambda: PriorityEvent(header=_header(), priority=5, deadline_ms=50.0,
                                                        reason="obstacle ahead", source="/front/image"),
                                  lambda: LabelInfo(header=_header(), task="pose", model="adpc_hrnet_w32_pose",
                                                    num_exits=4, ignore_id=255, skeleton=[0, 1, 1, 2],
                                                    classes=[ClassLabel(id=0, name="r_ankle",
                                                                        color=ColorRGBA(r=1.0, a=1.0))])])
def test_serialization_round_trip(make):
    msg = make()
    data = serialize_message(msg)
    back = deserialize_message(data, type(msg))
    assert back == msg
    # CDR alignment padding is not initialised by the serializer, so compare lengths and decoded values, not bytes.
    again = serialize_message(back)
    assert len(again) == len(data)
    assert deserialize_message(again, type(msg)) == msg


def test_segmentation_images_survive_the_round_trip():
    msg = _segmentation()
    back = deserialize_message(serialize_message(msg), AnytimeSegmentation)
    np.testing.assert_array_equal(image_to_array(back.labels), image_to_array(msg.labels))
    np.testing.assert_array_equal(image_to_array(back.confidence), image_to_array(msg.confidence))
    assert back.labels.encoding == "mono8" and back.confidence.encoding == "32FC1"


def test_action_types_are_generated():
    goal = Perceive.Goal(deadline_ms=80.0, priority=3)
    goal.image = labels_to_image(np.zeros((4, 4), np.uint8), _header())
    feedback = Perceive.Feedback(segmentation=_segmentation(1))
    result = Perceive.Result(stop_reason="cancelled", exits_completed=1, segmentation=_segmentation(1))
    for msg in (goal, feedback, result):
        assert deserialize_message(serialize_message(msg), type(msg)) == msg
    # the action's services and feedback message exist (what an ActionServer needs)
    assert Perceive.Impl.SendGoalService and Perceive.Impl.GetResultService and Perceive.Impl.FeedbackMessage


def _spin_until(executor, predicate, timeout=5.0):
    end = time.monotonic() + timeout
    while not predicate() and time.monotonic() < end:
        executor.spin_once(timeout_sec=0.02)
    return predicate()


def test_publish_and_receive_through_the_middleware(ros_context):
    """Pub/sub loads the Fast DDS typesupport libraries of the generated package from the venv."""
    namespace = f"/msgtest_{uuid.uuid4().hex[:8]}"
    node = rclpy.create_node("msg_test", namespace=namespace, context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    received = []
    node.create_subscription(AnytimeSegmentation, "segmentation", received.append, 10)
    node.create_subscription(AnytimePose, "pose", received.append, 10)
    seg_pub = node.create_publisher(AnytimeSegmentation, "segmentation", 10)
    pose_pub = node.create_publisher(AnytimePose, "pose", 10)
    assert _spin_until(executor, lambda: seg_pub.get_subscription_count() and pose_pub.get_subscription_count())
    seg_pub.publish(_segmentation())
    pose_pub.publish(_pose())
    assert _spin_until(executor, lambda: len(received) == 2)
    by_type = {type(m): m for m in received}
    assert by_type[AnytimeSegmentation] == _segmentation()
    assert by_type[AnytimePose] == _pose()
    executor.shutdown()
    node.destroy_node()


def _venv_python(code: str) -> subprocess.CompletedProcess:
    """Run `code` with this interpreter from a directory outside the checkout (no cwd imports), clean ROS env."""
    env = {k: v for k, v in os.environ.items() if k not in ("AMENT_PREFIX_PATH", "PYTHONPATH")}
    return subprocess.run([sys.executable, "-c", code], cwd="/", env=env, capture_output=True, text=True, timeout=60)


def test_generated_package_imports_outside_the_checkout_and_the_ament_index_finds_the_package():
    code = (
        "import anytime_perception.msg as m, anytime_perception.action as a, anytime_perception\n"
        "from ament_index_python.packages import get_package_share_directory\n"
        "print(m.__file__); print(anytime_perception.__file__)\n"
        "print(get_package_share_directory('anytime_perception'))\n"
    )
    result = _venv_python(code)
    assert result.returncode == 0, result.stderr
    msg_file, pkg_file, share = result.stdout.split()
    assert Path(pkg_file).parent == ROOT / "anytime_perception"           # the editable source tree ...
    assert Path(msg_file).parent == ROOT / "anytime_perception" / "msg"   # ... with the generated msg linked in
    share = Path(share)
    for name in ("package.xml", "msg/AnytimeSegmentation.msg", "action/Perceive.action",
                 "launch/seg.launch.py", "config/seg.yaml", "config/fastdds_large_images.xml", "rviz/anytime.rviz"):
        assert (share / name).is_file(), name
