"""Stage `frames`: every frame of each clip as JPEG (quality 95), named by clip and frame index (`vtest_0000.jpg`)."""
from __future__ import annotations

import hashlib
import sys

import cv2

from common import CLIPS, FRAMES, stem


def main() -> int:
    FRAMES.mkdir(parents=True, exist_ok=True)
    for clip in CLIPS:
        if not clip.path.is_file():
            raise SystemExit(f"{clip.path} is missing: run the fetch stage first")
        digest = hashlib.sha256(clip.path.read_bytes()).hexdigest()
        if digest != clip.sha256:
            raise SystemExit(f"{clip.path}: sha256 {digest}, expected {clip.sha256} (a different package version?)")
        capture = cv2.VideoCapture(str(clip.path))
        if not capture.isOpened():
            raise SystemExit(f"OpenCV cannot open {clip.path}")
        index, size = 0, None
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            size = f"{frame.shape[1]}x{frame.shape[0]}"
            out = FRAMES / f"{stem(clip, index)}.jpg"
            if not out.exists():
                ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
                tmp = out.with_suffix(".tmp")
                tmp.write_bytes(data.tobytes())
                tmp.replace(out)
            index += 1
        if index != clip.frames:
            raise SystemExit(f"{clip.path}: decoded {index} frames, expected {clip.frames}")
        print(f"frames: {clip.name}: {index} frames {size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
