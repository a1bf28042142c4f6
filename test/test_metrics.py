"""Metrics against direct implementations of the authors' and MPII's formulas, on hand-made and random cases."""
import math
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from anytime_perception.data.labels import MPII_FLIP_PAIRS
from anytime_perception.tasks.metrics import (
    ConfusionMatrix,
    ExitCostMeter,
    PCKhAccumulator,
    flip_back,
    flip_test_average,
    pckh,
    shift_right_one_pixel,
)


# ----- segmentation -------------------------------------------------------------------------------------------------
def reference_ious(gt: np.ndarray, pred: np.ndarray, k: int, ignore: int = 255) -> np.ndarray:
    """IoU_c = |gt=c and pred=c| / max(1, |gt=c| + |pred=c| - |both|) over labelled pixels, counted pixel by pixel."""
    keep = gt != ignore
    g, p = gt[keep], pred[keep]
    out = []
    for c in range(k):
        tp = np.sum((g == c) & (p == c))
        out.append(tp / max(1, np.sum(g == c) + np.sum(p == c) - tp))
    return np.array(out)


def test_confusion_matrix_matches_pixel_counting_over_batches():
    rng = np.random.default_rng(0)
    k = 5
    cm = ConfusionMatrix(k)
    gts, preds = [], []
    for _ in range(3):  # several updates accumulate over the split
        gt = rng.integers(0, k, size=(2, 7, 9))
        gt[rng.random(gt.shape) < 0.2] = 255
        gt[gt == 3] = 255  # class 3 never in the ground truth ...
        pred = rng.integers(0, k, size=gt.shape)
        pred[pred == 4] = 0  # ... class 4 never predicted
        cm.update(torch.from_numpy(pred), torch.from_numpy(gt))
        gts.append(gt), preds.append(pred)
    gt, pred = np.concatenate(gts), np.concatenate(preds)
    expected = reference_ious(gt, pred, k)
    assert cm.iou().numpy() == pytest.approx(expected, abs=1e-12)
    assert cm.miou() == pytest.approx(expected.mean(), abs=1e-12)
    assert cm.iou()[3] == 0.0  # only false positives
    assert int(cm.matrix.sum()) == int(np.sum(gt != 255))
    assert cm.pixel_accuracy() == pytest.approx(np.mean(gt[gt != 255] == pred[gt != 255]))


def test_absent_class_counts_as_zero_in_the_mean():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 1]))
    assert cm.iou().tolist() == [1.0, 1.0, 0.0]
    assert cm.miou() == pytest.approx(2 / 3)


def test_logits_are_upsampled_bilinearly_to_the_label_size():
    # One class wins on the left half of a 2x2 logit map, the other on the right; at 4x8 the boundary is bilinear.
    logits = torch.tensor([[[[1.0, -1.0], [1.0, -1.0]], [[-1.0, 1.0], [-1.0, 1.0]]]])
    target = torch.tensor([[[0, 0, 0, 0, 1, 1, 1, 1]] * 4])
    cm = ConfusionMatrix(2)
    prediction = cm.update_from_logits(logits, target)
    assert prediction.shape == (1, 4, 8)
    assert prediction[0, 0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert cm.miou() == 1.0


def test_confusion_matrix_rejects_bad_input():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="outside 0..2"):
        cm.update(torch.tensor([0]), torch.tensor([7]))
    with pytest.raises(ValueError, match="differ in shape"):
        cm.update(torch.tensor([0, 1]), torch.tensor([0]))
    cm.update(torch.tensor([2]), torch.tensor([255]))  # ignored pixels may hold any prediction
    assert int(cm.matrix.sum()) == 0


# ----- PCKh ---------------------------------------------------------------------------------------------------------
def mpii_pckh_reference(pred, gt, visible, head_boxes, threshold=0.5):
    """MPII's evaluation written out joint by joint and image by image (per-joint %, weighted mean without 6, 7)."""
    n, j, _ = gt.shape
    hits, counts = np.zeros(j), np.zeros(j)
    for i in range(n):
        (x1, y1), (x2, y2) = head_boxes[i]
        head = 0.6 * math.sqrt((x2 - x1) ** 2 + (y2 - y1) ** 2)
        for k in range(j):
            if visible[i, k]:
                counts[k] += 1
                err = math.hypot(pred[i, k, 0] - gt[i, k, 0], pred[i, k, 1] - gt[i, k, 1])
                hits[k] += err / head <= threshold
    per_joint = 100 * hits / np.maximum(counts, 1)
    mask = np.ones(j, bool)
    mask[[6, 7]] = False
    ratio = counts[mask] / counts[mask].sum()
    return per_joint, float(np.sum(per_joint[mask] * ratio))


def test_pckh_hand_made_case():
    # One person, head box 30x40 -> diagonal 50, head size 30, threshold 15 px.
    gt = torch.full((1, 16, 2), 100.0)
    pred = gt.clone()
    pred[0, 0, 0] += 15.0  # exactly at the threshold: a hit (<=)
    pred[0, 1, 1] += 15.01  # just beyond: a miss
    pred[0, 6] += 100.0  # pelvis missed, but excluded from the mean
    pred[0, 9] += torch.tensor([9.0, 12.0])  # 15 px diagonally: a hit
    visible = torch.ones(1, 16, dtype=torch.bool)
    visible[0, 2] = False  # invisible and far off: counts for nothing
    pred[0, 2] += 500.0
    boxes = torch.tensor([[[10.0, 20.0], [40.0, 60.0]]])
    per_joint, mean = pckh(pred, gt, visible, boxes)
    assert per_joint[0] == 100.0 and per_joint[1] == 0.0 and per_joint[6] == 0.0 and per_joint[9] == 100.0
    assert math.isnan(per_joint[2])
    assert mean == pytest.approx(100.0 * 12 / 13)  # 13 visible non-excluded joints, joint 1 missed


def test_pckh_matches_the_mpii_formula_on_random_people():
    rng = np.random.default_rng(1)
    n = 12
    gt = rng.uniform(0, 500, size=(n, 16, 2))
    corner = rng.uniform(0, 400, size=(n, 2))
    boxes = np.stack([corner, corner + rng.uniform(10, 60, size=(n, 2))], axis=1)
    pred = gt + rng.normal(0, 15, size=gt.shape)
    visible = rng.random((n, 16)) > 0.25
    visible[:, 3] = False  # a joint never visible: NaN per joint, no weight in the mean
    expected_joints, expected_mean = mpii_pckh_reference(pred, gt, visible, boxes)
    # a person without a head box is not scored at all
    pred, gt = np.concatenate([pred, gt[:1]]), np.concatenate([gt, gt[:1]])
    visible = np.concatenate([visible, np.ones((1, 16), bool)])
    boxes = np.concatenate([boxes, np.full((1, 2, 2), np.nan)])
    n += 1
    acc = PCKhAccumulator(16)
    for part in (slice(0, 5), slice(5, n)):  # accumulated in two batches
        acc.update(*(torch.from_numpy(a[part]) for a in (pred, gt, visible, boxes)))
    per_joint = acc.per_joint().numpy()
    ok = np.arange(16) != 3
    assert per_joint[ok] == pytest.approx(expected_joints[ok], abs=1e-9)
    assert np.isnan(per_joint[3])
    assert acc.mean() == pytest.approx(expected_mean, abs=1e-9)
    assert 0 < acc.mean() < 100  # the noise makes some joints miss
    groups = acc.groups()
    assert list(groups) == ["head", "shoulder", "elbow", "wrist", "hip", "knee", "ankle"]
    assert groups["head"] == pytest.approx(expected_joints[9])
    assert groups["hip"] == pytest.approx(expected_joints[2])  # joint 3 never visible: the hip is joint 2 alone


# ----- flip test ----------------------------------------------------------------------------------------------------
def test_flip_back_mirrors_and_swaps_pairs():
    h = torch.rand(2, 16, 5, 6)
    back = flip_back(h, MPII_FLIP_PAIRS)
    assert torch.equal(back[:, 0], h[:, 5].flip(-1)) and torch.equal(back[:, 5], h[:, 0].flip(-1))
    assert torch.equal(back[:, 8], h[:, 8].flip(-1))  # upper neck has no partner
    assert torch.equal(flip_back(back, MPII_FLIP_PAIRS), h)


def test_flip_test_average_realigns_the_mirrored_heatmaps():
    h = torch.rand(1, 16, 4, 6)
    # What a model sees on the mirrored image: the original's heatmaps, mirrored and swapped, whose mapping back lands
    # one heatmap pixel left of the original's (the misalignment the shift corrects).
    left_by_one = torch.cat([h[..., 1:], h[..., -1:]], dim=-1)
    seen = flip_back(left_by_one, MPII_FLIP_PAIRS)
    averaged = flip_test_average(h, seen, MPII_FLIP_PAIRS)
    assert torch.allclose(averaged[..., 1:], h[..., 1:])
    assert torch.equal(shift_right_one_pixel(torch.tensor([[1.0, 2.0, 3.0]])), torch.tensor([[1.0, 1.0, 2.0]]))
    unshifted = flip_test_average(h, flip_back(h, MPII_FLIP_PAIRS), MPII_FLIP_PAIRS, shift=False)
    assert torch.allclose(unshifted, h)


# ----- cost per exit ------------------------------------------------------------------------------------------------
def test_exit_cost_meter_averages_per_image():
    meter = ExitCostMeter(2)
    meter.update(1, torch.tensor([10.0, 10.0]), torch.tensor([1.0, 1.0]))
    meter.update(1, torch.tensor([10.0]), torch.tensor([1.0]))
    meter.update(2, torch.tensor([14.0, 20.0]), torch.tensor([0.25, 0.75]))
    meter.update(2, torch.tensor([17.0]), torch.tensor([0.5]))
    first, second = meter.means()
    assert (first.gflops, first.computed_fraction) == (10.0, 1.0)
    assert (second.gflops, second.computed_fraction) == (pytest.approx(17.0), pytest.approx(0.5))
    with pytest.raises(ValueError, match="1..2"):
        meter.update(3, torch.tensor([1.0]), torch.tensor([1.0]))


# ----- distributed reduction ----------------------------------------------------------------------------------------
def _reduce_worker(rank: int, world: int, init_file: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        cm = ConfusionMatrix(2)
        cm.update(torch.tensor([rank]), torch.tensor([0]))  # rank 0 right, rank 1 wrong
        acc = PCKhAccumulator(16)
        joints = torch.zeros(1, 16, 2)
        acc.update(joints + 100.0 * rank, joints, torch.ones(1, 16), torch.tensor([[[0.0, 0.0], [3.0, 4.0]]]))
        meter = ExitCostMeter(1)
        meter.update(1, torch.tensor([float(rank)]), torch.tensor([1.0]))
        for m in (cm, acc, meter):
            m.all_reduce()
        results[rank] = (cm.matrix.tolist(), acc.mean(), meter.means()[0].gflops)
    finally:
        dist.destroy_process_group()


def test_all_reduce_sums_the_shards_of_two_processes(tmp_path):
    ctx = mp.get_context("spawn")
    results = ctx.Manager().dict()
    init_file = str(tmp_path / "init")
    procs = [ctx.Process(target=_reduce_worker, args=(r, 2, init_file, results)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    for rank in range(2):
        matrix, mean_pckh, gflops = results[rank]
        assert matrix == [[1, 1], [0, 0]]
        assert mean_pckh == pytest.approx(50.0)
        assert gflops == pytest.approx(0.5)


def test_all_reduce_without_a_process_group_changes_nothing():
    assert not (dist.is_available() and dist.is_initialized()), os.environ.get("RANK")
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([1]), torch.tensor([1]))
    cm.all_reduce()
    assert cm.matrix.tolist() == [[0, 0], [0, 1]]
