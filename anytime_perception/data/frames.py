"""Frame sources: a folder of images, a video file or the shipped clip, as (H, W, 3) uint8 RGB arrays.

Used by the player (``anytime_player``), by model loading (the calibration and warm-up frames) and by benchmarks;
nothing here needs ROS.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
FOLDER_RATE_HZ = 10.0

#: The shipped demo clip (30 JPEG frames of OpenCV's vtest.avi, 768x576, 10 fps; see its README.md).
CLIP_NAME = "vtest"
CLIP_RATE_HZ = 10.0


class SourceError(RuntimeError):
    """A source that cannot be opened or read."""


def clip_dir(name: str = CLIP_NAME) -> Path:
    """The folder of a shipped clip (package data, installed with the Python package)."""
    path = Path(__file__).resolve().parents[1] / "assets" / name
    if not path.is_dir():
        raise FileNotFoundError(f"no shipped clip {name!r} at {path}")
    return path


class FrameSource:
    """Frames of a folder of images or a video file, as (H, W, 3) uint8 RGB arrays, with a rewind."""

    def __init__(self, spec: str | Path = ""):
        import cv2

        spec = str(spec).strip()
        if spec in ("", CLIP_NAME):
            path, self.name = clip_dir(), f"shipped clip {CLIP_NAME!r}"
        else:
            path, self.name = Path(spec).expanduser(), spec
        self.path = path
        self._capture = None
        self._files: list[Path] = []
        self._index = 0
        if path.is_dir():
            self._files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self._files:
                raise SourceError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            self.rate = CLIP_RATE_HZ if spec in ("", CLIP_NAME) else FOLDER_RATE_HZ
            self.length: int | None = len(self._files)
        elif path.is_file():
            self._capture = cv2.VideoCapture(str(path))
            if not self._capture.isOpened():
                raise SourceError(f"OpenCV cannot open {path} as a video")
            fps = self._capture.get(cv2.CAP_PROP_FPS)
            self.rate = float(fps) if fps and np.isfinite(fps) and fps > 0 else FOLDER_RATE_HZ
            frames = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))
            self.length = frames if frames > 0 else None
        else:
            raise SourceError(f"source {spec!r} is neither a folder nor a file")

    def read(self) -> np.ndarray | None:
        """The next frame, or None at the end."""
        import cv2

        if self._capture is not None:
            ok, bgr = self._capture.read()
            if not ok:
                return None
        else:
            if self._index >= len(self._files):
                return None
            file = self._files[self._index]
            bgr = cv2.imread(str(file), cv2.IMREAD_COLOR)
            if bgr is None:
                raise SourceError(f"cannot decode image {file}")
        self._index += 1
        return np.ascontiguousarray(bgr[:, :, ::-1])

    def rewind(self) -> None:
        import cv2

        self._index = 0
        if self._capture is not None:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)

    def frames(self, loop: bool = False) -> Iterator[np.ndarray]:
        """Iterate over the frames (forever with ``loop``; an empty source ends even then)."""
        while True:
            produced = False
            while (frame := self.read()) is not None:
                produced = True
                yield frame
            if not (loop and produced):
                return
            self.rewind()

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


def clip_frames(count: int) -> list[np.ndarray]:
    """``count`` frames spread evenly over the shipped clip (repeating frames when it has fewer)."""
    source = FrameSource()
    try:
        frames = list(source.frames())
    finally:
        source.close()
    return [frames[round(i * (len(frames) - 1) / max(count - 1, 1))] for i in range(count)]
