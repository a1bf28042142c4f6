"""What each task publishes: one output builder per task (segmentation, pose), chosen once from the model's task.

A builder knows its result message type and topic, its image outputs, and turns one exit into its result message
plus whatever its image outputs reuse (:class:`ExitMessage`); it then publishes those image outputs (and markers)
into the output groups a sink gives it. The node, the publishers and the sinks never compare task names: adding a
task is adding a builder here and registering it in :data:`BUILDERS`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import cv2

from ..msg import AnytimePose, AnytimeSegmentation
from . import outputs as out

#: Publishes image outputs only while something subscribes (lazy_outputs): ``wanted(groups, kind)``.
Wanted = Callable[[list, str], bool]


@dataclass
class ExitMessage:
    """One exit as its result message, and the arrays its image outputs are drawn from."""

    message: Any                    # AnytimeSegmentation | AnytimePose
    rendered: Any                   # SegmentationArrays | (keypoint coordinates, scores)


class SegmentationOutputs:
    """labels, confidence, computed (mono8 / 32FC1 masks) and overlay (class colours on the input)."""

    task = "segmentation"
    result_type = AnytimeSegmentation
    result_topic = "segmentation"
    image_kinds = ("labels", "confidence", "computed", "overlay")
    marker_topic = None

    def __init__(self, settings, labels: out.LabelMap):
        self.settings = settings
        self.labels = labels

    def message(self, result, frame: out.FrameInfo, model_time: float) -> ExitMessage:
        arrays = out.segmentation_arrays(result.exit)
        if self.settings.output_size == "input":
            arrays = out.resize_arrays(arrays, frame.width, frame.height)
        msg = out.segmentation_message(result, frame, arrays, self.settings.confidence_encoding, model_time, 0.0)
        return ExitMessage(msg, arrays)

    def publish_images(self, exit_message: ExitMessage, frame: out.FrameInfo, camera, groups: list,
                       wanted: Wanted, publish_image: Callable) -> None:
        msg, s = exit_message.message, self.settings
        for kind, image in (("labels", msg.labels), ("confidence", msg.confidence), ("computed", msg.computed)):
            if wanted(groups, kind):
                publish_image(groups, kind, image)
        if s.publish_overlay and frame.rgb is not None and wanted(groups, "overlay"):
            overlay = out.segmentation_overlay(frame.rgb, exit_message.rendered.labels, self.labels.lut,
                                               float(s.overlay_alpha))
            publish_image(groups, "overlay", out.rgb_to_image(overlay, frame.header))

    @staticmethod
    def feedback_fields(msg) -> dict:
        return {"segmentation": msg}


class PoseOutputs:
    """pose_markers (skeleton markers at 1 m depth) and overlay (skeleton drawn on the input)."""

    task = "pose"
    result_type = AnytimePose
    result_topic = "pose"
    image_kinds = ("overlay",)
    marker_topic = "pose_markers"

    def __init__(self, settings, labels: out.LabelMap):
        self.settings = settings
        self.labels = labels

    def message(self, result, frame: out.FrameInfo, model_time: float) -> ExitMessage:
        arrays = out.pose_arrays(result.exit, frame.width, frame.height)
        computed = arrays.computed
        if self.settings.output_size == "input":
            computed = cv2.resize(computed, (frame.width, frame.height), interpolation=cv2.INTER_NEAREST)
        msg = out.pose_message(result, frame, arrays, self.labels, model_time, 0.0, computed)
        return ExitMessage(msg, (arrays.coords, arrays.scores))

    def publish_images(self, exit_message: ExitMessage, frame: out.FrameInfo, camera, groups: list,
                       wanted: Wanted, publish_image: Callable) -> None:
        s = self.settings
        coords, scores = exit_message.rendered
        if wanted(groups, "markers"):
            markers = out.pose_markers(frame.header, coords, scores,
                                       camera.camera_model.intrinsics(frame.width, frame.height), self.labels,
                                       s.keypoint_min_score, s.marker_scale,
                                       f"anytime_pose/{camera.name}" if camera.name else "anytime_pose")
            for group in groups:
                group.markers.publish(markers)
        if s.publish_overlay and frame.rgb is not None and wanted(groups, "overlay"):
            image = out.rgb_to_image(out.pose_overlay(frame.rgb, coords, scores, frame.width, frame.height,
                                                      self.labels, s.keypoint_min_score), frame.header)
            publish_image(groups, "overlay", image)

    @staticmethod
    def feedback_fields(msg) -> dict:
        return {"pose": msg}


#: The model's task (``model.config.task``) -> its output builder.
BUILDERS = {"seg": SegmentationOutputs, "pose": PoseOutputs}


def outputs_for(task: str, settings, labels: out.LabelMap):
    """The output builder of ``task`` ("seg" or "pose")."""
    try:
        return BUILDERS[task](settings, labels)
    except KeyError:
        raise ValueError(f"no outputs for task {task!r}; known: {', '.join(BUILDERS)}") from None
