"""Segmentation logits at the labels' resolution, as the authors evaluate and train (losses.py, metrics.py).

Output images (class ids, confidence, overlays) are made where they are published, from the model's own argmax
(`ExitResult.labels`), not here.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def upsample_logits(logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of (B, K, h, w) logits to `size`, as the authors evaluate (align_corners=False)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
