"""The Fast DDS large-image profile: its content, the helper that points FASTDDS_DEFAULT_PROFILES_FILE at it, and
that 6 MB frames from another process arrive with it (default Fast DDS delivers almost none of them)."""
import os
import shutil
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import dependency_missing

try:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
except ImportError as error:  # pragma: no cover - depends on the environment
    dependency_missing(error, "ROS 2 wheels")

from anytime_perception.ros import fastdds

NS = "{http://www.eprosima.com}"


def test_profile_content():
    path = fastdds.profile_path()
    assert path.name == "fastdds_large_images.xml" and path.is_absolute()
    root = ET.parse(path).getroot()
    assert root.tag == f"{NS}dds"
    descriptors = {d.findtext(f"{NS}transport_id"): d for d in root.iter(f"{NS}transport_descriptor")}
    kinds = {tid: d.findtext(f"{NS}type") for tid, d in descriptors.items()}
    assert sorted(kinds.values()) == ["SHM", "UDPv4"]
    shm = next(d for d in descriptors.values() if d.findtext(f"{NS}type") == "SHM")
    assert int(shm.findtext(f"{NS}segment_size")) == 64 * 1024 * 1024
    participant = next(root.iter(f"{NS}participant"))
    assert participant.get("is_default_profile") == "true"
    rtps = participant.find(f"{NS}rtps")
    assert rtps.findtext(f"{NS}useBuiltinTransports") == "false"
    assert sorted(t.text for t in rtps.find(f"{NS}userTransports")) == sorted(descriptors)


def test_helper_sets_the_variable_only_when_unset():
    env = {}
    assert fastdds.use_large_image_profile(env) == str(fastdds.profile_path())
    assert env[fastdds.ENV_VAR] == str(fastdds.profile_path())
    env = {fastdds.ENV_VAR: "/my/own.xml"}
    assert fastdds.use_large_image_profile(env) == "/my/own.xml"
    assert fastdds.use_large_image_profile(env, override=True) == str(fastdds.profile_path())
    result = subprocess.run([sys.executable, "-m", "anytime_perception.ros.fastdds"], capture_output=True, text=True,
                            timeout=60)
    assert result.stdout.strip() == f"export FASTDDS_DEFAULT_PROFILES_FILE={fastdds.profile_path()}"


def test_large_frames_reach_another_process(ros_context):
    """anytime_player applies the profile itself; 1024x2048 rgb8 frames (6 MB) to a sensor-data subscriber here."""
    namespace = f"/dds_{uuid.uuid4().hex[:8]}"
    node = rclpy.create_node("listener", namespace=namespace, context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    received = []
    node.create_subscription(Image, "image", received.append, qos_profile_sensor_data)
    script = shutil.which("anytime_player", path=str(Path(sys.executable).parent))
    env = {k: v for k, v in os.environ.items() if k != fastdds.ENV_VAR}
    process = subprocess.Popen(
        [script, "--ros-args", "-r", f"__ns:={namespace}", "-p", "count:=10", "-p", "rate:=15.0",
         "-p", "loop:=true", "-p", "width:=2048", "-p", "height:=1024", "-p", "wait_for_subscribers:=1",
         "-p", "publish_camera_info:=false"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        end = time.monotonic() + 30.0
        while (process.poll() is None or len(received) < 10) and time.monotonic() < end:
            executor.spin_once(timeout_sec=0.01)
        output = process.communicate(timeout=10)[0]
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "XMLPARSER" not in output and "Error" not in output, output
    assert len(received) >= 9, f"{len(received)} of 10 large frames arrived"
    assert {(m.width, m.height, len(m.data)) for m in received} == {(2048, 1024, 2048 * 1024 * 3)}
    executor.shutdown()
    node.destroy_node()
