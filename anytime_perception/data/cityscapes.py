"""Cityscapes as downloaded (leftImg8bit_trainvaltest.zip + gtFine_trainvaltest.zip, unpacked into one root):

    ROOT/leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    ROOT/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png

Label ids become the 19 training ids through cityscapesscripts' own table (every other id -> 255).
"""
from __future__ import annotations

import numpy as np
import torch

from . import transforms
from .base import SegmentationDataset
from .labels import CITYSCAPES

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
IGNORE_INDEX = 255
# The authors' class-balanced loss weights for the 19 training ids (their cityscapes.py; values from OCNet).
CLASS_WEIGHTS = (0.8373, 0.918, 0.866, 1.0345, 1.0166, 0.9969, 0.9754, 1.0489, 0.8786, 1.0023, 0.9539, 0.9843,
                 1.1116, 0.9037, 1.0865, 1.0955, 1.0865, 1.1529, 1.0507)
SPLITS = ("train", "val", "test")


def label_id_to_train_id() -> np.ndarray:
    """A 256-entry uint8 lookup table from Cityscapes label ids to training ids (255 = ignore), built from
    `cityscapesscripts.helpers.labels` (the dataset's own definition)."""
    try:
        from cityscapesscripts.helpers.labels import labels
    except ImportError as error:
        raise ImportError("Cityscapes needs the cityscapesscripts package (pip install cityscapesscripts, or the "
                          "package's 'train' extra)") from error
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label in labels:
        if 0 <= label.id < 256 and 0 <= label.trainId < IGNORE_INDEX:
            table[label.id] = label.trainId
    return table


class CityscapesDataset(SegmentationDataset):
    """Cityscapes fine annotations, 19 classes, the authors' class weights; splits train/val/test ("valid" is
    accepted for val). Random scale relative to a 2048 px long side by default, 512x1024 training crops."""

    default_crop_size = (512, 1024)
    default_base_size = 2048

    def __init__(self, root, split: str, *, train: bool, crop_size=None, base_size: int | None = None,
                 scale_range=(0.5, 2.1), input_size=None, seed: int = 0):
        split = {"valid": "val"}.get(split, split)
        if split not in SPLITS:
            raise ValueError(f"Cityscapes split must be one of {SPLITS}, got {split!r}")
        super().__init__(root, split, train=train, crop_size=crop_size,
                         base_size=base_size if base_size is not None else self.default_base_size,
                         scale_range=scale_range, input_size=input_size, seed=seed, ignore_index=IGNORE_INDEX)
        self.num_classes = len(CITYSCAPES)
        self.class_names = [c.name for c in CITYSCAPES]
        self.colors = [c.color for c in CITYSCAPES]
        self.class_weights = torch.tensor(CLASS_WEIGHTS, dtype=torch.float32)
        self._train_ids = label_id_to_train_id()

        image_dir = self.root / "leftImg8bit" / split
        if not image_dir.is_dir():
            raise FileNotFoundError(f"Cityscapes root {self.root}: image folder {image_dir} is missing "
                                    f"(unpack leftImg8bit_trainvaltest.zip into the root)")
        self.image_paths = sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}"))
        if not self.image_paths:
            raise FileNotFoundError(f"Cityscapes root {self.root}: no */*{IMAGE_SUFFIX} images in {image_dir}")
        label_dir = self.root / "gtFine" / split
        self.names = [f"{p.parent.name}/{p.name[:-len(IMAGE_SUFFIX)]}" for p in self.image_paths]
        self.label_paths = [label_dir / f"{name}{LABEL_SUFFIX}" for name in self.names]
        for image_path, label_path in zip(self.image_paths, self.label_paths):
            if not label_path.is_file():
                raise FileNotFoundError(f"Cityscapes root {self.root}: label {label_path} is missing for image "
                                        f"{image_path} (unpack gtFine_trainvaltest.zip into the root)")

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image, label_ids = transforms.read_image_and_label(self.image_paths[index], self.label_paths[index])
        return image, self._train_ids[label_ids]
