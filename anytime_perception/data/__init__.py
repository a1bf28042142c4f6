"""Label sets, preprocessing constants and datasets.

The dataset API (`build_dataset`, `DATASETS`, `collate`, `worker_init_fn`, `crop_affine`, `to_original`) is
imported on first use, so `anytime_perception.data.labels` stays importable without OpenCV (the 'train' extra).
"""
from __future__ import annotations

import importlib

_LAZY_EXPORTS = {
    "build_dataset": "datasets", "DATASETS": "datasets", "collate": "datasets", "worker_init_fn": "datasets",
    "AnytimeDataset": "base", "SegmentationDataset": "base", "PoseDataset": "base",
    "CityscapesDataset": "cityscapes", "MPIIDataset": "mpii", "FolderSegmentation": "folder", "FolderPose": "folder",
    "crop_affine": "transforms", "to_original": "transforms",
}

__all__ = sorted(_LAZY_EXPORTS)


def __getattr__(name: str):
    if name in _LAZY_EXPORTS:
        return getattr(importlib.import_module(f".{_LAZY_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
