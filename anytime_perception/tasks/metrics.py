"""Evaluation metrics in the authors' conventions: per-exit mIoU (Cityscapes), PCKh (MPII), mean GFLOPs per exit.

Every accumulator holds plain sums (confusion counts, hit and joint counts, cost sums), so results over a split are
exact whatever the batching, and `all_reduce` merges the shards of a distributed evaluation before reading them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from .segmentation import upsample_logits

IGNORE_INDEX = 255
# MPII's head size is 0.6 x the diagonal of the annotated head box (SC_BIAS of the official evaluation).
HEAD_SIZE_FACTOR = 0.6
# The MPII "Mean" leaves out pelvis and thorax (joint ids 6 and 7 in MPII's order).
MPII_MEAN_EXCLUDED = (6, 7)
# The grouped columns of MPII's result table: (name, joint ids), left and right joints pooled.
MPII_JOINT_GROUPS = (("head", (9,)), ("shoulder", (12, 13)), ("elbow", (11, 14)), ("wrist", (10, 15)),
                     ("hip", (2, 3)), ("knee", (1, 4)), ("ankle", (0, 5)))


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def sum_across_ranks(*tensors: Tensor) -> None:
    """In-place sum over all ranks (no-op without an initialised process group)."""
    if not _distributed():
        return
    # NCCL only reduces CUDA tensors; the counters live wherever their owner put them (usually the CPU).
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    for t in tensors:
        buffer = t.to(device) if device is not None else t
        dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
        if buffer is not t:
            t.copy_(buffer)


# ----- segmentation -------------------------------------------------------------------------------------------------
class ConfusionMatrix:
    """Pixel confusion counts over a split: rows are ground truth, columns predictions.

    IoU follows the authors' code: IoU_c = tp / max(1, gt_c + pred_c - tp), so a class absent from both ground truth
    and predictions scores 0, and mIoU is the mean over all classes (Cityscapes' own script instead leaves such
    classes out of its mean; both agree when every class occurs).
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, device: torch.device | str | None = None):
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        # int64 holds the counts of any realistic split (Cityscapes val is 1e9 pixels)
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, prediction: Tensor, target: Tensor) -> None:
        """Add class-id maps of the same shape; target pixels equal to `ignore_index` are skipped."""
        if prediction.shape != target.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape")
        k = self.num_classes
        target = target.reshape(-1).to(self.matrix.device, torch.int64)
        prediction = prediction.reshape(-1).to(self.matrix.device, torch.int64)
        keep = target != self.ignore_index
        target, prediction = target[keep], prediction[keep]
        for what, ids in (("target", target), ("prediction", prediction)):
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= k):
                raise ValueError(f"{what} holds class ids outside 0..{k - 1} (and not the ignore index "
                                 f"{self.ignore_index}): min {int(ids.min())}, max {int(ids.max())}")
        self.matrix += torch.bincount(target * k + prediction, minlength=k * k).reshape(k, k)

    def update_from_logits(self, logits: Tensor, target: Tensor) -> Tensor:
        """The authors' protocol for (B, K, h, w) logits and (B, H, W) labels: bilinear upsampling to the label size,
        argmax, accumulate. Returns the predicted class ids (B, H, W)."""
        if logits.dim() != 4 or target.dim() != 3 or logits.shape[0] != target.shape[0]:
            raise ValueError(f"expected logits (B, K, h, w) and target (B, H, W), got {tuple(logits.shape)} and "
                             f"{tuple(target.shape)}")
        prediction = upsample_logits(logits, tuple(target.shape[-2:])).argmax(dim=1)
        self.update(prediction, target)
        return prediction

    def iou(self) -> Tensor:
        """(K,) float64 IoU per class."""
        m = self.matrix.double()
        tp = m.diagonal()
        union = m.sum(dim=1) + m.sum(dim=0) - tp
        return tp / union.clamp(min=1)

    def miou(self) -> float:
        """Mean IoU over all classes."""
        return float(self.iou().mean())

    def pixel_accuracy(self) -> float:
        """Share of labelled pixels predicted correctly."""
        return float(self.matrix.diagonal().sum()) / max(1, int(self.matrix.sum()))

    def all_reduce(self) -> None:
        """Sum the counts of all ranks (no-op outside torch.distributed); call once, before reading results."""
        sum_across_ranks(self.matrix)


# ----- pose ---------------------------------------------------------------------------------------------------------
def head_sizes(head_boxes: Tensor) -> Tensor:
    """(N, 2, 2) head boxes as two corners (x1, y1), (x2, y2) -> (N,) MPII head sizes."""
    return HEAD_SIZE_FACTOR * torch.linalg.vector_norm((head_boxes[:, 1] - head_boxes[:, 0]).double(), dim=-1)


def pckh_hits(predictions: Tensor, joints: Tensor, visible: Tensor, head_boxes: Tensor,
              threshold: float = 0.5) -> tuple[Tensor, Tensor]:
    """Per-joint hit and visible-joint counts of one set of images (MPII's official rule).

    `predictions`, `joints`: (N, J, 2) x, y in the same original-image pixels; `visible`: (N, J) (nonzero = annotated
    and counted); `head_boxes`: (N, 2, 2). A joint hits when its error divided by the head size is <= `threshold`.
    People without a usable head box (NaN or zero size, e.g. a folder dataset without head boxes) are not scored.
    Returns (hits (J,), counts (J,)), both int64.
    """
    if predictions.shape != joints.shape or predictions.dim() != 3 or predictions.shape[-1] != 2:
        raise ValueError(f"predictions {tuple(predictions.shape)} and joints {tuple(joints.shape)} must both be "
                         f"(N, J, 2)")
    if visible.shape != predictions.shape[:2] or head_boxes.shape != (predictions.shape[0], 2, 2):
        raise ValueError(f"visible must be (N, J) and head_boxes (N, 2, 2); got {tuple(visible.shape)} and "
                         f"{tuple(head_boxes.shape)} for {tuple(predictions.shape[:2])}")
    size = head_sizes(head_boxes)[:, None]
    usable = torch.isfinite(size) & (size > 0)
    visible = visible.bool() & usable
    error = torch.linalg.vector_norm(predictions.double() - joints.double(), dim=-1)
    normalised = error / torch.where(usable, size, torch.ones_like(size))
    hits = ((normalised <= threshold) & visible).sum(dim=0)
    return hits.to(torch.int64), visible.sum(dim=0).to(torch.int64)


def pckh_from_counts(hits: Tensor, counts: Tensor,
                     excluded: Sequence[int] = MPII_MEAN_EXCLUDED) -> tuple[Tensor, float]:
    """Per-joint PCKh in % ((J,), NaN for joints never visible) and MPII's joint-count-weighted mean without
    `excluded`, which equals 100 x total hits / total visible joints over the remaining joints."""
    counts_f = counts.double()
    per_joint = torch.where(counts > 0, 100.0 * hits.double() / counts_f.clamp(min=1),
                            torch.full_like(counts_f, float("nan")))
    keep = torch.ones_like(counts, dtype=torch.bool)
    keep[list(excluded)] = False
    total = int(counts[keep].sum())
    mean = 100.0 * float(hits[keep].sum()) / total if total else float("nan")
    return per_joint, mean


def pckh(predictions: Tensor, joints: Tensor, visible: Tensor, head_boxes: Tensor, threshold: float = 0.5,
         excluded: Sequence[int] = MPII_MEAN_EXCLUDED) -> tuple[Tensor, float]:
    """PCKh@`threshold` of a whole set at once: (per-joint % (J,), mean %); see `pckh_hits`."""
    return pckh_from_counts(*pckh_hits(predictions, joints, visible, head_boxes, threshold), excluded)


class PCKhAccumulator:
    """PCKh over a split, batch by batch (the counts are summed, so the result is exact and DDP-reducible)."""

    def __init__(self, num_joints: int, threshold: float = 0.5, excluded: Sequence[int] = MPII_MEAN_EXCLUDED):
        self.threshold = threshold
        self.excluded = tuple(excluded)
        self.hits = torch.zeros(num_joints, dtype=torch.int64)
        self.counts = torch.zeros(num_joints, dtype=torch.int64)

    def update(self, predictions: Tensor, joints: Tensor, visible: Tensor, head_boxes: Tensor) -> None:
        hits, counts = pckh_hits(predictions.cpu(), joints.cpu(), visible.cpu(), head_boxes.cpu(), self.threshold)
        self.hits += hits
        self.counts += counts

    def per_joint(self) -> Tensor:
        """(J,) PCKh in %, NaN where a joint was never visible."""
        return pckh_from_counts(self.hits, self.counts, self.excluded)[0]

    def mean(self) -> float:
        """MPII's mean PCKh in % (joint-count weighted, pelvis and thorax excluded)."""
        return pckh_from_counts(self.hits, self.counts, self.excluded)[1]

    def groups(self) -> dict[str, float]:
        """MPII's table columns (head, shoulder, ..., ankle) in %, left and right pooled by their counts."""
        out = {}
        for name, ids in MPII_JOINT_GROUPS:
            if max(ids) >= len(self.counts):
                continue
            total = int(self.counts[list(ids)].sum())
            out[name] = 100.0 * float(self.hits[list(ids)].sum()) / total if total else float("nan")
        return out

    def all_reduce(self) -> None:
        """Sum the counts of all ranks (no-op outside torch.distributed)."""
        sum_across_ranks(self.hits, self.counts)


# ----- pose flip test (the HRNet pose code's protocol) ----------------------------------------------------------------
def flip_back(heatmaps: Tensor, flip_pairs: Sequence[tuple[int, int]]) -> Tensor:
    """Heatmaps of a horizontally flipped image -> heatmaps of the original: mirror in x and swap left/right joints."""
    order = list(range(heatmaps.shape[1]))
    for left, right in flip_pairs:
        order[left], order[right] = right, left
    return heatmaps.flip(-1)[:, order]


def shift_right_one_pixel(heatmaps: Tensor) -> Tensor:
    """Move heatmaps one pixel right, keeping the first column (the HRNet pose code's alignment of flipped maps:
    mirroring about the image edge lands peaks one heatmap pixel to the left of the original's)."""
    return torch.cat([heatmaps[..., :1], heatmaps[..., :-1]], dim=-1)


def flip_test_average(heatmaps: Tensor, flipped_heatmaps: Tensor, flip_pairs: Sequence[tuple[int, int]],
                      shift: bool = True) -> Tensor:
    """Average of the heatmaps of an image and those of its mirror image mapped back (`flip_back`, then
    `shift_right_one_pixel` when `shift`)."""
    back = flip_back(flipped_heatmaps, flip_pairs)
    if shift:
        back = shift_right_one_pixel(back)
    return 0.5 * (heatmaps + back)


# ----- compute per exit -----------------------------------------------------------------------------------------------
@dataclass
class ExitCost:
    """Mean cost of one exit over the images seen."""

    gflops: float  # cumulative GMACs/2^30 from the input through this exit, per image
    computed_fraction: float  # share of positions this exit computed


class ExitCostMeter:
    """Per-exit means over images of cumulative GFLOPs and computed fraction, each measured per image (the
    authors' `testval_ee_profiling` averages per-image costs over the val set the same way)."""

    def __init__(self, num_exits: int):
        self.num_exits = num_exits
        self.gflops = torch.zeros(num_exits, dtype=torch.float64)
        self.fraction = torch.zeros(num_exits, dtype=torch.float64)
        self.images = torch.zeros(num_exits, dtype=torch.float64)

    def update(self, exit_index: int, gflops: Tensor, computed_fraction: Tensor) -> None:
        """Add one batch of an exit (1-based `exit_index`): `gflops`, `computed_fraction` are (B,) per image."""
        if not 1 <= exit_index <= self.num_exits:
            raise ValueError(f"exit_index must be in 1..{self.num_exits}, got {exit_index}")
        if gflops.shape != computed_fraction.shape or gflops.dim() != 1:
            raise ValueError(f"gflops {tuple(gflops.shape)} and computed_fraction {tuple(computed_fraction.shape)} "
                             f"must both be (B,)")
        i = exit_index - 1
        self.gflops[i] += gflops.detach().double().sum().cpu()
        self.fraction[i] += computed_fraction.detach().double().sum().cpu()
        self.images[i] += gflops.numel()

    def means(self) -> list[ExitCost]:
        """One `ExitCost` per exit (NaN for an exit that saw no image)."""
        n = torch.where(self.images > 0, self.images, torch.full_like(self.images, float("nan")))
        return [ExitCost(float(g), float(f)) for g, f in zip(self.gflops / n, self.fraction / n)]

    def all_reduce(self) -> None:
        """Sum over all ranks (no-op outside torch.distributed)."""
        sum_across_ranks(self.gflops, self.fraction, self.images)
