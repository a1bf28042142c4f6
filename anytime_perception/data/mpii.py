"""MPII Human Pose in the HRNet-pose layout:

    ROOT/annot/{train,valid}.json   [{"image": "015601864.jpg", "center": [x, y], "scale": s,
                                      "joints": [[x, y]] * 16, "joints_vis": [0/1] * 16}, ...]  (1-based pixels)
    ROOT/annot/gt_valid.mat         the official evaluation's ground truth for valid.json's people, same order:
                                    pos_gt_src (16, 2, N), jnt_missing (16, N), headboxes_src (2, 2, N)
    ROOT/images/*.jpg

Boxes are adjusted as the authors do: center y += 15 * s, s *= 1.25 (unless the center is -1), then everything is
made 0-based (-1). For the valid split the joints, their visibility (1 - jnt_missing) and the head boxes in `meta`
come from gt_valid.mat, so scores computed from `meta` are the official evaluation's.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .base import PersonRecord, PoseDataset

SPLITS = ("train", "valid")
NUM_JOINTS = 16


def read_gt_valid(path: Path) -> dict[str, np.ndarray]:
    """gt_valid.mat as person-major arrays: joints (N, 16, 2) and head_boxes (N, 2, 2) in the file's 1-based pixels,
    missing (N, 16) bool. pos_gt_src is accepted as (16, 2, N) (the file) or (2, 16, N)."""
    if not path.is_file():
        raise FileNotFoundError(f"MPII ground truth {path} is missing (the valid split's head boxes come from it)")
    from scipy.io import loadmat  # the 'train' extra

    mat = loadmat(str(path))
    missing_keys = [k for k in ("pos_gt_src", "jnt_missing", "headboxes_src") if k not in mat]
    if missing_keys:
        raise ValueError(f"{path}: keys {missing_keys} are missing (found {sorted(k for k in mat if k[0] != '_')})")
    positions = np.asarray(mat["pos_gt_src"], dtype=np.float64)
    if positions.ndim != 3 or {positions.shape[0], positions.shape[1]} != {NUM_JOINTS, 2}:
        raise ValueError(f"{path}: pos_gt_src must be (16, 2, N), got {positions.shape}")
    joints = positions.transpose(2, 0, 1) if positions.shape[0] == NUM_JOINTS else positions.transpose(2, 1, 0)
    missing = np.asarray(mat["jnt_missing"])
    head_boxes = np.asarray(mat["headboxes_src"], dtype=np.float64)
    n = joints.shape[0]
    if missing.shape != (NUM_JOINTS, n) or head_boxes.shape != (2, 2, n):
        raise ValueError(f"{path}: expected jnt_missing (16, {n}) and headboxes_src (2, 2, {n}), got "
                         f"{missing.shape} and {head_boxes.shape}")
    return {"joints": joints, "missing": missing.T.astype(bool), "head_boxes": head_boxes.transpose(2, 0, 1)}


class MPIIDataset(PoseDataset):
    """MPII single-person crops (HRNet-pose annotations), splits train/valid ("val" is accepted for valid).

    Images are read in their stored pixel order (EXIF orientation ignored) because the annotations are."""

    ignore_orientation = True

    def __init__(self, root, split: str, *, train: bool, input_size=None, seed: int = 0, **augment_options):
        split = {"val": "valid"}.get(split, split)
        if split not in SPLITS:
            raise ValueError(f"MPII split must be one of {SPLITS}, got {split!r}")
        super().__init__(root, split, train=train, input_size=input_size, seed=seed, **augment_options)
        annot_path = self.root / "annot" / f"{split}.json"
        if not annot_path.is_file():
            raise FileNotFoundError(f"MPII root {self.root}: annotation file {annot_path} is missing")
        with open(annot_path) as f:
            people = json.load(f)
        if not isinstance(people, list) or not people:
            raise ValueError(f"{annot_path}: expected a non-empty list of people")
        gt = read_gt_valid(self.root / "annot" / "gt_valid.mat") if split == "valid" else None
        if gt is not None and len(gt["joints"]) != len(people):
            raise ValueError(f"MPII root {self.root}: gt_valid.mat has {len(gt['joints'])} people but "
                             f"{annot_path.name} has {len(people)}; they must be the same list")

        image_dir = self.root / "images"
        if not image_dir.is_dir():
            raise FileNotFoundError(f"MPII root {self.root}: image folder {image_dir} is missing")
        present = {p.name for p in image_dir.iterdir()}
        seen: dict[str, int] = {}
        for i, person in enumerate(people):
            try:
                image_name = person["image"]
                center = np.asarray(person["center"], dtype=np.float64).reshape(2)
                scale = float(person["scale"])
                joints_xy = np.asarray(person["joints"], dtype=np.float64).reshape(NUM_JOINTS, 2)
                visible = np.asarray(person["joints_vis"], dtype=np.float64).reshape(NUM_JOINTS)
            except (KeyError, TypeError, ValueError) as error:
                raise ValueError(f"{annot_path}: entry {i} is not an HRNet-pose MPII record ({error!r})") from None
            if image_name not in present:
                raise FileNotFoundError(f"MPII root {self.root}: image {image_dir / image_name} is missing "
                                        f"({annot_path.name} entry {i})")
            if center[0] != -1:  # the authors' box adjustment, so limbs are not cut
                center[1] += 15 * scale
                scale *= 1.25
            if gt is not None:
                joints_xy, visible = gt["joints"][i], (~gt["missing"][i]).astype(np.float64)
                head_box = gt["head_boxes"][i] - 1
            else:
                head_box = np.full((2, 2), np.nan)
            joints = np.concatenate([joints_xy - 1, (visible > 0)[:, None]], axis=1)
            k = seen[image_name] = seen.get(image_name, -1) + 1
            self.records.append(PersonRecord(
                image=image_dir / image_name, name=f"{Path(image_name).stem}/{k}", center=center - 1,
                scale=np.array([scale, scale]), joints=joints, head_box=head_box))
