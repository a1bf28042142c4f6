"""Stage `dataset`: the package's folder datasets from the labels, with the held-out split, and their statistics.

Writes DATASETS/person_seg (`--dataset folder`: classes.yaml, images/, labels/, splits/) and DATASETS/person_pose
(`--dataset folder_pose`: images/, poses/, splits/) in the layout anytime_perception/data/folder.py reads, and
DATASETS/stats.json (frames, people, visible joints, pixel shares per split). Splits: train = vtest 0-599 and
bikes 0-199, val = vtest 600-794 and bikes 200-249 (held out: no training run may read them), and val's two clips
apart as val_vtest and val_bikes (the model cards report vtest's held-out frames on their own too).

Pose people carry center/scale from the detector box in HRNet's MPII convention, already enlarged: center = the
box centre, scale = 1.25 x max(box width, box height) / 200 (the folder_pose dataset uses them as given: the
256x256 crop spans 200 x scale px). People with fewer than MIN_VISIBLE_JOINTS visible joints are left out of the
pose dataset (too little to learn from or score); frames with no such person are left out of its splits. The
segmentation dataset keeps every frame: frames without people are its pure negatives.
Images are hard links to the frames stage's JPEGs (quality 95), or re-encoded with --jpeg-quality to make the
datasets smaller (e.g. to carry them to another machine).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import cv2
import numpy as np

from common import CLIPS, DATASETS, FRAMES, LABELS, all_stems, split_of, write_json

BOX_ENLARGE = 1.25
PIXELS_PER_SCALE_UNIT = 200.0
MIN_VISIBLE_JOINTS = 8
IGNORE = 255
CLASSES_YAML = """\
# person segmentation labelled by BlazePose heavy's person mask on CenterNet boxes (tools/make_default_models)
names: [background, person]
colors: [[0, 0, 0], [220, 20, 60]]
ignore_index: 255
# Person pixels weigh 3x in the loss: pedestrians are 1.5 % of the pixels and 15-30 px wide, and the early exits'
# heads see them through pooled 1/32 maps; the weight keeps their recall up.
weights: [1.0, 3.0]
"""


def place_image(stem_name: str, image_dir, quality: int | None) -> None:
    source = FRAMES / f"{stem_name}.jpg"
    target = image_dir / f"{stem_name}.jpg"
    if target.exists():
        return
    if quality is not None:
        image = cv2.imread(str(source))
        if image is None:
            raise SystemExit(f"cannot read {source}: run the frames stage first")
        cv2.imwrite(str(target), image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        return
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def pose_person(person: dict) -> dict:
    x1, y1, x2, y2 = person["box"]
    return {
        "joints": person["joints"],
        "head_box": person["head_box"],
        "center": [round((x1 + x2) / 2, 2), round((y1 + y2) / 2, 2)],
        "scale": round(BOX_ENLARGE * max(x2 - x1, y2 - y1) / PIXELS_PER_SCALE_UNIT, 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jpeg-quality", type=int, default=None,
                        help="re-encode the images at this JPEG quality instead of linking the frames")
    args = parser.parse_args()
    seg_root, pose_root = DATASETS / "person_seg", DATASETS / "person_pose"
    for root, parts in ((seg_root, ("images", "labels", "splits")), (pose_root, ("images", "poses", "splits"))):
        for part in parts:
            (root / part).mkdir(parents=True, exist_ok=True)
    (seg_root / "classes.yaml").write_text(CLASSES_YAML)

    splits = {"seg": {"train": [], "val": []}, "pose": {"train": [], "val": []}}
    stat_splits = ("train", "val") + tuple(f"val_{clip.name}" for clip in CLIPS)
    stats = {split: {"frames": 0, "frames_without_people": 0, "people": 0, "pose_frames": 0, "pose_people": 0,
                     "visible_joints": 0, "pixels": np.zeros(3, np.int64)} for split in stat_splits}
    for stem_name in all_stems():
        record_path = LABELS / f"{stem_name}.json"
        if not record_path.is_file():
            raise SystemExit(f"{record_path} is missing: run the label stage first")
        record = json.loads(record_path.read_text())
        label_path = LABELS / f"{stem_name}.png"
        label = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)
        if label is None:
            raise SystemExit(f"cannot read {label_path}: rerun the label stage (--from label)")
        split = split_of(stem_name)
        tallies = [stats[split]] + ([stats[f"val_{stem_name.rsplit('_', 1)[0]}"]] if split == "val" else [])
        pixels = [(label == 0).sum(), (label == 1).sum(), (label == IGNORE).sum()]
        for counts in tallies:
            counts["frames"] += 1
            counts["frames_without_people"] += not record["people"]
            counts["people"] += len(record["people"])
            counts["pixels"] += pixels

        place_image(stem_name, seg_root / "images", args.jpeg_quality)
        shutil.copyfile(label_path, seg_root / "labels" / f"{stem_name}.png")
        splits["seg"][split].append(stem_name)

        people = [pose_person(p) for p in record["people"]
                  if sum(v for _, _, v in p["joints"]) >= MIN_VISIBLE_JOINTS]
        if people:
            place_image(stem_name, pose_root / "images", args.jpeg_quality)
            write_json(pose_root / "poses" / f"{stem_name}.json", {"people": people})
            splits["pose"][split].append(stem_name)
            for counts in tallies:
                counts["pose_frames"] += 1
                counts["pose_people"] += len(people)
                counts["visible_joints"] += sum(v for p in people for _, _, v in p["joints"])

    for task, root in (("seg", seg_root), ("pose", pose_root)):
        for clip in CLIPS:
            splits[task][f"val_{clip.name}"] = [s for s in splits[task]["val"] if s.startswith(f"{clip.name}_")]
        for split, stems in splits[task].items():
            (root / "splits" / f"{split}.txt").write_text("".join(f"{s}\n" for s in stems))
    summary = {}
    for split, counts in stats.items():
        pixels = counts.pop("pixels")
        shares = pixels / max(int(pixels.sum()), 1)
        summary[split] = {**counts, "share_background": round(float(shares[0]), 5),
                          "share_person": round(float(shares[1]), 5), "share_ignore": round(float(shares[2]), 5)}
    write_json(DATASETS / "stats.json", summary)
    for split, counts in summary.items():
        print(f"dataset: {split}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
