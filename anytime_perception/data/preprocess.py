"""From a uint8 RGB frame to the model's input: resizing to the model's input size and per-channel normalisation.

One implementation for the ROS node, model loading (calibration and warm-up frames) and benchmarks; no ROS here.
"""
from __future__ import annotations

import numpy as np


def normalizer(model) -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset) per channel so that ``pixel * scale - offset`` is the model's normalised input."""
    spec = model.config.task_spec
    std = np.asarray(spec.std, np.float32)
    mean = np.asarray(spec.mean, np.float32)
    return 1.0 / (255.0 * std), mean / std


def normalise(rgb: np.ndarray, scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 ``pixel * scale - offset`` per channel, with OpenCV's vectorised
    kernels (1 ms for 512x1024 on one core, 4-18 ms with a permuted torch conversion)."""
    import cv2

    out = np.empty((3,) + rgb.shape[:2], np.float32)
    for c, plane in enumerate(cv2.split(rgb)):
        cv2.addWeighted(plane, float(scale[c]), plane, 0.0, -float(offset[c]), dst=out[c], dtype=cv2.CV_32F)
    return out


def resize_to(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``rgb`` at ``size`` (H, W): area averaging when shrinking (no aliasing), bilinear when growing."""
    import cv2

    height, width = rgb.shape[:2]
    if (height, width) == tuple(size):
        return rgb
    shrink = size[0] * size[1] < height * width
    return cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


class Preprocessor:
    """A model's input transform: resize (to ``size``, or keep each frame's own size when None) and normalise."""

    def __init__(self, model, size: tuple[int, int] | None):
        self.size = size
        self.scale, self.offset = normalizer(model)

    def resized(self, rgb: np.ndarray) -> np.ndarray:
        return rgb if self.size is None else resize_to(rgb, self.size)

    def tensor(self, resized_rgb: np.ndarray):
        """(3, H, W) float32 torch tensor of an already resized frame."""
        import torch

        return torch.from_numpy(normalise(resized_rgb, self.scale, self.offset))


def clip_batch(size: tuple[int, int], count: int, model):
    """``count`` frames of the shipped clip (spread over it) resized to ``size`` and normalised for ``model``:
    (count, 3, H, W)."""
    import cv2
    import torch

    from .frames import clip_frames

    # Area averaging in both directions, as the calibrated untrained weights were first drawn with (changing it
    # would change those weights).
    scale, offset = normalizer(model)
    return torch.stack([torch.from_numpy(normalise(cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA),
                                                   scale, offset)) for rgb in clip_frames(count)])
