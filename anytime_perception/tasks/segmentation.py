"""Segmentation outputs: labels and confidence at the input's resolution, colour overlays."""
from __future__ import annotations

import numpy as np
import torch.nn.functional as F
from torch import Tensor


def upsample_logits(logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of (B, K, h, w) logits to `size`, as the authors evaluate (align_corners=False)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def colorize(labels: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 RGB via a (K, 3) uint8 palette."""
    return colors[np.clip(labels, 0, len(colors) - 1)]


def blend(image_rgb: np.ndarray, color_map: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Alpha-blend a colour map over an image of the same size (both uint8 RGB)."""
    mixed = image_rgb.astype(np.uint16) * int(round((1 - alpha) * 256)) + color_map.astype(np.uint16) * int(
        round(alpha * 256))
    return (mixed >> 8).astype(np.uint8)


def to_uint8_confidence(confidence: Tensor | np.ndarray) -> np.ndarray:
    """Confidence in [0, 1] -> mono8 (0..255)."""
    c = confidence.detach().float().cpu().numpy() if isinstance(confidence, Tensor) else confidence
    return np.clip(np.rint(c * 255.0), 0, 255).astype(np.uint8)


def labels_at(logits: Tensor, size: tuple[int, int] | None = None) -> Tensor:
    """Class ids (B, H, W) of logits, optionally after bilinear upsampling to `size`."""
    if size is not None:
        logits = upsample_logits(logits, size)
    return logits.argmax(dim=1)


def nearest_resize(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an (h, w[, c]) array to (H, W) with numpy indexing (labels must not blend)."""
    h, w = array.shape[:2]
    rows = (np.arange(size[0]) * h // size[0]).clip(0, h - 1)
    cols = (np.arange(size[1]) * w // size[1]).clip(0, w - 1)
    return array[rows][:, cols]


def as_numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()

