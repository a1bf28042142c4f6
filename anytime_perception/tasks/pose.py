"""Pose outputs: keypoints from heatmaps, decoded as the HRNet pose code does (argmax + quarter-pixel shift)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Keypoint:
    name: str
    x: float  # pixels in the input image
    y: float
    score: float  # heatmap peak value


def decode_heatmaps(heatmaps: Tensor, input_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """(B, J, h, w) heatmaps -> coordinates (B, J, 2) as (x, y) in input pixels and scores (B, J).

    The peak is shifted a quarter pixel toward the larger neighbour in x and y (deep-high-resolution-net's
    `get_final_preds` without the affine transform), then scaled from heatmap to input pixels.
    """
    b, j, h, w = heatmaps.shape
    flat = heatmaps.reshape(b, j, -1)
    scores, idx = flat.max(dim=2)
    px = (idx % w).float()
    py = torch.div(idx, w, rounding_mode="floor").float()
    hm = heatmaps.float()
    xi, yi = px.long(), py.long()
    bi = torch.arange(b, device=heatmaps.device).view(b, 1).expand(b, j)
    ji = torch.arange(j, device=heatmaps.device).view(1, j).expand(b, j)
    inner_x = (xi > 0) & (xi < w - 1)
    inner_y = (yi > 0) & (yi < h - 1)
    dx = hm[bi, ji, yi, (xi + 1).clamp(max=w - 1)] - hm[bi, ji, yi, (xi - 1).clamp(min=0)]
    dy = hm[bi, ji, (yi + 1).clamp(max=h - 1), xi] - hm[bi, ji, (yi - 1).clamp(min=0), xi]
    px = px + torch.where(inner_x, torch.sign(dx) * 0.25, torch.zeros_like(px))
    py = py + torch.where(inner_y, torch.sign(dy) * 0.25, torch.zeros_like(py))
    scale_x, scale_y = input_size[1] / w, input_size[0] / h
    # heatmap pixel centres map to input pixel centres
    coords = torch.stack([(px + 0.5) * scale_x - 0.5, (py + 0.5) * scale_y - 0.5], dim=-1)
    return coords, scores
