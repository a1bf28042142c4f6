"""``anytime_player``: play a folder of images, a video file or the shipped clip as sensor_msgs/Image.

    anytime_player                                   # the shipped clip (30 frames of vtest.avi, 10 fps), once
    anytime_player --ros-args -p loop:=true          # forever
    anytime_player path/to/video.mp4 --ros-args -p rate:=30.0 -r image:=/camera/image_raw
    anytime_player path/to/folder --ros-args -p frame_id:=front_camera -p count:=100 -p loop:=true

Publishes on ``image`` (relative: namespaces and remaps apply) and, unless disabled, ``camera_info`` (a
distortion-free pinhole model, since clips carry no calibration) and ``image/compressed`` (JPEG). Every frame is
stamped with the node clock when it is published (sim time when ``use_sim_time`` is set) and carries ``frame_id``.
Frames are decoded when they are due, so a video of any length plays without loading it all.

Parameters (all declared with descriptors; ``ros2 param describe`` shows them):
    source (string, "")            folder, video file, or "" / "vtest" for the shipped clip
    rate (double, 0.0)             frames per second; 0 = the source's own rate (video FPS, 10 for the clip and
                                   for folders)
    loop (bool, false)             start again at the end
    count (int, 0)                 stop after this many frames; 0 = the whole source (forever with loop)
    frame_id (string, "camera")    header.frame_id of every message
    encoding (string, "rgb8")      rgb8, bgr8 or mono8
    width, height (int, 0)         resize every frame to this size; 0 = keep the source's size
    publish_camera_info (bool, true), horizontal_fov_deg (double, 60.0)
    publish_compressed (bool, false), jpeg_quality (int, 90)
    wait_for_subscribers (int, 0)  wait until this many subscriptions match `image` before the first frame
    wait_for_compressed_subscribers (int, 0)  ... and this many match `image/compressed`
    wait_settle_s (double, 0.5)    after they matched, wait this long before the first frame: a publisher sees a
                                   subscription before the subscriber has necessarily matched the publisher, and a
                                   best-effort subscriber would lose what comes in between
    wait_timeout_s (double, 10.0)  give up waiting after this long (then play anyway, with a warning)
    exit_when_done (bool, true)    end the process after the last frame (the console script only)

The player's process uses the large-image Fast DDS profile (config/fastdds_large_images.xml) unless
FASTDDS_DEFAULT_PROFILES_FILE is already set.
"""
from __future__ import annotations

import sys
import time

import cv2
import numpy as np
import rclpy
from rclpy.duration import Duration
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.utilities import remove_ros_args
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from ..data.frames import FrameSource, SourceError  # noqa: F401  (SourceError: part of this module's API)
from .fastdds import use_large_image_profile
from .image_codec import array_to_image, pinhole_camera_info

def _declare(node, name: str, default, description: str, *, read_only: bool = True, int_range=None, float_range=None):
    descriptor = ParameterDescriptor(name=name, description=description, read_only=read_only)
    if int_range is not None:
        descriptor.integer_range = [IntegerRange(from_value=int_range[0], to_value=int_range[1], step=1)]
    if float_range is not None:
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=float_range[0], to_value=float_range[1], step=0.0)]
    return node.declare_parameter(name, default, descriptor).value


class FramePlayer(Node):
    """Publishes a FrameSource's frames on ``image`` at a fixed rate with real stamps (see the module docstring).
    ``node_kwargs`` go to rclpy's Node (e.g. ``context``, ``namespace``, ``parameter_overrides``)."""

    def __init__(self, node_name: str = "anytime_player", **node_kwargs):
        super().__init__(node_name, **node_kwargs)

        source = _declare(self, "source", "", "folder of images, video file, or '' / 'vtest' for the shipped clip")
        rate = _declare(self, "rate", 0.0, "frames per second; 0 = the source's own rate", float_range=(0.0, 1000.0))
        self.loop = _declare(self, "loop", False, "start again at the end of the source")
        self.count = _declare(self, "count", 0, "stop after this many frames; 0 = all (forever with loop)",
                              int_range=(0, 2**31 - 1))
        self.frame_id = _declare(self, "frame_id", "camera", "header.frame_id of every published message")
        self.encoding = _declare(self, "encoding", "rgb8", "published encoding: rgb8, bgr8 or mono8")
        self.width = _declare(self, "width", 0, "resize frames to this width; 0 = keep", int_range=(0, 16384))
        self.height = _declare(self, "height", 0, "resize frames to this height; 0 = keep", int_range=(0, 16384))
        self.publish_camera_info = _declare(self, "publish_camera_info", True,
                                            "also publish a pinhole sensor_msgs/CameraInfo on camera_info")
        self.fov = _declare(self, "horizontal_fov_deg", 60.0, "horizontal field of view of that CameraInfo",
                            float_range=(1.0, 179.0))
        self.publish_compressed = _declare(self, "publish_compressed", False,
                                           "also publish JPEG sensor_msgs/CompressedImage on image/compressed")
        self.jpeg_quality = _declare(self, "jpeg_quality", 90, "JPEG quality of image/compressed",
                                     int_range=(1, 100))
        self.wait_for_subscribers = _declare(self, "wait_for_subscribers", 0,
                                             "wait for this many subscriptions on image before the first frame",
                                             int_range=(0, 1000))
        self.wait_for_compressed = _declare(self, "wait_for_compressed_subscribers", 0,
                                            "also wait for this many subscriptions on image/compressed",
                                            int_range=(0, 1000))
        self.wait_settle_s = _declare(self, "wait_settle_s", 0.5,
                                      "after the subscribers matched, wait this long before the first frame",
                                      float_range=(0.0, 60.0))
        self._matched_at: float | None = None
        self.wait_timeout_s = _declare(self, "wait_timeout_s", 10.0, "give up waiting for subscribers after this",
                                       float_range=(0.0, 3600.0))
        self.exit_when_done = _declare(self, "exit_when_done", True,
                                       "end the process after the last frame (console script)")
        if self.encoding not in ("rgb8", "bgr8", "mono8"):
            raise ValueError(f"parameter encoding must be rgb8, bgr8 or mono8, got {self.encoding!r}")
        if (self.width == 0) != (self.height == 0):
            raise ValueError("parameters width and height must both be 0 or both be set")

        self.source = FrameSource(source)
        self.rate = rate if rate > 0 else self.source.rate
        self._frames = self.source.frames(loop=self.loop)
        self.published = 0
        self.done = False
        self._wait_started = time.monotonic()

        qos = QoSProfile(history=QoSHistoryPolicy.KEEP_LAST, depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
        overrides = QoSOverridingOptions.with_default_policies()
        self.image_pub = self.create_publisher(Image, "image", qos, qos_overriding_options=overrides)
        self.info_pub = (self.create_publisher(CameraInfo, "camera_info", qos, qos_overriding_options=overrides)
                         if self.publish_camera_info else None)
        self.compressed_pub = (self.create_publisher(CompressedImage, "image/compressed", qos,
                                                     qos_overriding_options=overrides)
                               if self.publish_compressed else None)
        self.timer = self.create_timer(1.0 / self.rate, self._tick)
        total = "forever" if self.loop and not self.count else (
            f"{self.count} frames" if self.count else f"{self.source.length or 'all'} frames")
        self.get_logger().info(
            f"playing {self.source.name} at {self.rate:g} fps, {total}, frame_id {self.frame_id!r}, "
            f"on {self.image_pub.topic_name}")

    def _ready(self) -> bool:
        compressed = 0 if self.compressed_pub is None else self.wait_for_compressed
        if self.wait_for_subscribers <= 0 and compressed <= 0:
            return True
        matched = self.image_pub.get_subscription_count()
        if matched >= self.wait_for_subscribers and (
                compressed <= 0 or self.compressed_pub.get_subscription_count() >= compressed):
            if self._matched_at is None:
                self._matched_at = time.monotonic()
            if time.monotonic() - self._matched_at < self.wait_settle_s:
                return False
            self.wait_for_subscribers = self.wait_for_compressed = 0      # go; do not wait again
            return True
        if time.monotonic() - self._wait_started > self.wait_timeout_s:
            self.get_logger().warning(
                f"{matched} of {self.wait_for_subscribers} subscribers after {self.wait_timeout_s:g} s; playing anyway")
            self.wait_for_subscribers = self.wait_for_compressed = 0
            return True
        return False

    def _tick(self) -> None:
        if self.done or not self._ready():
            return
        if self.count and self.published >= self.count:
            self._finish()
            return
        frame = next(self._frames, None)
        if frame is None:
            self._finish()
            return
        self.publish_frame(frame)
        if self.count and self.published >= self.count:
            self._finish()

    def publish_frame(self, rgb: np.ndarray) -> None:
        """Publish one RGB frame (resized and converted as configured) stamped now."""
        if self.width and (rgb.shape[1], rgb.shape[0]) != (self.width, self.height):
            rgb = cv2.resize(rgb, (self.width, self.height), interpolation=cv2.INTER_AREA)
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self.frame_id)
        if self.encoding == "rgb8":
            pixels = rgb
        elif self.encoding == "bgr8":
            pixels = np.ascontiguousarray(rgb[:, :, ::-1])
        else:
            pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        self.image_pub.publish(array_to_image(pixels, self.encoding, header))
        if self.info_pub is not None:
            self.info_pub.publish(pinhole_camera_info(header, rgb.shape[1], rgb.shape[0], self.fov))
        if self.compressed_pub is not None:
            ok, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]),
                                    [cv2.IMWRITE_JPEG_QUALITY, int(self.jpeg_quality)])
            if ok:
                self.compressed_pub.publish(CompressedImage(header=header, format="rgb8; jpeg compressed bgr8",
                                                            data=jpeg.tobytes()))
        self.published += 1

    def _finish(self) -> None:
        if not self.done:
            self.done = True
            self.timer.cancel()
            self.source.close()
            self.get_logger().info(f"done: published {self.published} frames")


def main(argv: list[str] | None = None) -> int:
    """Console script ``anytime_player [SOURCE] [--ros-args ...]``."""
    argv = sys.argv if argv is None else argv
    extra = remove_ros_args(argv)[1:]
    if len(extra) > 1 or (extra and extra[0].startswith("-")):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    use_large_image_profile()
    rclpy.init(args=argv)
    overrides = [Parameter("source", Parameter.Type.STRING, extra[0])] if extra else []
    node = None
    try:
        node = FramePlayer(parameter_overrides=overrides)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while rclpy.ok() and not (node.done and node.exit_when_done):
            executor.spin_once(timeout_sec=0.1)
        # reliable subscribers in other processes: let them acknowledge the last frames before the node goes away
        for publisher in (node.image_pub, node.info_pub, node.compressed_pub):
            if publisher is not None:
                publisher.wait_for_all_acked(Duration(seconds=2.0))
    except (SourceError, ValueError) as error:
        print(f"anytime_player: {error}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
