"""What every training/evaluation dataset shares: the per-sample RNG, the segmentation and the pose sample.

Concrete datasets (cityscapes.py, mpii.py, folder.py) only find their files and read one image with its labels;
augmentation and sample layout live here, once. `datasets.build_dataset` is the way to make one by name.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from . import transforms
from .labels import MPII_FLIP_PAIRS, MPII_JOINTS


class AnytimeDataset(Dataset):
    """A map-style dataset whose augmentation is a function of (seed, epoch, index) only.

    `__getitem__` draws everything from `np.random.default_rng([seed, epoch, index])`, so samples do not depend on the
    DataLoader's worker count or order, and a resumed run sees the same augmentations. The epoch lives in shared
    memory: `set_epoch` before iterating reaches the workers, persistent ones included."""

    task: str = ""

    def __init__(self, root, split: str, *, train: bool, seed: int = 0):
        self.root = Path(root)
        self.split = split
        self.train = bool(train)
        if int(seed) < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.seed = int(seed)
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentations of `epoch` (>= 0) for the samples fetched from now on."""
        if int(epoch) < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self._epoch.fill_(int(epoch))

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def sample_rng(self, index: int) -> np.random.Generator:
        """The generator every random choice of sample `index` in the current epoch comes from."""
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def _check_index(self, index: int) -> int:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples of {self.root} ({self.split})")
        return index % len(self)

    def __repr__(self) -> str:
        mode = "train" if self.train else "eval"
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, {mode}, {len(self)} samples)"


class SegmentationDataset(AnytimeDataset):
    """Images with per-pixel class ids (`ignore_index` = not scored).

    Training samples are the authors' augmented `crop_size` crops (transforms.seg_train_sample) with the random
    scale relative to `base_size` (None: each image's own long side). Evaluation samples are the whole image, resized
    to `input_size` (H, W) if given, with the label at its original size and `orig_size`.

    Subclasses set num_classes, class_names, colors, class_weights, names and implement `load(index)`."""

    task = "seg"
    default_crop_size: tuple[int, int] = (512, 512)

    def __init__(self, root, split: str, *, train: bool, crop_size=None, base_size: int | None = None,
                 scale_range=(0.5, 2.1), input_size=None, seed: int = 0, ignore_index: int = 255):
        super().__init__(root, split, train=train, seed=seed)
        self.crop_size = _size_pair(crop_size if crop_size is not None else self.default_crop_size, "crop_size")
        self.base_size = None if base_size is None else int(base_size)
        if self.base_size is not None and self.base_size < 1:
            raise ValueError(f"base_size must be >= 1, got {base_size}")
        self.scale_range = tuple(float(s) for s in scale_range)
        transforms.scale_choices(self.scale_range)  # validates
        self.input_size = None if input_size is None else _size_pair(input_size, "input_size")
        self.ignore_index = int(ignore_index)
        self.num_classes: int = 0
        self.class_names: list[str] = []
        self.colors: list[tuple[int, int, int]] = []
        self.class_weights: torch.Tensor | None = None
        self.names: list[str] = []

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample `index` as (BGR uint8 (H, W, 3) image, uint8 (H, W) class ids with ignore_index)."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict:
        index = self._check_index(index)
        image, label = self.load(index)
        if self.train:
            base = self.base_size if self.base_size is not None else max(label.shape)
            image_out, label_out = transforms.seg_train_sample(
                image, label, self.sample_rng(index), crop_size=self.crop_size, base_size=base,
                scale_range=self.scale_range, ignore_index=self.ignore_index)
            return {"image": torch.from_numpy(image_out), "label": torch.from_numpy(label_out),
                    "name": self.names[index]}
        return {"image": torch.from_numpy(transforms.seg_eval_image(image, self.input_size)),
                "label": torch.from_numpy(label.astype(np.int64)), "name": self.names[index],
                "orig_size": tuple(label.shape)}


@dataclass
class PersonRecord:
    """One annotated person: everything a pose sample needs, in original image pixels (0-based)."""

    image: Path
    name: str
    center: np.ndarray  # (2,) x, y of the crop box centre
    scale: np.ndarray  # (2,) box width, height in units of 200 px
    joints: np.ndarray  # (16, 3) x, y, visible
    head_box: np.ndarray  # (2, 2) [[x1, y1], [x2, y2]] or NaNs


class PoseDataset(AnytimeDataset):
    """One sample per annotated person: a crop around its box and Gaussian heatmap targets (MPII's 16 joints).

    Training samples are augmented as the authors do (transforms.pose_sample); evaluation samples are the plain
    crops. `meta` carries what evaluation needs to map predictions back (transforms.to_original) and score them
    (joints in original pixels, head box for PCKh). Subclasses fill `records` and may set `ignore_orientation`."""

    task = "pose"
    num_joints = len(MPII_JOINTS)
    joint_names = list(MPII_JOINTS)
    flip_pairs = MPII_FLIP_PAIRS
    ignore_orientation = False

    def __init__(self, root, split: str, *, train: bool, input_size=None, seed: int = 0, sigma: float = 2.0,
                 scale_factor: float = 0.25, rotation_factor: float = 30.0, rotation_prob: float = 0.6,
                 flip_prob: float = 0.5):
        super().__init__(root, split, train=train, seed=seed)
        self.image_size = _size_pair(input_size if input_size is not None else (256, 256), "input_size")
        if self.image_size[0] % 4 or self.image_size[1] % 4:
            raise ValueError(f"pose input_size must be multiples of 4 (heatmaps are 1/4 size), got {self.image_size}")
        self.heatmap_size = (self.image_size[0] // 4, self.image_size[1] // 4)
        self.augment_options = {"sigma": float(sigma), "scale_factor": float(scale_factor),
                                "rotation_factor": float(rotation_factor), "rotation_prob": float(rotation_prob),
                                "flip_prob": float(flip_prob)}
        self.records: list[PersonRecord] = []

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        index = self._check_index(index)
        record = self.records[index]
        image = transforms.read_image(record.image, ignore_orientation=self.ignore_orientation)
        crop = transforms.pose_sample(
            image, record.joints, record.center, record.scale, self.sample_rng(index) if self.train else None,
            image_size=self.image_size, heatmap_size=self.heatmap_size, flip_pairs=self.flip_pairs,
            **self.augment_options)
        meta = {"index": index, "name": record.name, "center": crop["center"].astype(np.float32),
                "scale": crop["scale"].astype(np.float32), "rotation": float(crop["rotation"]),
                "flip": crop["flip"], "joints": record.joints.astype(np.float32),
                "head_box": record.head_box.astype(np.float32)}
        return {"image": torch.from_numpy(crop["image"]), "target": torch.from_numpy(crop["target"]),
                "target_weight": torch.from_numpy(crop["target_weight"]), "meta": meta}


def _size_pair(size, what: str) -> tuple[int, int]:
    """An (H, W) pair from a pair or a single side."""
    values = np.atleast_1d(np.asarray(size)).astype(int).tolist()
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise ValueError(f"{what} must be (height, width) of positive integers, got {size}")
    return int(values[0]), int(values[1])
