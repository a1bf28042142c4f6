"""Users' own data (and what the package's label tool writes), in one folder layout:

    ROOT/classes.yaml      names: [background, person]        (segmentation; required for "folder")
                           colors: [[0, 0, 0], [220, 20, 60]] (optional, RGB; default: data.labels.palette)
                           ignore_index: 255                  (optional, default 255; must not be a class id)
                           weights: [1.0, 2.5]                (optional: class weights for the loss)
                           base_size: 1024                    (optional: long side the random scale multiplies;
                                                               default each image's own long side)
    ROOT/images/STEM.{jpg,jpeg,png}
    ROOT/labels/STEM.png   uint8 class ids, ignore_index where unlabelled               ("folder")
    ROOT/poses/STEM.json   {"people": [{"joints": [[x, y, v]] * 16 in MPII order,      ("folder_pose")
                                        "head_box": [x1, y1, x2, y2], "center": [x, y], "scale": s}]}
                           (head_box, center and scale optional; pixels 0-based; scale in units of 200 px)
    ROOT/splits/SPLIT.txt  optional: one STEM per line; without a splits/ folder every image is in every split
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import transforms
from .base import PersonRecord, PoseDataset, SegmentationDataset
from .labels import MPII_JOINTS, palette

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CLASSES_FILE = "classes.yaml"
# Margin around the visible joints' box when a person has no center/scale (HRNet-pose uses 1.25 for boxes too).
BOX_MARGIN = 1.25
_UPPER_NECK, _HEAD_TOP = MPII_JOINTS.index("upper_neck"), MPII_JOINTS.index("head_top")


@dataclass(frozen=True)
class FolderClasses:
    """The contents of ROOT/classes.yaml, validated."""

    names: list[str]
    colors: list[tuple[int, int, int]]
    ignore_index: int = 255
    weights: list[float] | None = None
    base_size: int | None = None

    @classmethod
    def read(cls, root: Path) -> "FolderClasses":
        path = Path(root) / CLASSES_FILE
        if not path.is_file():
            raise FileNotFoundError(f"folder dataset {root}: {path} is missing (it lists the class names: "
                                    f"'names: [background, person]')")
        import yaml  # the 'train' extra

        with open(path) as f:
            data = yaml.safe_load(f)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping with 'names', got {type(data).__name__}")
        known = {"names", "colors", "ignore_index", "weights", "base_size"}
        if set(data) - known:
            raise ValueError(f"{path}: unknown keys {sorted(set(data) - known)}; known: {sorted(known)}")
        names = data.get("names")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"{path}: 'names' must be a non-empty list of class names, got {names!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"{path}: class names repeat: {names}")
        num_classes = len(names)

        ignore_index = data.get("ignore_index", 255)
        if not isinstance(ignore_index, int) or not num_classes <= ignore_index <= 255:
            raise ValueError(f"{path}: 'ignore_index' must be an integer in [{num_classes}, 255] (label PNGs are "
                             f"8-bit and it must not be a class id), got {ignore_index!r}")

        colors = data.get("colors")
        if colors is None:
            colors = palette(num_classes)
        if (not isinstance(colors, list) or len(colors) != num_classes
                or not all(isinstance(c, (list, tuple)) and len(c) == 3
                           and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in colors)):
            raise ValueError(f"{path}: 'colors' must be {num_classes} [r, g, b] triples of 0..255 (one per name), "
                             f"got {colors!r}")

        weights = data.get("weights")
        if weights is not None and (not isinstance(weights, list) or len(weights) != num_classes or not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in weights)):
            raise ValueError(f"{path}: 'weights' must be {num_classes} non-negative numbers (one per name), "
                             f"got {weights!r}")

        base_size = data.get("base_size")
        if base_size is not None and (not isinstance(base_size, int) or base_size < 1):
            raise ValueError(f"{path}: 'base_size' must be a positive integer, got {base_size!r}")
        return cls(list(names), [tuple(c) for c in colors], ignore_index,
                   None if weights is None else [float(w) for w in weights], base_size)


def find_images(root: Path) -> dict[str, Path]:
    """ROOT/images/STEM.{jpg,jpeg,png} by stem."""
    image_dir = Path(root) / "images"
    if not image_dir.is_dir():
        raise FileNotFoundError(f"folder dataset {root}: image folder {image_dir} is missing")
    images: dict[str, Path] = {}
    for path in sorted(image_dir.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if path.stem in images:
            raise ValueError(f"folder dataset {root}: two images share the stem {path.stem!r}: "
                             f"{images[path.stem].name} and {path.name}")
        images[path.stem] = path
    if not images:
        raise FileNotFoundError(f"folder dataset {root}: no {'/'.join(IMAGE_SUFFIXES)} images in {image_dir}")
    return images


def split_stems(root: Path, split: str, images: dict[str, Path]) -> list[str]:
    """The stems of `split`: ROOT/splits/SPLIT.txt if there is a splits/ folder, else every image."""
    split_dir = Path(root) / "splits"
    split_file = split_dir / f"{split}.txt"
    if not split_file.is_file():
        existing = sorted(p.stem for p in split_dir.glob("*.txt")) if split_dir.is_dir() else []
        if existing:
            raise FileNotFoundError(f"folder dataset {root}: split file {split_file} is missing "
                                    f"(splits there: {existing})")
        return sorted(images)
    stems = []
    for line in split_file.read_text().splitlines():
        stem = line.strip()
        if not stem or stem.startswith("#"):
            continue
        if Path(stem).suffix.lower() in IMAGE_SUFFIXES:
            stem = Path(stem).stem
        if stem not in images:
            raise FileNotFoundError(f"folder dataset {root}: {split_file} lists {stem!r} but there is no "
                                    f"images/{stem}{{{','.join(IMAGE_SUFFIXES)}}}")
        stems.append(stem)
    if not stems:
        raise ValueError(f"folder dataset {root}: split file {split_file} lists no images")
    return stems


class FolderSegmentation(SegmentationDataset):
    """Segmentation on ROOT/images + ROOT/labels with the classes of ROOT/classes.yaml (layout: module docstring).

    Labels are checked when read: every value must be a class id (< num_classes) or ignore_index."""

    def __init__(self, root, split: str, *, train: bool, crop_size=None, base_size: int | None = None,
                 scale_range=(0.5, 2.1), input_size=None, seed: int = 0):
        root = Path(root)
        classes = FolderClasses.read(root)
        super().__init__(root, split, train=train, crop_size=crop_size,
                         base_size=base_size if base_size is not None else classes.base_size,
                         scale_range=scale_range, input_size=input_size, seed=seed,
                         ignore_index=classes.ignore_index)
        self.num_classes = len(classes.names)
        self.class_names = classes.names
        self.colors = classes.colors
        self.class_weights = None if classes.weights is None else torch.tensor(classes.weights, dtype=torch.float32)

        images = find_images(root)
        self.names = split_stems(root, split, images)
        self.image_paths = [images[stem] for stem in self.names]
        self.label_paths = [root / "labels" / f"{stem}.png" for stem in self.names]
        missing = next((p for p in self.label_paths if not p.is_file()), None)
        if missing is not None:
            raise FileNotFoundError(f"folder dataset {root}: label {missing} is missing for image "
                                    f"{self.image_paths[self.label_paths.index(missing)]}")

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image, label = transforms.read_image_and_label(self.image_paths[index], self.label_paths[index])
        invalid = (label >= self.num_classes) & (label != self.ignore_index)
        if invalid.any():
            raise ValueError(f"label {self.label_paths[index]} has values {np.unique(label[invalid]).tolist()}, "
                             f"which are neither class ids 0..{self.num_classes - 1} ({CLASSES_FILE}) nor "
                             f"ignore_index {self.ignore_index}")
        return image, label


class FolderPose(PoseDataset):
    """Pose on ROOT/images + ROOT/poses/STEM.json (layout: module docstring), one sample per person.

    A person without center/scale gets the box of its visible joints, widened to the input's aspect ratio and grown
    by BOX_MARGIN (1.25, as HRNet-pose does for person boxes): center = the box centre, scale = its size / 200.
    Given center/scale are used as they are (the crop is 200 * scale px wide around center).
    A person without head_box gets, for PCKh, the square centred between upper_neck and head_top whose side is
    their distance (so PCKh's head size, 0.6 x the box diagonal, is 0.85 x the neck-head distance); NaNs if either
    joint is not visible (such people cannot be scored by PCKh)."""

    def __init__(self, root, split: str, *, train: bool, input_size=None, seed: int = 0, **augment_options):
        super().__init__(root, split, train=train, input_size=input_size, seed=seed, **augment_options)
        images = find_images(self.root)
        for stem in split_stems(self.root, split, images):
            path = self.root / "poses" / f"{stem}.json"
            if not path.is_file():
                raise FileNotFoundError(f"folder dataset {self.root}: pose file {path} is missing for image "
                                        f"{images[stem]}")
            for k, person in enumerate(_read_people(path)):
                self.records.append(self._record(path, images[stem], f"{stem}/{k}", k, person))

    def _record(self, path: Path, image: Path, name: str, k: int, person: dict) -> PersonRecord:
        where = f"{path}: people[{k}]"
        joints = _array(person.get("joints"), (self.num_joints, 3), f"{where}.joints")
        joints[:, 2] = joints[:, 2] > 0
        visible = joints[joints[:, 2] > 0, :2]

        if "center" in person or "scale" in person:
            if "center" not in person or "scale" not in person:
                raise ValueError(f"{where}: give both 'center' and 'scale', or neither")
            center = _array(person["center"], (2,), f"{where}.center")
            scale = float(_array(person["scale"], (), f"{where}.scale"))
            if scale <= 0:
                raise ValueError(f"{where}: 'scale' must be > 0, got {scale}")
            scales = np.array([scale, scale * self.image_size[0] / self.image_size[1]])
        else:
            if len(visible) < 2 or np.ptp(visible, axis=0).max() <= 0:
                raise ValueError(f"{where}: without 'center' and 'scale' at least two visible joints at different "
                                 f"places are needed to place the crop")
            lo, hi = visible.min(axis=0), visible.max(axis=0)
            center = (lo + hi) / 2
            width, height = hi - lo
            aspect = self.image_size[1] / self.image_size[0]
            width, height = max(width, height * aspect), max(height, width / aspect)
            scales = np.array([width, height]) * BOX_MARGIN / transforms.PIXELS_PER_SCALE_UNIT

        if "head_box" in person:
            head_box = _array(person["head_box"], (4,), f"{where}.head_box").reshape(2, 2)
        elif joints[_UPPER_NECK, 2] > 0 and joints[_HEAD_TOP, 2] > 0:
            neck, top = joints[_UPPER_NECK, :2], joints[_HEAD_TOP, :2]
            half = np.linalg.norm(top - neck) / 2
            middle = (neck + top) / 2
            head_box = np.stack([middle - half, middle + half])
        else:
            head_box = np.full((2, 2), np.nan)
        return PersonRecord(image=image, name=name, center=center, scale=scales, joints=joints, head_box=head_box)


def _read_people(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    people = data.get("people") if isinstance(data, dict) else None
    if not isinstance(people, list) or not all(isinstance(p, dict) for p in people):
        raise ValueError(f"{path}: expected {{\"people\": [{{\"joints\": [[x, y, v], ...]}}, ...]}}")
    return people


def _array(value, shape: tuple[int, ...], where: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        array = None
    if array is None or array.shape != shape or not np.isfinite(array).all():
        raise ValueError(f"{where}: expected finite numbers of shape {list(shape)}, got {value!r}")
    return array
