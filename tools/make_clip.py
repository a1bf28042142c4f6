"""Re-create the shipped demo clip (anytime_perception/assets/vtest/) from OpenCV's sample video vtest.avi.

vtest.avi (768x576, 10 fps) is in the Debian package opencv-doc (examples/data/vtest.avi under
/usr/share/doc/opencv-doc/); get it with `apt-get download opencv-doc && dpkg-deb -x opencv-doc_*.deb x`.

Usage: python tools/make_clip.py PATH/TO/vtest.avi [--start 700] [--count 30] [--quality 75]
"""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import cv2

OUT = Path(__file__).resolve().parents[1] / "anytime_perception" / "assets" / "vtest"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("--start", type=int, default=700, help="first frame index (0-based; >= 600: frames the shipped models never trained on)")
    parser.add_argument("--count", type=int, default=30)
    parser.add_argument("--quality", type=int, default=75, help="JPEG quality")
    args = parser.parse_args()

    digest = hashlib.sha256(args.video.read_bytes()).hexdigest()
    capture = cv2.VideoCapture(str(args.video))
    if not capture.isOpened():
        raise SystemExit(f"cannot open {args.video}")
    capture.set(cv2.CAP_PROP_POS_FRAMES, args.start)
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("vtest_*.jpg"):
        old.unlink()
    total = 0
    for index in range(args.start, args.start + args.count):
        ok, frame = capture.read()
        if not ok:
            raise SystemExit(f"{args.video} ends before frame {index}")
        ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, args.quality, cv2.IMWRITE_JPEG_OPTIMIZE, 1])
        (OUT / f"vtest_{index:04d}.jpg").write_bytes(data.tobytes())
        total += len(data)
    print(f"wrote {args.count} frames ({total / 1e6:.2f} MB) to {OUT}; source sha256 {digest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
