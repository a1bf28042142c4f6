"""Confidence criteria: which positions of an exit's prediction still need computing.

Each criterion maps logits (B, C, h, w) to an `Assessment`: a per-pixel confidence (B, h, w), a compute mask
(B, h, w, bool, True = compute further) and, for classification tasks, the class ids (B, h, w) that fall out of
the same max at no extra cost (None for heatmaps). The paper's default is the maximum softmax probability with threshold 0.998 (Eq. 1);
the others are the Fig. 7 ablation and the pose rule of Sec. 4.2.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor


class Assessment(NamedTuple):
    confidence: Tensor
    compute: Tensor
    labels: Tensor | None


class MaxProbability:
    """Confidence = max softmax probability; compute where confidence <= threshold (the authors' `<=`)."""

    name = "max_prob"

    def __init__(self, threshold: float = 0.998):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"max_prob threshold must be in [0, 1], got {threshold}")
        self.threshold = threshold

    def __call__(self, logits: Tensor) -> Assessment:
        confidence, labels = torch.softmax(logits, dim=1).max(dim=1)
        return Assessment(confidence, confidence <= self.threshold, labels)


class NegativeEntropy:
    """Confidence = sum_c p_c log p_c (0 for a one-hot prediction); compute where confidence <= threshold."""

    name = "neg_entropy"

    def __init__(self, threshold: float = -0.02):
        if threshold > 0.0:
            raise ValueError(f"neg_entropy threshold must be <= 0 (negative entropy is never positive), got {threshold}")
        self.threshold = threshold

    def __call__(self, logits: Tensor) -> Assessment:
        log_p = torch.log_softmax(logits, dim=1)
        confidence = (log_p.exp() * log_p).sum(dim=1)
        return Assessment(confidence, confidence <= self.threshold, log_p.argmax(dim=1))


class TopRatio:
    """Skip the `ratio` share of each image's pixels with the highest max probability, whatever their value."""

    name = "top_ratio"

    def __init__(self, ratio: float = 0.5):
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"top_ratio must be in [0, 1], got {ratio}")
        self.ratio = ratio

    def __call__(self, logits: Tensor) -> Assessment:
        confidence, labels = torch.softmax(logits, dim=1).max(dim=1)
        b, h, w = confidence.shape
        n_skip = int(round(self.ratio * h * w))
        compute = torch.ones(b, h * w, dtype=torch.bool, device=logits.device)
        if n_skip > 0:
            most_confident = confidence.reshape(b, -1).topk(n_skip, dim=1).indices
            compute.scatter_(1, most_confident, False)
        return Assessment(confidence, compute.reshape(b, h, w), labels)


class RandomMask:
    """Compute each pixel with probability `compute_prob`, independently of the prediction (Fig. 7 baseline)."""

    name = "random"

    def __init__(self, compute_prob: float = 0.5, seed: int = 0):
        if not 0.0 <= compute_prob <= 1.0:
            raise ValueError(f"random compute probability must be in [0, 1], got {compute_prob}")
        self.compute_prob = compute_prob
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, logits: Tensor) -> Assessment:
        confidence, labels = torch.softmax(logits, dim=1).max(dim=1)
        b, _, h, w = logits.shape
        draw = torch.rand(b, h, w, generator=self.generator)
        return Assessment(confidence, (draw < self.compute_prob).to(logits.device), labels)


class HeatmapPeak:
    """Pose: confidence = max heatmap value over joints; a value below `threshold` counts as confident
    (no joint there), so compute where the peak is >= threshold (paper Sec. 4.2, threshold 0.002)."""

    name = "heatmap_peak"

    def __init__(self, threshold: float = 0.002):
        if not math.isfinite(threshold):
            raise ValueError(f"heatmap_peak threshold must be finite, got {threshold}")
        self.threshold = threshold

    def __call__(self, logits: Tensor) -> Assessment:
        confidence = logits.max(dim=1).values
        return Assessment(confidence, confidence >= self.threshold, None)


CRITERIA = {c.name: c for c in (MaxProbability, NegativeEntropy, TopRatio, RandomMask, HeatmapPeak)}


def make_criterion(name: str, threshold: float, top_ratio: float = 0.5, random_compute_prob: float = 0.5,
                   random_seed: int = 0):
    if name == "max_prob":
        return MaxProbability(threshold)
    if name == "neg_entropy":
        return NegativeEntropy(threshold)
    if name == "heatmap_peak":
        return HeatmapPeak(threshold)
    if name == "top_ratio":
        return TopRatio(top_ratio)
    if name == "random":
        return RandomMask(random_compute_prob, random_seed)
    raise ValueError(f"unknown confidence criterion {name!r}; known: {sorted(CRITERIA)}")
