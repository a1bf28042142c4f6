"""anytime_player: frame sources (shipped clip, folder, video) and the node publishing them, in-process and as the
console script in another process."""
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from conftest import dependency_missing

try:
    import cv2
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image

    from anytime_perception.ros.player import FramePlayer, FrameSource, SourceError
except ImportError as error:  # pragma: no cover - depends on the environment
    dependency_missing(error, "ROS 2 wheels or OpenCV")

from anytime_perception.ros.image_codec import compressed_to_rgb, image_to_rgb
from anytime_perception.ros.resources import clip_dir


def _namespace() -> str:
    return f"/player_{uuid.uuid4().hex[:8]}"


def _spin_until(executor, predicate, timeout=5.0):
    end = time.monotonic() + timeout
    while not predicate() and time.monotonic() < end:
        executor.spin_once(timeout_sec=0.01)
    return predicate()


@pytest.fixture
def image_folder(tmp_path):
    """Three 40x30 images with distinct colours, plus a file that is not an image."""
    for i, name in enumerate(["b.png", "a.png", "c.jpg"]):
        cv2.imwrite(str(tmp_path / name), np.full((30, 40, 3), 60 * (i + 1), np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


# ----- sources -----------------------------------------------------------------------------------------------
def test_shipped_clip():
    source = FrameSource()
    assert source.rate == 10.0 and source.length == 30
    frames = list(source.frames())
    assert len(frames) == 30
    assert all(f.shape == (576, 768, 3) and f.dtype == np.uint8 for f in frames)
    assert sum(p.stat().st_size for p in clip_dir().glob("*.jpg")) < 2_100_000
    assert (clip_dir() / "README.md").read_text().count("BSD-3-Clause") >= 2
    source.rewind()
    np.testing.assert_array_equal(source.read(), frames[0])


def test_folder_source_sorted_and_looping(image_folder):
    source = FrameSource(image_folder)
    assert source.length == 3 and source.rate == 10.0
    it = source.frames(loop=True)
    means = [int(next(it).mean()) for _ in range(7)]
    # a.png (120), b.png (60), c.jpg (~180), then again
    assert means[:3] == [120, 60, means[2]] and 175 <= means[2] <= 185
    assert means[3:6] == means[:3] and means[6] == means[0]


def test_video_source(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (64, 48))
    assert writer.isOpened()
    for i in range(5):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    source = FrameSource(path)
    assert source.rate == pytest.approx(25.0) and source.length == 5
    frames = list(source.frames())
    assert len(frames) == 5 and frames[0].shape == (48, 64, 3)
    assert len(list(FrameSource(path).frames(loop=True).__iter__().__next__() for _ in range(3))) == 3


def test_bad_sources(tmp_path):
    with pytest.raises(SourceError, match="neither a folder nor a file"):
        FrameSource(tmp_path / "missing")
    with pytest.raises(SourceError, match="holds no images"):
        FrameSource(tmp_path)
    (tmp_path / "broken.avi").write_bytes(b"not a video")
    with pytest.raises(SourceError, match="cannot open"):
        FrameSource(tmp_path / "broken.avi")
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "x.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(SourceError, match="cannot decode"):
        FrameSource(folder).read()


# ----- the node, in-process ----------------------------------------------------------------------------------
def _run_player(context, overrides, topics=("image",), subscribe_after=0.0, timeout=5.0, expect=None):
    namespace = _namespace()
    player = FramePlayer(context=context, namespace=namespace,
                         parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
    listener = rclpy.create_node("listener", namespace=namespace, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(player)
    executor.add_node(listener)
    received = {topic: [] for topic in topics}
    types = {"image": Image, "camera_info": CameraInfo, "image/compressed": CompressedImage}

    def subscribe():
        for topic in topics:
            listener.create_subscription(types[topic], topic, received[topic].append, 50)

    if subscribe_after:
        _spin_until(executor, lambda: False, timeout=subscribe_after)
    subscribe()
    expect = expect if expect is not None else overrides.get("count")
    _spin_until(executor, lambda: player.done and all(len(v) >= expect for v in received.values()), timeout)
    executor.shutdown()
    player.destroy_node()
    listener.destroy_node()
    return player, received


def test_player_publishes_n_frames_with_increasing_stamps_and_the_frame_id(ros_context):
    player, received = _run_player(ros_context, {"rate": 50.0, "count": 6, "frame_id": "front_cam"},
                                   topics=("image", "camera_info"), subscribe_after=0.0)
    images, infos = received["image"], received["camera_info"]
    assert player.done and player.published == 6
    assert len(images) == 6 and len(infos) == 6
    stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in images]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    assert abs(stamps[0] - time.time_ns()) < 10 * 10**9                 # real (node clock) stamps, not zero
    assert {m.header.frame_id for m in images} == {"front_cam"}
    assert [(m.width, m.height, m.encoding) for m in images[:1]] == [(768, 576, "rgb8")]
    np.testing.assert_array_equal(image_to_rgb(images[0]), FrameSource().read())
    assert [i.header.stamp for i in infos] == [m.header.stamp for m in images]
    assert (infos[0].width, infos[0].height) == (768, 576)
    # at 50 fps, about 20 ms apart
    assert 0.010 < (stamps[-1] - stamps[0]) / 5 / 1e9 < 0.060


def test_player_resizes_converts_loops_and_compresses(ros_context, image_folder):
    player, received = _run_player(
        ros_context, {"source": str(image_folder), "rate": 100.0, "count": 5, "loop": True, "encoding": "bgr8",
                      "width": 20, "height": 16, "publish_compressed": True},
        topics=("image", "image/compressed"))
    images, compressed = received["image"], received["image/compressed"]
    assert len(images) == 5 and len(compressed) == 5
    assert {(m.width, m.height, m.encoding, m.step) for m in images} == {(20, 16, "bgr8", 60)}
    means = [int(image_to_rgb(m).mean()) for m in images]
    assert means[3] == means[0] and means[4] == means[1]                  # 3 images, looped
    assert compressed_to_rgb(compressed[0]).shape == (16, 20, 3)
    assert compressed[0].header == images[0].header


def test_player_waits_for_a_subscriber(ros_context):
    player, received = _run_player(ros_context, {"rate": 50.0, "count": 3, "wait_for_subscribers": 1},
                                   subscribe_after=0.3)
    assert len(received["image"]) == 3                                   # nothing published into the void


def test_player_parameters_have_descriptors_and_bad_values_are_refused(ros_context):
    namespace = _namespace()
    player = FramePlayer(context=ros_context, namespace=namespace)
    try:
        for name in ("source", "rate", "loop", "count", "frame_id", "encoding", "width", "height",
                     "publish_camera_info", "publish_compressed", "wait_for_subscribers"):
            descriptor = player.describe_parameter(name)
            assert descriptor.description, name
        assert player.describe_parameter("rate").floating_point_range[0].to_value == 1000.0
        assert player.describe_parameter("count").integer_range[0].from_value == 0
    finally:
        player.destroy_node()
    with pytest.raises(ValueError, match="rgb8, bgr8 or mono8"):
        FramePlayer(context=ros_context, namespace=namespace,
                    parameter_overrides=[Parameter("encoding", value="yuv422")])
    with pytest.raises(Exception, match="rate"):
        FramePlayer(context=ros_context, namespace=namespace, parameter_overrides=[Parameter("rate", value=-1.0)])


# ----- the console script, in another process ------------------------------------------------------------------
def _player_command() -> list:
    script = shutil.which("anytime_player", path=str(Path(sys.executable).parent))
    assert script, "console script anytime_player is not installed (pip install -e .)"
    return [script]


def test_console_script_publishes_to_another_process(ros_context):
    namespace = _namespace()
    listener = rclpy.create_node("listener", namespace=namespace, context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(listener)
    received = []
    listener.create_subscription(Image, "camera/image_raw", received.append, 50)
    process = subprocess.Popen(
        _player_command() + ["--ros-args", "-r", f"__ns:={namespace}", "-r", "image:=camera/image_raw",
                             "-p", "count:=4", "-p", "rate:=20.0", "-p", "frame_id:=xproc",
                             "-p", "wait_for_subscribers:=1", "-p", "width:=192", "-p", "height:=144"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _spin_until(executor, lambda: len(received) >= 4 and process.poll() is not None, timeout=20.0)
        output = process.communicate(timeout=10)[0]
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert len(received) == 4, output
    assert {(m.header.frame_id, m.width, m.height) for m in received} == {("xproc", 192, 144)}
    assert "published 4 frames" in output
    executor.shutdown()
    listener.destroy_node()


def test_console_script_reports_a_bad_source(tmp_path):
    result = subprocess.run(_player_command() + [str(tmp_path / "nothing_here")], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 1
    assert "neither a folder nor a file" in result.stderr
