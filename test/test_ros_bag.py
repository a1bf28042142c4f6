"""Bag helpers (anytime_perception.ros.bag): real rosbag2 MCAP bags with this package's types, written from rclpy
messages and from a live graph, read back with rclpy and with rosbags."""
import json
import os
import time
import uuid

import numpy as np
import pytest
import yaml

from conftest import dependency_missing

try:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import DurabilityPolicy, QoSProfile
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from anytime_perception.msg import AnytimePose, AnytimeSegmentation, Keypoint, LabelInfo, PriorityEvent
    from anytime_perception.ros.bag import BagWriter, TopicRecorder, import_type, make_typestore, read_bag, type_name
    from anytime_perception.ros.player import FramePlayer
except ImportError as error:  # pragma: no cover - depends on the environment
    dependency_missing(error, "ROS 2, rosbags or the generated messages")

from anytime_perception.ros.image_codec import image_to_rgb, labels_to_image
from anytime_perception.ros.resources import share_dir


def _segmentation(i: int) -> AnytimeSegmentation:
    header = Header(frame_id="cam")
    header.stamp.sec = 100 + i
    return AnytimeSegmentation(header=header, exit_index=i % 4 + 1, num_exits=4, is_final=i % 4 == 3,
                               stop_reason="last_exit" if i % 4 == 3 else "none",
                               labels=labels_to_image(np.full((4, 6), i, np.uint8), header), gflops=float(i))


def test_type_names():
    assert type_name(AnytimeSegmentation) == "anytime_perception/msg/AnytimeSegmentation"
    assert type_name(Image()) == "sensor_msgs/msg/Image"
    assert import_type("anytime_perception/msg/AnytimePose") is AnytimePose
    assert import_type("sensor_msgs/Image") is Image


def test_custom_types_registered_with_the_same_type_hashes_as_rosidl():
    store = make_typestore()
    for name in ("AnytimeSegmentation", "AnytimePose", "Keypoint", "PriorityEvent", "LabelInfo", "ClassLabel"):
        generated = json.loads((share_dir() / "msg" / f"{name}.json").read_text())
        assert store.hash_rihs01(f"anytime_perception/msg/{name}") == generated["type_hashes"][0]["hash_string"]


def test_write_and_read_back_mcap(tmp_path):
    path = tmp_path / "bag"
    with BagWriter(path) as bag:
        bag.add_topic("/segmentation", AnytimeSegmentation)
        bag.add_topic("/pose", "anytime_perception/msg/AnytimePose")
        bag.add_topic("/priority_event", PriorityEvent)
        for i in range(8):
            bag.write("/segmentation", _segmentation(i), timestamp_ns=1_000 + i)
        pose = AnytimePose(keypoints=[Keypoint(id=3, name="l_hip", x=1.5, y=2.5, score=0.75)])
        bag.write("/pose", pose, timestamp_ns=2_000)
        from rclpy.serialization import serialize_message
        bag.write("/priority_event", serialize_message(PriorityEvent(priority=9, reason="r")), timestamp_ns=3_000)
    assert bag.counts == {"/segmentation": 8, "/pose": 1, "/priority_event": 1}

    metadata = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert metadata["storage_identifier"] == "mcap" and metadata["version"] == 9
    assert metadata["message_count"] == 10
    assert list(path.glob("*.mcap"))

    messages = list(read_bag(path))
    assert [m.timestamp_ns for m in messages] == sorted(m.timestamp_ns for m in messages)
    segs = [m.message for m in messages if m.topic == "/segmentation"]
    assert segs == [_segmentation(i) for i in range(8)]
    assert next(m.message for m in messages if m.topic == "/pose") == pose
    assert next(m.message for m in messages if m.topic == "/priority_event").priority == 9

    # without ROS: rosbags' own deserializer with the registered .msg definitions
    plain = list(read_bag(path, topics=["/pose", "/segmentation"], deserialize="rosbags"))
    assert len(plain) == 9
    first = plain[0].message
    assert first.exit_index == 1 and first.labels.encoding == "mono8" and bytes(first.labels.data) == bytes(24)
    assert next(m for m in plain if m.topic == "/pose").message.keypoints[0].name == "l_hip"
    assert all(isinstance(m.message, bytes) for m in read_bag(path, deserialize="none"))


def test_bag_writer_errors(tmp_path):
    (tmp_path / "exists").mkdir()
    with pytest.raises(FileExistsError):
        BagWriter(tmp_path / "exists")
    with pytest.raises(ValueError, match="storage"):
        BagWriter(tmp_path / "x", storage="rosbag1")
    with BagWriter(tmp_path / "bag") as bag:
        with pytest.raises(KeyError, match="unknown"):
            bag.add_topic("/t", "nobody/msg/Nothing")
        with pytest.raises(KeyError, match="not added"):
            bag.write("/t", Image(), 0)
        bag.add_topic("/t", Image)
        with pytest.raises(ValueError, match="already recorded"):
            bag.add_topic("/t", AnytimePose)
    with pytest.raises(ValueError, match="deserialize"):
        list(read_bag(tmp_path / "bag", deserialize="json"))


def test_topic_recorder_records_a_live_graph(ros_context, tmp_path):
    namespace = f"/bag_{uuid.uuid4().hex[:8]}"
    player = FramePlayer(context=ros_context, namespace=namespace,
                         parameter_overrides=[Parameter("rate", value=50.0), Parameter("count", value=5),
                                              Parameter("width", value=96), Parameter("height", value=72),
                                              Parameter("wait_for_subscribers", value=1)])
    recorder_node = rclpy.create_node("recorder", namespace=namespace, context=ros_context)
    latched = recorder_node.create_publisher(
        LabelInfo, "label_info", QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    latched.publish(LabelInfo(task="segmentation", model="m", num_exits=4))   # before the recorder exists
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(player)
    executor.add_node(recorder_node)
    recorder = TopicRecorder(recorder_node, tmp_path / "live",
                             {"image": Image, "label_info": LabelInfo, "segmentation": AnytimeSegmentation})
    end = time.monotonic() + 5.0
    while (recorder.counts[f"{namespace}/image"] < 5 or not recorder.counts[f"{namespace}/label_info"]) \
            and time.monotonic() < end:
        executor.spin_once(timeout_sec=0.01)
    recorder.close()
    executor.shutdown()
    player.destroy_node()
    recorder_node.destroy_node()

    messages = list(read_bag(tmp_path / "live"))
    images = [m for m in messages if m.topic == f"{namespace}/image"]
    assert len(images) == 5
    assert [image_to_rgb(m.message).shape for m in images] == [(72, 96, 3)] * 5
    stamps = [m.message.header.stamp.sec * 10**9 + m.message.header.stamp.nanosec for m in images]
    assert stamps == sorted(stamps) and all(m.timestamp_ns >= s for m, s in zip(images, stamps))
    assert [m.message.model for m in messages if m.topic == f"{namespace}/label_info"] == ["m"]   # latched
