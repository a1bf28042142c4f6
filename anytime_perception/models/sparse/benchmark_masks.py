"""Masks for measuring the sparse backend: synthetic ones calibrated to the paper's FLOPs, and real frames.

- `synthetic_difficulty`: a per-pixel "difficulty" field at 1/4 resolution made of class-boundary bands (distance
  to the edges of random Voronoi regions) and smooth blobs; thresholding it at increasing levels gives nested
  compute masks, as confidence adaptivity's carry-over does.
- `calibrate_to_gflops`: thresholds per exit so that the model's per-exit GFLOPs (paper convention, the
  authors' per-resolution fractions) hit targets, e.g. Table 1's ADP-C row.
- `ScriptedCriterion`: a confidence criterion that returns those masks, so a model runs under them.
- `shipped_frames`: the shipped clip's frames (768x576 JPEGs), ImageNet-normalised, resized to a size.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..confidence import Assessment
from ..configs import IMAGENET_MEAN, IMAGENET_STD
from ..flops import gflops_for_fractions, padded
from ..masks import ComputeMask, mask_from_bool

# Table 1, ADP-C (HRNet-W48, Cityscapes 1024x2048): cumulative GFLOPs after exits 2, 3, 4.
PAPER_ADPC_W48_GFLOPS = (93.9, 259.3, 387.1)
PAPER_SIZE = (1024, 2048)
FRAMES_DIR = Path(__file__).resolve().parents[2] / "assets" / "vtest"


def synthetic_difficulty(height: int, width: int, batch: int = 1, seed: int = 0, regions: int = 40) -> Tensor:
    """(B, H, W) float field in [0, 2): high near region boundaries and inside random blobs."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batch):
        seeds = torch.rand(regions, 2, generator=gen) * torch.tensor([height, width])
        yy, xx = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                                indexing="ij")
        d2 = (yy[None] - seeds[:, 0, None, None]) ** 2 + (xx[None] - seeds[:, 1, None, None]) ** 2
        label = d2.argmin(0)
        edge = torch.zeros(height, width, dtype=torch.bool)
        edge[:, 1:] |= label[:, 1:] != label[:, :-1]
        edge[1:, :] |= label[1:, :] != label[:-1, :]
        # distance to the nearest edge by repeated 3x3 dilation (Chebyshev), capped
        reach = edge.float()[None, None]
        dist = torch.where(edge, 0.0, 64.0)
        for step in range(1, 64):
            reach = F.max_pool2d(reach, 3, 1, 1)
            dist = torch.where((reach[0, 0] > 0) & (dist > step), torch.tensor(float(step)), dist)
        band = torch.exp(-dist / (0.02 * max(height, width)))
        noise = torch.randn(1, 1, height // 32 + 2, width // 32 + 2, generator=gen)
        blob = torch.sigmoid(3 * F.interpolate(noise, size=(height, width), mode="bicubic", align_corners=False)[0, 0])
        out.append(band + 0.8 * blob)
    return torch.stack(out)


def masks_from_levels(difficulty: Tensor, levels: list[float]) -> list[Tensor]:
    """Nested (B, h, w) bool masks: compute where difficulty >= level (levels ascending)."""
    return [difficulty >= level for level in levels]


def _fractions(config, size, masks: list[Tensor]) -> dict[int, dict[tuple[int, int], float]]:
    from ..flops import step_cost_table

    groups = {(g.height, g.width) for step in step_cost_table(config, padded(size)) for g in step.masked}
    ph, pw = padded(size)
    out = {}
    for k, m in enumerate(masks, start=1):
        cm = ComputeMask(mask_from_bool(m, (ph // 4, pw // 4), torch.float32), None)
        out[k] = {hw: float(cm.fraction(*hw).mean()) for hw in groups}
    return out


def calibrate_to_gflops(config, size: tuple[int, int], difficulty: Tensor,
                        targets: tuple[float, ...]) -> tuple[list[Tensor], list[float]]:
    """Levels such that the cumulative GFLOPs after exits 2..N hit `targets` (one per masked exit), by bisection
    exit by exit. Returns the masks and the GFLOPs reached."""
    levels: list[float] = []
    flat = difficulty.flatten()
    for k, target in enumerate(targets):
        lo, hi = 0.0, 1.0  # share of pixels computed
        for _ in range(30):
            p = (lo + hi) / 2
            level = float(torch.quantile(flat, 1 - p)) if p < 1 else float(flat.min())
            if levels and level < levels[-1]:
                level = levels[-1]
            masks = masks_from_levels(difficulty, levels + [level])
            got = gflops_for_fractions(config, size, _fractions(config, size, masks + masks[-1:] * (len(targets)
                                                                                                     - k - 1)))[k + 1]
            lo, hi = (p, hi) if got < target else (lo, p)
        levels.append(level)
    masks = masks_from_levels(difficulty, levels)
    reached = gflops_for_fractions(config, size, _fractions(config, size, masks))[1:]
    return masks, reached


def paper_targets(config, size: tuple[int, int]) -> tuple[float, ...]:
    """Table 1's ADP-C GFLOPs after exits 2-4, scaled to `size` by the dense model's cost ratio."""
    from ..flops import dense_gflops_per_exit

    here = dense_gflops_per_exit(config, size)
    there = dense_gflops_per_exit(config, PAPER_SIZE)
    return tuple(t * here[k + 1] / there[k + 1] for k, t in enumerate(PAPER_ADPC_W48_GFLOPS))


class ScriptedCriterion:
    """Stands in for the model's confidence criterion: after exit k it returns `masks[k-1]` (compute = True)."""

    def __init__(self, masks: list[Tensor]):
        self.masks = masks
        self.calls = 0

    def __call__(self, logits: Tensor) -> Assessment:
        k = self.calls % (len(self.masks) + 1)
        self.calls += 1
        b, _, h, w = logits.shape
        if k < len(self.masks):
            compute = self.masks[k][:b, :h, :w].to(logits.device)
        else:
            compute = torch.ones(b, h, w, dtype=torch.bool, device=logits.device)
        return Assessment(torch.ones(b, h, w, dtype=logits.dtype, device=logits.device), compute,
                          logits.argmax(dim=1))


def shipped_frames(size: tuple[int, int], count: int = 1, start: int = 0) -> Tensor:
    """(count, 3, H, W) ImageNet-normalised RGB frames of the shipped clip, resized (stretched) to `size`."""
    import cv2
    import numpy as np

    files = sorted(FRAMES_DIR.glob("*.jpg"))[start:start + count]
    if len(files) < count:
        raise FileNotFoundError(f"need {count} frames in {FRAMES_DIR}, found {len(files)}")
    out = []
    for f in files:
        bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
        rgb = cv2.resize(bgr, (size[1], size[0]), interpolation=cv2.INTER_AREA)[:, :, ::-1].astype(np.float32) / 255
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)
        out.append((x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None])
    return torch.stack(out)
