"""Stage `overlays`: label overlays for a human check, for a grid of frames from both clips and both splits.

Each overlay (overlays/STEM.png) shows the frame at full size with person pixels tinted crimson, ignore pixels
(255) tinted yellow, each kept person's MPII skeleton and joints (hollow where v = 0), its head box, and the
rejected detector boxes in blue (dashed look: thin). contact_sheet.png tiles them at half size with their names.
Run with the project's .venv (it reads the joint order and skeleton from anytime_perception.data.labels).
"""
from __future__ import annotations

import argparse
import json
import sys

import cv2
import numpy as np

from common import CLIPS, FRAMES, LABELS, OVERLAYS, REPO, stem

sys.path.insert(0, str(REPO))
from anytime_perception.data.labels import MPII_SKELETON  # noqa: E402

PERSON_BGR = (60, 20, 220)
IGNORE_BGR = (0, 215, 255)
JOINT_BGR = (0, 255, 0)
RIGHT_BGR = (255, 128, 0)  # right-side limbs, to see left/right swaps
REJECTED_BGR = (255, 80, 0)
RIGHT_JOINTS = {0, 1, 2, 10, 11, 12}


def overlay(stem_name: str) -> np.ndarray:
    frame = cv2.imread(str(FRAMES / f"{stem_name}.jpg"))
    label = cv2.imread(str(LABELS / f"{stem_name}.png"), cv2.IMREAD_UNCHANGED)
    if frame is None or label is None:
        raise SystemExit(f"{stem_name}: frame or label missing under {FRAMES} / {LABELS}: run frames and label first")
    record = json.loads((LABELS / f"{stem_name}.json").read_text())
    out = frame.astype(np.float32)
    for value, color in ((1, PERSON_BGR), (255, IGNORE_BGR)):
        where = label == value
        out[where] = 0.45 * out[where] + 0.55 * np.array(color, np.float32)
    out = out.round().astype(np.uint8)
    for rejected in record["rejected"]:
        x1, y1, x2, y2 = (int(round(v)) for v in rejected["box"])
        cv2.rectangle(out, (x1, y1), (x2, y2), REJECTED_BGR, 1)
    for person in record["people"]:
        joints = np.asarray(person["joints"])
        for a, b in MPII_SKELETON:
            color = RIGHT_BGR if a in RIGHT_JOINTS and b in RIGHT_JOINTS else JOINT_BGR
            pa, pb = tuple(joints[a, :2].round().astype(int)), tuple(joints[b, :2].round().astype(int))
            cv2.line(out, pa, pb, color, 1, cv2.LINE_AA)
        for index, (x, y, v) in enumerate(joints):
            color = RIGHT_BGR if index in RIGHT_JOINTS else JOINT_BGR
            cv2.circle(out, (int(round(x)), int(round(y))), 2, color, -1 if v else 1, cv2.LINE_AA)
        x1, y1, x2, y2 = (int(round(v)) for v in person["head_box"])
        cv2.rectangle(out, (x1, y1), (x2, y2), (255, 255, 255), 1)
    return out


def contact_sheet(images: list[tuple[str, np.ndarray]], columns: int, cell_width: int) -> np.ndarray:
    cells = []
    for name, image in images:
        height = int(round(image.shape[0] * cell_width / image.shape[1]))
        cell = cv2.resize(image, (cell_width, height), interpolation=cv2.INTER_AREA)
        cv2.putText(cell, name, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(cell, name, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        cells.append(cell)
    row_height = max(c.shape[0] for c in cells)
    padded = [cv2.copyMakeBorder(c, 0, row_height - c.shape[0], 0, 0, cv2.BORDER_CONSTANT) for c in cells]
    padded += [np.zeros_like(padded[0])] * (-len(padded) % columns)
    rows = [np.hstack(padded[i:i + columns]) for i in range(0, len(padded), columns)]
    return np.vstack(rows)


def grid_stems(per_split: int) -> list[str]:
    """Evenly spaced frames of each clip's train range and held-out range."""
    stems = []
    for clip in CLIPS:
        for first, end in ((0, clip.train_end), (clip.train_end, clip.frames)):
            stems += [stem(clip, int(i)) for i in np.linspace(first, end - 1, per_split).round()]
    return stems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-split", type=int, default=4, help="frames per clip and split")
    parser.add_argument("--stems", nargs="*", help="these frames instead of the grid")
    args = parser.parse_args()
    OVERLAYS.mkdir(parents=True, exist_ok=True)
    stems = args.stems or grid_stems(args.per_split)
    images = []
    for stem_name in stems:
        image = overlay(stem_name)
        cv2.imwrite(str(OVERLAYS / f"{stem_name}.png"), image)
        images.append((stem_name, image))
    cv2.imwrite(str(OVERLAYS / "contact_sheet.png"), contact_sheet(images, columns=4, cell_width=384))
    print(f"overlays: {len(images)} frames and contact_sheet.png in {OVERLAYS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
