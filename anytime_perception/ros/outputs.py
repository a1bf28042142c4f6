"""From one exit of one frame to the node's output messages (no publishing here: the task's output builder in
:mod:`.task_outputs` and the frame's sink in :mod:`.publishing` decide where they go).

Every output carries the input frame's header unchanged. Segmentation masks (labels, confidence, computed
positions) are at the model's output resolution (1/4 of the model's input size, covering the whole input frame);
overlays at the model's input size; each image gets a CameraInfo for its own size (the input camera's calibration
scaled, or a pinhole guess when the input has none), so rviz2's Camera display projects it correctly.
Keypoints are in the input frame's pixel coordinates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import cv2
import numpy as np
from builtin_interfaces.msg import Duration as DurationMsg
from geometry_msgs.msg import Point
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from ..data.labels import MPII_JOINTS, MPII_SKELETON, class_names, palette
from ..data.transfer import exit_tensors, segmentation_tensors, to_host
from ..msg import AnytimePose, AnytimeSegmentation, ClassLabel, Keypoint, LabelInfo
from ..tasks.metrics import ExitCost
from .image_codec import array_to_image, confidence_to_image, labels_to_image, pinhole_camera_info, rgb_to_image
from .image_codec import scale_camera_info

IGNORE_ID = 255
MARKER_LIFETIME_S = 1.0     # a skeleton disappears from rviz2 when no newer exit replaces it within this time


@dataclass
class FrameInfo:
    """What the node keeps with each submitted frame (``Job.meta['frame']``)."""

    header: Header            # the input header, published unchanged
    stamp: float              # seconds the runtime measures deadlines from (header stamp, or arrival if unstamped)
    number: int               # running count of accepted frames (frame_number in the messages)
    width: int                # the input frame's size
    height: int
    rgb: np.ndarray | None    # uint8 RGB for overlays: the input frame (output_size 'input') or the model's input
    stamped: bool = True      # False: the header had no usable stamp, `stamp` is the arrival time
    sink: Any = None          # where its exits and its end go: a camera's publishers or an action goal


# ----- label maps -----------------------------------------------------------------------------------------------
class LabelMap:
    """Names and colours of a model's classes (segmentation) or joints (pose)."""

    def __init__(self, task: str, num_outputs: int, labels: dict | None = None):
        """``labels``: what the weights' file says the outputs are (``AnytimeHRNet.labels``); used when it has one
        name per output, else the task's defaults (Cityscapes classes, MPII joints)."""
        self.task = task
        labels = labels or {}
        if task == "pose":
            self.names = list(MPII_JOINTS[:num_outputs]) + [f"joint_{i}" for i in range(len(MPII_JOINTS),
                                                                                         num_outputs)]
            self.skeleton = [(a, b) for a, b in MPII_SKELETON if a < num_outputs and b < num_outputs]
        else:
            self.names = class_names(num_outputs)
            self.skeleton = []
        colors = palette(num_outputs)
        names = labels.get("joint_names" if task == "pose" else "class_names")
        if isinstance(names, list) and len(names) == num_outputs:
            self.names = [str(n) for n in names]
            given = labels.get("colors")
            if task != "pose" and isinstance(given, list) and len(given) == num_outputs:
                colors = [tuple(int(v) for v in c) for c in given]
        self.colors = np.asarray(colors, np.uint8)           # (K, 3) RGB
        # labels above the class count (never produced) and IGNORE_ID map to black
        self.lut = np.zeros((256, 3), np.uint8)
        self.lut[: len(self.colors)] = self.colors

    def message(self, header: Header, model_name: str, num_exits: int) -> LabelInfo:
        classes = [ClassLabel(id=i, name=name, color=ColorRGBA(r=c[0] / 255.0, g=c[1] / 255.0, b=c[2] / 255.0,
                                                               a=1.0))
                   for i, (name, c) in enumerate(zip(self.names, self.colors.tolist()))]
        return LabelInfo(header=header, task="pose" if self.task == "pose" else "segmentation", model=model_name,
                         num_exits=num_exits, classes=classes, ignore_id=IGNORE_ID,
                         skeleton=[i for pair in self.skeleton for i in pair])


# ----- camera models --------------------------------------------------------------------------------------------
class CameraModel:
    """The latest usable CameraInfo of an input (or a pinhole guess) and CameraInfos for output images of any size.

    ``update`` runs on the executor's thread and ``for_size`` on the output thread: the calibration and its
    version are swapped as one tuple, and cached CameraInfos are keyed by that version, so a reader never mixes
    an old calibration with a new one. ``warn`` (set by the node) is told, once per kind, why a camera_info is not
    used: no size, no focal lengths (what drivers without a calibration file publish), or a size whose aspect
    ratio differs from the frames'; the pinhole guess is used instead."""

    def __init__(self, warn: Callable[[str], Any] | None = None):
        self.warn = warn
        self._current: tuple[int, CameraInfo | None] = (0, None)
        self._signature: tuple | None = None
        self._cache: dict[tuple, CameraInfo] = {}
        self._warned: set[str] = set()

    @property
    def info(self) -> CameraInfo | None:
        return self._current[1]

    def _warn_once(self, kind: str, text: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            if self.warn is not None:
                self.warn(text)

    def update(self, info: CameraInfo) -> bool:
        """Take ``info`` as the calibration if it is usable; returns whether it is."""
        if info.width == 0 or info.height == 0:
            self._warn_once("size", "camera_info with zero width or height ignored; images' CameraInfos use a "
                                    "pinhole guess")
            return False
        if not (info.k[0] > 0.0 and info.k[4] > 0.0):
            self._warn_once("uncalibrated", "camera_info without focal lengths (K is zero: the camera is not "
                                            "calibrated) ignored; images' CameraInfos use a pinhole guess")
            return False
        roi = info.roi
        signature = (info.width, info.height, info.binning_x, info.binning_y, roi.x_offset, roi.y_offset,
                     roi.width, roi.height, info.distortion_model, tuple(info.d), tuple(info.k), tuple(info.r),
                     tuple(info.p))
        if signature != self._signature:
            self._signature = signature
            self._current = (self._current[0] + 1, info)
        return True

    def _matches(self, info: CameraInfo, frame_w: int, frame_h: int) -> bool:
        """Whether ``info`` describes frames of this shape: the same aspect ratio within 2% (drivers publish the
        calibration's size for downscaled images too)."""
        roi = info.roi
        w, h = (roi.width, roi.height) if roi.width and roi.height else (info.width, info.height)
        aspect = (w / max(info.binning_x, 1)) / (h / max(info.binning_y, 1))
        return abs(aspect / (frame_w / frame_h) - 1.0) <= 0.02

    def for_size(self, header: Header, frame_w: int, frame_h: int, width: int, height: int) -> CameraInfo:
        """A CameraInfo for an image of ``width`` x ``height`` covering the input frame (``frame_w`` x
        ``frame_h``), stamped with ``header``."""
        version, info = self._current
        if info is not None and not self._matches(info, frame_w, frame_h):
            self._warn_once(f"aspect {frame_w}x{frame_h}",
                            f"camera_info of {info.width}x{info.height} does not match frames of "
                            f"{frame_w}x{frame_h} (aspect ratio); images' CameraInfos use a pinhole guess")
            version, info = 0, None
        key = (version, frame_w, frame_h, width, height)
        template = self._cache.get(key)
        if template is None:
            source = info if info is not None else pinhole_camera_info(Header(), frame_w, frame_h)
            template = scale_camera_info(source, width, height)
            if len(self._cache) > 32:
                self._cache.clear()
            self._cache[key] = template
        return CameraInfo(header=header, width=template.width, height=template.height,
                          distortion_model=template.distortion_model, d=template.d, k=template.k, r=template.r,
                          p=template.p)

    def intrinsics(self, frame_w: int, frame_h: int) -> tuple[float, float, float, float]:
        """(fx, fy, cx, cy) for the input frame's pixels."""
        info = self.for_size(Header(), frame_w, frame_h, frame_w, frame_h)
        k = info.k
        return float(k[0]), float(k[4]), float(k[2]), float(k[5])


# ----- segmentation ---------------------------------------------------------------------------------------------
@dataclass
class SegmentationArrays:
    labels: np.ndarray        # (h, w) uint8 class ids
    confidence: np.ndarray    # (h, w) float32 in [0, 1]
    computed: np.ndarray      # (h, w) uint8, 255 = computed at this exit, 0 = carried over
    cost: ExitCost            # this image's cumulative GFLOPs and computed fraction


def class_ids(logits) -> np.ndarray:
    """(K, h, w) CPU logits -> (h, w) uint8 argmax. numpy's argmax over the class axis is ~4x faster than torch's
    (1.5 vs 5.8 ms for 19 x 128 x 256)."""
    return logits.detach().numpy().argmax(axis=0).astype(np.uint8)


def segmentation_arrays(exit_result, batch_index: int = 0) -> SegmentationArrays:
    """The exit's arrays on the host. Off the CPU the class ids are taken there and everything comes over in one
    copy (`to_host`)."""
    host = _exit_to_host(exit_result, segmentation_tensors(exit_result, batch_index))
    labels = host["labels"] if "labels" in host else class_ids(exit_result.logits[batch_index])
    return SegmentationArrays(labels, host["confidence"], host["computed"], host["cost"])


def resize_arrays(arrays: SegmentationArrays, width: int, height: int) -> SegmentationArrays:
    """The exit's arrays at ``width`` x ``height`` (the input frame's size): class ids and the computed mask by
    nearest sampling, confidence bilinearly."""
    if arrays.labels.shape == (height, width):
        return arrays
    size = (width, height)
    return SegmentationArrays(cv2.resize(arrays.labels, size, interpolation=cv2.INTER_NEAREST),
                              cv2.resize(arrays.confidence, size, interpolation=cv2.INTER_LINEAR),
                              cv2.resize(arrays.computed, size, interpolation=cv2.INTER_NEAREST), arrays.cost)


def segmentation_overlay(rgb: np.ndarray, labels: np.ndarray, lut: np.ndarray, alpha: float) -> np.ndarray:
    """Class colours of ``labels`` (nearest-resized to ``rgb``'s size) blended over ``rgb`` (uint8 RGB)."""
    colours = lut[labels]
    height, width = rgb.shape[:2]
    if colours.shape[:2] != (height, width):
        colours = cv2.resize(colours, (width, height), interpolation=cv2.INTER_NEAREST)
    return cv2.addWeighted(rgb, 1.0 - alpha, colours, alpha, 0.0)


def segmentation_message(result, frame: FrameInfo, arrays: SegmentationArrays, confidence_encoding: str,
                         model_time: float, end_to_end: float) -> AnytimeSegmentation:
    header = frame.header
    msg = AnytimeSegmentation(header=header, **_metadata(result, frame, arrays.cost, model_time, end_to_end))
    msg.labels = labels_to_image(arrays.labels, header)
    msg.confidence = confidence_to_image(arrays.confidence, header, confidence_encoding)
    msg.computed = array_to_image(arrays.computed, "mono8", header)
    return msg


def _metadata(result, frame: FrameInfo, cost: ExitCost, model_time: float, end_to_end: float) -> dict:
    exit_result = result.exit
    deadline_ms = 0.0 if result.deadline is None else (result.deadline - frame.stamp) * 1000.0
    timings = result.timings
    return dict(
        exit_index=int(exit_result.index), num_exits=int(exit_result.num_exits), is_final=bool(result.is_final),
        stop_reason=result.final_reason.value if result.final_reason is not None else AnytimeSegmentation.STOP_NONE,
        frame_number=frame.number % (1 << 32),
        computed_fraction=cost.computed_fraction, gflops=cost.gflops,
        deadline_ms=deadline_ms, priority=int(result.priority),
        queue_wait_ms=_ms(timings.queue_wait), exit_time_ms=_ms(timings.model_time), model_time_ms=_ms(model_time),
        end_to_end_ms=_ms(end_to_end))


def _ms(seconds: float) -> float:
    return seconds * 1000.0 if math.isfinite(seconds) else 0.0


# ----- pose -----------------------------------------------------------------------------------------------------
@dataclass
class PoseArrays:
    coords: np.ndarray        # (J, 2) keypoint (x, y) in the input frame's pixels
    scores: np.ndarray        # (J,) heatmap peaks
    computed: np.ndarray      # (h, w) uint8 at the heatmaps' resolution, 255 = computed at this exit
    cost: ExitCost


def pose_arrays(exit_result, frame_w: int, frame_h: int, batch_index: int = 0) -> PoseArrays:
    """The exit's keypoints (decoded where the heatmaps are) and computed mask on the host, in one copy."""
    from ..tasks.pose import decode_heatmaps

    heatmaps = exit_result.logits[batch_index : batch_index + 1].float()
    coords, scores = decode_heatmaps(heatmaps, (frame_h, frame_w))
    host = _exit_to_host(exit_result, {**exit_tensors(exit_result, batch_index), "coords": coords[0],
                                       "scores": scores[0]})
    return PoseArrays(host["coords"], host["scores"], host["computed"], host["cost"])


def pose_message(result, frame: FrameInfo, arrays: PoseArrays, labels: LabelMap, model_time: float,
                 end_to_end: float, computed: np.ndarray) -> AnytimePose:
    """`computed`: the arrays' computed mask at the size it is published at."""
    coords, scores = arrays.coords, arrays.scores
    keypoints = [Keypoint(id=j, name=labels.names[j], x=float(coords[j, 0]), y=float(coords[j, 1]),
                          score=float(scores[j])) for j in range(len(scores))]
    msg = AnytimePose(header=frame.header, image_width=frame.width, image_height=frame.height, keypoints=keypoints,
                      **_metadata(result, frame, arrays.cost, model_time, end_to_end))
    msg.computed = array_to_image(computed, "mono8", frame.header)
    return msg


def _exit_to_host(exit_result, tensors: dict) -> dict:
    """`tensors` (one image's, on the exit's device, with `exit_tensors`' entries) on the host in one copy, the
    computed mask filled in where the exit computed everything and the cost as an `ExitCost`."""
    host = to_host(tensors)
    if "computed" not in host:                                # exit 1 computes everything
        host["computed"] = np.full(tuple(exit_result.logits.shape[-2:]), 255, np.uint8)
    host["cost"] = ExitCost(gflops=float(host["cost"][1]), computed_fraction=float(host["cost"][0]))
    return host


def pose_overlay(rgb: np.ndarray, coords: np.ndarray, scores: np.ndarray, frame_w: int, frame_h: int,
                 labels: LabelMap, min_score: float) -> np.ndarray:
    """The skeleton drawn on ``rgb`` (the input frame, or the frame at the model's input size); coordinates are in
    input frame pixels."""
    out = rgb.copy()
    height, width = out.shape[:2]
    sx, sy = width / frame_w, height / frame_h
    points = [(int(round((x + 0.5) * sx - 0.5)), int(round((y + 0.5) * sy - 0.5))) for x, y in coords]
    visible = scores >= min_score
    thickness = max(1, round(min(width, height) / 160))
    for a, b in labels.skeleton:
        if visible[a] and visible[b]:
            cv2.line(out, points[a], points[b], (255, 255, 255), thickness, cv2.LINE_AA)
    for j, point in enumerate(points):
        if visible[j]:
            cv2.circle(out, point, thickness + 2, tuple(int(c) for c in labels.colors[j]), -1, cv2.LINE_AA)
    return out


def pose_markers(header: Header, coords: np.ndarray, scores: np.ndarray, intrinsics: tuple[float, float, float, float],
                 labels: LabelMap, min_score: float, scale: float, namespace: str) -> MarkerArray:
    """The skeleton as markers in the input's frame: each keypoint's pixel (u, v) is back-projected to depth 1 m
    through the camera model, (x, y, z) = ((u - cx) / fx, (v - cy) / fy, 1), so rviz2's Camera display draws it on
    the image and a 3D view shows it 1 m in front of the camera. Joints: a SPHERE_LIST (id 0); bones: a LINE_LIST
    (id 1); keypoints below ``min_score`` are left out; markers expire after MARKER_LIFETIME_S."""
    fx, fy, cx, cy = intrinsics
    visible = scores >= min_score
    points = [Point(x=(float(u) - cx) / fx, y=(float(v) - cy) / fy, z=1.0) for u, v in coords]
    lifetime = DurationMsg(sec=int(MARKER_LIFETIME_S), nanosec=int((MARKER_LIFETIME_S % 1) * 1e9))
    joints = Marker(header=header, ns=namespace, id=0, type=Marker.SPHERE_LIST, action=Marker.ADD, lifetime=lifetime)
    joints.pose.orientation.w = 1.0
    joints.scale.x = joints.scale.y = joints.scale.z = scale
    for j in np.flatnonzero(visible):
        c = labels.colors[j]
        joints.points.append(points[j])
        joints.colors.append(ColorRGBA(r=c[0] / 255.0, g=c[1] / 255.0, b=c[2] / 255.0, a=1.0))
    bones = Marker(header=header, ns=namespace, id=1, type=Marker.LINE_LIST, action=Marker.ADD, lifetime=lifetime)
    bones.pose.orientation.w = 1.0
    bones.scale.x = scale / 2.0
    bones.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
    for a, b in labels.skeleton:
        if visible[a] and visible[b]:
            bones.points += [points[a], points[b]]
    return MarkerArray(markers=[joints, bones])
