"""Training and evaluation datasets by name, and the DataLoader helpers that go with them.

    ds = build_dataset("cityscapes", "/data/cityscapes", "train", train=True, crop_size=(512, 1024))
    loader = DataLoader(ds, batch_size=12, shuffle=True, num_workers=4, collate_fn=collate,
                        worker_init_fn=worker_init_fn, drop_last=True)
    for epoch in range(start_epoch, epochs):
        ds.set_epoch(epoch)            # before iterating: augmentations are a function of (seed, epoch, index)
        for batch in loader: ...

Segmentation samples: {"image" (3, H, W) float32, "label" (H, W) int64 (255 ignore), "name"} plus "orig_size" in
evaluation. Pose samples: {"image" (3, 256, 256), "target" (16, 64, 64), "target_weight" (16, 1), "meta"}.
"""
from __future__ import annotations

import random

import numpy as np
import torch

from .base import AnytimeDataset, PoseDataset, SegmentationDataset
from .cityscapes import CityscapesDataset
from .folder import FolderPose, FolderSegmentation
from .mpii import MPIIDataset

DATASETS: dict[str, type[AnytimeDataset]] = {
    "cityscapes": CityscapesDataset,
    "mpii": MPIIDataset,
    "folder": FolderSegmentation,
    "folder_pose": FolderPose,
}

_DEFAULT_SCALE_RANGE = (0.5, 2.1)


def build_dataset(name: str, root, split: str, *, train: bool, crop_size=None, base_size=None,
                  scale_range=_DEFAULT_SCALE_RANGE, input_size=None, seed: int = 0, **options) -> AnytimeDataset:
    """The dataset `name` (a key of DATASETS) at `root`, split `split`.

    train=True gives the authors' augmentations, train=False un-augmented evaluation samples. Segmentation:
    `crop_size` (H, W) of training crops (default: the dataset's, 512x1024 for Cityscapes), `base_size` the long side
    the random scale in `scale_range` (step 0.1, inclusive) multiplies (default 2048 for Cityscapes, each image's own
    long side for folders), `input_size` (H, W) to resize evaluation images to (labels stay at their size).
    Pose: `input_size` (H, W) of the crops (default 256x256; heatmaps 1/4). `seed` with the epoch and index seeds
    each sample's augmentation. `options` go to the dataset class (pose: sigma, scale_factor, rotation_factor,
    rotation_prob, flip_prob)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    cls = DATASETS[name]
    if issubclass(cls, SegmentationDataset):
        return cls(root, split, train=train, crop_size=crop_size, base_size=base_size, scale_range=scale_range,
                   input_size=input_size, seed=seed, **options)
    if issubclass(cls, PoseDataset):
        unused = {k: v for k, v in {"crop_size": crop_size, "base_size": base_size}.items() if v is not None}
        if tuple(scale_range) != _DEFAULT_SCALE_RANGE:
            unused["scale_range"] = scale_range
        if unused:
            raise ValueError(f"{name} is a pose dataset: {sorted(unused)} do not apply (its crops are input_size; "
                             f"scale augmentation is the scale_factor option)")
        return cls(root, split, train=train, input_size=input_size, seed=seed, **options)
    raise TypeError(f"DATASETS[{name!r}] = {cls.__name__} is neither a segmentation nor a pose dataset")


def worker_init_fn(worker_id: int) -> None:
    """DataLoader worker set-up: seeds NumPy's, Python's and OpenCV's global generators from torch's per-worker seed.
    The datasets never use these global generators; seeding them only keeps any other code in the worker from
    repeating across workers. OpenCV's thread count is left alone: `cv2.setNumThreads` in a forked worker waits for
    the parent's pool threads, which do not exist in the child, and hangs once the parent has run a parallel OpenCV
    call (seen in the full test suite)."""
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)
    try:
        import cv2
    except ImportError:
        return
    cv2.setRNGSeed(seed % 2 ** 31)


def collate(batch: list[dict]) -> dict:
    """Samples -> a batch: tensors stacked along a new first dimension, everything else (names, sizes, meta dicts)
    kept as a list in sample order."""
    if not batch:
        raise ValueError("collate needs at least one sample")
    out = {}
    for key in batch[0]:
        values = [sample[key] for sample in batch]
        if isinstance(values[0], torch.Tensor):
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) > 1:
                raise ValueError(f"cannot stack '{key}' of different shapes {sorted(shapes)} "
                                 f"(evaluation images of different sizes need batch size 1)")
            out[key] = torch.stack(values)
        else:
            out[key] = values
    return out
