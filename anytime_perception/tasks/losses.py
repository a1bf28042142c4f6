"""Training losses over every exit of an anytime model, as the authors train them.

Segmentation: cross-entropy per exit on the *carried-over* logits (what the exit publishes), bilinearly upsampled to
the label size, 255 ignored, optionally class-weighted; the total is the exit-weighted sum (authors: weights 1,1,1,1).
Pose: JointsMSE per exit (mean over joints of 0.5 * MSE of visibility-weighted heatmaps), summed the same way.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .segmentation import upsample_logits


class SegmentationExitLoss(nn.Module):
    """Sum over exits of `exit_weights[i] * CE(upsampled logits_i, labels)`."""

    def __init__(self, exit_weights: Sequence[float], class_weights: Tensor | None = None, ignore_index: int = 255):
        super().__init__()
        self.exit_weights = tuple(float(w) for w in exit_weights)
        self.ignore_index = ignore_index
        self.register_buffer("class_weights", None if class_weights is None else class_weights.float())

    def forward(self, exit_logits: Sequence[Tensor], batch: dict) -> tuple[Tensor, list[Tensor]]:
        labels = batch["label"]
        check_exit_count(exit_logits, self.exit_weights)
        per_exit = []
        for logits in exit_logits:
            # the loss is taken in fp32 whatever the autocast dtype: bf16 log-softmax over 19 classes loses the
            # small differences the last exits learn from
            upsampled = upsample_logits(logits.float(), tuple(labels.shape[-2:]))
            per_exit.append(F.cross_entropy(upsampled, labels, weight=self.class_weights,
                                            ignore_index=self.ignore_index))
        return weighted_sum(per_exit, self.exit_weights), per_exit


class JointsMSELoss(nn.Module):
    """Mean over joints of 0.5 * MSE(pred * w, target * w), w = the joint's target weight (visibility)."""

    def forward(self, heatmaps: Tensor, target: Tensor, target_weight: Tensor) -> Tensor:
        b, j = heatmaps.shape[:2]
        pred = heatmaps.float().reshape(b, j, -1)
        gt = target.float().reshape(b, j, -1)
        w = target_weight.float().reshape(b, j, 1)
        return 0.5 * F.mse_loss(pred * w, gt * w, reduction="none").mean(dim=(0, 2)).mean()


class PoseExitLoss(nn.Module):
    """Sum over exits of `exit_weights[i] * JointsMSE(heatmaps_i)`."""

    def __init__(self, exit_weights: Sequence[float]):
        super().__init__()
        self.exit_weights = tuple(float(w) for w in exit_weights)
        self.joints_mse = JointsMSELoss()

    def forward(self, exit_heatmaps: Sequence[Tensor], batch: dict) -> tuple[Tensor, list[Tensor]]:
        check_exit_count(exit_heatmaps, self.exit_weights)
        target, weight = batch["target"], batch["target_weight"]
        per_exit = []
        for heatmaps in exit_heatmaps:
            if heatmaps.shape[-2:] != target.shape[-2:]:
                raise ValueError(f"heatmaps of size {tuple(heatmaps.shape[-2:])} but targets of size "
                                 f"{tuple(target.shape[-2:])}: the crop must be 4x the heatmap size")
            per_exit.append(self.joints_mse(heatmaps, target, weight))
        return weighted_sum(per_exit, self.exit_weights), per_exit


def check_exit_count(outputs: Sequence[Tensor], exit_weights: Sequence[float]) -> None:
    if len(outputs) != len(exit_weights):
        raise ValueError(f"the model has {len(outputs)} exit(s) but {len(exit_weights)} exit weight(s) were given")


def weighted_sum(per_exit: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    return torch.stack([w * loss for w, loss in zip(weights, per_exit)]).sum()


def build_loss(task: str, exit_weights: Sequence[float], class_weights: Tensor | None = None,
               ignore_index: int = 255) -> nn.Module:
    if task == "seg":
        return SegmentationExitLoss(exit_weights, class_weights, ignore_index)
    if task == "pose":
        return PoseExitLoss(exit_weights)
    raise ValueError(f"no loss for task {task!r}")
