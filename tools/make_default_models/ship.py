"""Stage `ship`: six held-out vtest frames (>= 600) with their teacher masks, small enough to ship with the package.

A test of the shipped model compares its final exit with these teacher masks. The frames are chosen to show people
at several sizes: among held-out vtest frames with at least three labelled people, all of them confident teacher
calls (presence >= MIN_PRESENCE: the few cones BlazePose accepts score 0.5-0.75, people 0.99), greedily the ones
with the widest spread of person heights (then the most people), at least MIN_GAP frames apart (no near-copies).
Writes SHIP/STEM.jpg (JPEG quality 85) and SHIP/STEM.png (the label: 0 background, 1 person, 255 ignore) and
SHIP/frames.json (the stems and their people's heights).
"""
from __future__ import annotations

import json
import shutil
import sys

import cv2

from common import CLIPS, FRAMES, LABELS, SHIP, stem, write_json

COUNT = 6
MIN_GAP = 25
MIN_PEOPLE = 3
MIN_PRESENCE = 0.9
JPEG_QUALITY = 85


def main() -> int:
    vtest = next(c for c in CLIPS if c.name == "vtest")
    candidates = []
    for index in range(vtest.train_end, vtest.frames):
        record_path = LABELS / f"{stem(vtest, index)}.json"
        if not record_path.is_file():
            raise SystemExit(f"{record_path} is missing: run the label stage first")
        people = json.loads(record_path.read_text())["people"]
        heights = sorted(round(p["box"][3] - p["box"][1]) for p in people)
        if len(heights) >= MIN_PEOPLE and all(p["presence"] >= MIN_PRESENCE for p in people):
            candidates.append((heights[-1] - heights[0], len(heights), index, heights))
    chosen = []
    for spread, count, index, heights in sorted(candidates, reverse=True):
        if all(abs(index - other) >= MIN_GAP for other, _ in chosen):
            chosen.append((index, heights))
        if len(chosen) == COUNT:
            break
    if len(chosen) < COUNT:
        raise SystemExit(f"ship: only {len(chosen)} held-out frames qualify (>= {MIN_PEOPLE} people with presence "
                         f">= {MIN_PRESENCE}, {MIN_GAP} frames apart)")
    if SHIP.exists():
        shutil.rmtree(SHIP)
    SHIP.mkdir(parents=True)
    total = 0
    for index, heights in sorted(chosen):
        name = stem(vtest, index)
        frame = cv2.imread(str(FRAMES / f"{name}.jpg"))
        ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY, cv2.IMWRITE_JPEG_OPTIMIZE, 1])
        (SHIP / f"{name}.jpg").write_bytes(data.tobytes())
        shutil.copyfile(LABELS / f"{name}.png", SHIP / f"{name}.png")
        total += len(data) + (SHIP / f"{name}.png").stat().st_size
        print(f"ship: {name}: people {len(heights)}, heights {heights} px")
    write_json(SHIP / "frames.json", {stem(vtest, i): {"person_heights": h} for i, h in sorted(chosen)})
    print(f"ship: {len(chosen)} frames, {total / 1e3:.0f} kB in {SHIP}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
