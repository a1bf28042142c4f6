"""sensor_msgs/Image and CompressedImage <-> numpy, without cv_bridge.

Decoding gives what the model eats, an (H, W, 3) uint8 RGB array; encoding builds the node's outputs (mono8 labels,
rgb8 overlays, 32FC1 or mono8 confidence). Everything is numpy (OpenCV only for JPEG/PNG), respects ``step`` (row
padding) and ``is_bigendian``, and refuses bad input with an :class:`ImageError` whose ``reason`` is a short key
the node counts (``unsupported_encoding``, ``zero_size``, ``too_large``, ``bad_step``, ``bad_length``,
``bad_shape``, ``decode_failed``) and whose message says what was wrong.

Messages are filled with ``data = array.tobytes()``: assigning an ndarray to a message's ``data`` is ~500 times
slower (../shared/reference/ros2-on-pypi.md).
"""
from __future__ import annotations

import struct
import sys
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DECODABLE_ENCODINGS",
    "ImageError",
    "image_to_rgb",
    "compressed_to_rgb",
    "array_to_image",
    "rgb_to_image",
    "labels_to_image",
    "confidence_to_image",
    "image_to_array",
    "scale_camera_info",
    "pinhole_camera_info",
]

#: Default limit on width * height of an input image (a 4096 x 4096 frame); larger ones are refused as
#: ``too_large`` before any pixel is touched. Every function that decodes takes ``max_pixels``.
DEFAULT_MAX_PIXELS = 4096 * 4096


class ImageError(ValueError):
    """An image message that cannot be converted. ``reason`` is a stable key for counters; str() explains."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class _Layout:
    channels: int
    dtype: str           # numpy dtype without byte order ('u1', 'u2', 'f4')
    to_rgb: str          # how decoding turns the channels into RGB: rgb, bgr, rgba, bgra, gray, gray16, uyvy, yuyv


# Encodings image_to_rgb() accepts (lower-case keys; names as in sensor_msgs/image_encodings.hpp). 8UC3 carries no
# channel order; it is taken as BGR, OpenCV's order, which is what publishers of 8UC3 frames produce.
# "yuv422" is UYVY byte order (U0 Y0 V0 Y1) and "yuv422_yuy2" is YUYV, as in ROS.
_DECODE = {
    "rgb8": _Layout(3, "u1", "rgb"),
    "bgr8": _Layout(3, "u1", "bgr"),
    "8uc3": _Layout(3, "u1", "bgr"),
    "rgba8": _Layout(4, "u1", "rgba"),
    "bgra8": _Layout(4, "u1", "bgra"),
    "8uc4": _Layout(4, "u1", "bgra"),
    "mono8": _Layout(1, "u1", "gray"),
    "8uc1": _Layout(1, "u1", "gray"),
    "mono16": _Layout(1, "u2", "gray16"),
    "16uc1": _Layout(1, "u2", "gray16"),
    "yuv422": _Layout(2, "u1", "uyvy"),
    "uyvy": _Layout(2, "u1", "uyvy"),
    "yuv422_yuy2": _Layout(2, "u1", "yuyv"),
    "yuyv": _Layout(2, "u1", "yuyv"),
}

#: Encodings accepted by :func:`image_to_rgb`.
DECODABLE_ENCODINGS = tuple(name.upper() if name[0].isdigit() else name for name in _DECODE)

# Encodings array_to_image() / image_to_array() handle: encoding -> (channels, numpy dtype without byte order).
_ARRAY = {
    "mono8": (1, "u1"), "8UC1": (1, "u1"), "rgb8": (3, "u1"), "bgr8": (3, "u1"), "8UC3": (3, "u1"),
    "rgba8": (4, "u1"), "bgra8": (4, "u1"), "mono16": (1, "u2"), "16UC1": (1, "u2"), "32FC1": (1, "f4"),
}


def _lookup(encoding: str) -> _Layout:
    layout = _DECODE.get(encoding.strip().lower())
    if layout is None:
        raise ImageError(
            "unsupported_encoding",
            f"unsupported image encoding {encoding!r}; supported: {', '.join(DECODABLE_ENCODINGS)}",
        )
    return layout


#: OpenCV colour conversion to RGB per layout kind (YUV 4:2:2 with BT.601 limited-range coefficients).
_CV_CONVERSIONS = {"bgr": "COLOR_BGR2RGB", "rgba": "COLOR_RGBA2RGB", "bgra": "COLOR_BGRA2RGB", "gray": "COLOR_GRAY2RGB",
                   "gray16": "COLOR_GRAY2RGB", "uyvy": "COLOR_YUV2RGB_UYVY", "yuyv": "COLOR_YUV2RGB_YUYV"}


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageError("zero_size", f"image has zero size ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(
            "too_large", f"image of {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}"
        )


def check_image(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> _Layout:
    """The checks of :func:`image_to_rgb` without decoding: raises :class:`ImageError` for what it would reject;
    returns the encoding's layout."""
    layout = _lookup(msg.encoding)
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    _check_size(width, height, max_pixels)
    itemsize = np.dtype(layout.dtype).itemsize
    row_bytes = width * layout.channels * itemsize
    if layout.to_rgb in ("uyvy", "yuyv") and width % 2:
        raise ImageError("bad_shape", f"{msg.encoding} image needs an even width, got {width}")
    if step < row_bytes:
        raise ImageError("bad_step",
                         f"step {step} is shorter than a row of {width} {msg.encoding} pixels ({row_bytes} bytes)")
    if step % itemsize:
        raise ImageError("bad_step",
                         f"step {step} is not a multiple of the {itemsize}-byte channel size of {msg.encoding}")
    size = len(msg.data)
    if size != step * height:
        raise ImageError("bad_length",
                         f"data has {size} bytes, expected step * height = {step} * {height} = {step * height}")
    return layout


def image_to_rgb(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a sensor_msgs/Image into an (H, W, 3) uint8 RGB array.

    Accepts the encodings of :data:`DECODABLE_ENCODINGS`. Grey images are repeated into three channels; mono16 is
    reduced to 8 bits by its high byte; alpha is dropped; YUV 4:2:2 is converted with BT.601 limited-range
    coefficients (as OpenCV's ``COLOR_YUV2RGB_UYVY``/``_YUYV``). For rgb8 without row padding the result is a view
    of ``msg.data`` (no copy), otherwise a new array.

    Raises :class:`ImageError` for an unsupported encoding, zero size, more than ``max_pixels`` pixels, a ``step``
    shorter than a row, or ``data`` whose length is not ``step * height``.
    """
    layout = check_image(msg, max_pixels)
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    itemsize = np.dtype(layout.dtype).itemsize
    row_bytes = width * layout.channels * itemsize
    dtype = np.dtype(layout.dtype).newbyteorder(">" if msg.is_bigendian else "<") if itemsize > 1 else np.dtype("u1")
    rows = np.frombuffer(msg.data, dtype=dtype).reshape(height, step // itemsize)
    pixels = rows[:, : width * layout.channels].reshape(height, width, layout.channels)

    kind = layout.to_rgb
    if kind == "rgb":
        return pixels if step == row_bytes else np.ascontiguousarray(pixels)
    import cv2

    if kind == "gray16":
        pixels = (pixels >> 8).astype(np.uint8)
    if kind in ("uyvy", "yuyv"):
        pixels = pixels.reshape(height, width, 2)
    # OpenCV converts in one pass, 10-15x faster than numpy's strided copies (bgr8 at 512x1024: 0.1 vs 1.5 ms)
    return cv2.cvtColor(pixels, getattr(cv2, _CV_CONVERSIONS[kind]))


def _compressed_dimensions(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header without decoding, or None when not found."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    if data[:2] == b"\xff\xd8":
        pos = 2
        while pos + 9 <= len(data):
            if data[pos] != 0xFF:
                return None
            marker = data[pos + 1]
            if marker == 0xFF:          # fill byte
                pos += 1
                continue
            if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:   # stand-alone markers
                pos += 2
                continue
            (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):   # start of frame
                height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
                return width, height
            pos += 2 + length
    return None


_COMPRESSED_FORMATS = ("jpeg", "jpg", "png")


def compressed_to_rgb(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage (JPEG or PNG) into an (H, W, 3) uint8 RGB array with OpenCV.

    ``format`` may be image_transport's ``"<encoding>; jpeg compressed <encoding>"`` form, a bare ``jpeg``/``png``
    or empty (then the data's signature decides). The size is read from the JPEG/PNG header and checked against
    ``max_pixels`` before decoding. Raises :class:`ImageError` (``unsupported_encoding`` for other formats such as
    compressedDepth, ``zero_size``, ``too_large``, ``decode_failed``).
    """
    fmt = msg.format.strip().lower()
    if fmt and not any(name in fmt for name in _COMPRESSED_FORMATS):
        raise ImageError("unsupported_encoding", f"unsupported compressed format {msg.format!r}; supported: jpeg, png")
    if "compresseddepth" in fmt:
        raise ImageError("unsupported_encoding", f"compressed depth images are not supported ({msg.format!r})")
    data = bytes(msg.data)
    if not data:
        raise ImageError("zero_size", "compressed image has no data")
    dims = _compressed_dimensions(data)
    if dims is not None:
        _check_size(*dims, max_pixels)
    import cv2

    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageError("decode_failed",
                         f"OpenCV could not decode {len(data)} bytes of {msg.format or 'unnamed'} data")
    _check_size(bgr.shape[1], bgr.shape[0], max_pixels)
    return np.ascontiguousarray(bgr[:, :, ::-1])


def array_to_image(array: np.ndarray, encoding: str, header=None):
    """Build a sensor_msgs/Image from an (H, W) or (H, W, C) array in one of the encodings mono8, 8UC1, rgb8, bgr8,
    8UC3, rgba8, bgra8, mono16, 16UC1, 32FC1. The array's dtype must match the encoding (no silent conversion);
    rows are packed (``step = width * channels * itemsize``), multi-byte data keeps this machine's byte order
    (``is_bigendian`` says which), and ``data`` is set from ``tobytes()``.
    """
    from sensor_msgs.msg import Image

    if encoding not in _ARRAY:
        raise ImageError("unsupported_encoding", f"cannot build {encoding!r} images; supported: {', '.join(_ARRAY)}")
    channels, kind = _ARRAY[encoding]
    array = np.asarray(array)
    if array.ndim == 2 and channels == 1:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] != channels:
        shape = "(H, W)" if channels == 1 else f"(H, W, {channels})"
        raise ImageError("bad_shape", f"{encoding} needs shape {shape}, got {array.shape}")
    if array.dtype.kind + str(array.dtype.itemsize) != kind:
        raise ImageError("bad_shape", f"{encoding} needs dtype {np.dtype(kind)}, got {array.dtype}")
    height, width = array.shape[:2]
    if height == 0 or width == 0:
        raise ImageError("zero_size", f"array has zero size ({width}x{height})")
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = height, width
    msg.encoding = encoding
    msg.is_bigendian = int(array.dtype.itemsize > 1 and _is_big(array.dtype))
    msg.step = width * channels * array.dtype.itemsize
    msg.data = np.ascontiguousarray(array).tobytes()
    return msg


def _is_big(dtype: np.dtype) -> bool:
    return dtype.byteorder == ">" or (dtype.byteorder in ("=", "|") and sys.byteorder == "big")


def image_to_array(msg) -> np.ndarray:
    """The pixels of an Image in one of :func:`array_to_image`'s encodings: (H, W) for one channel, (H, W, C)
    otherwise, channels as stored (no reordering), in the encoding's dtype and native byte order. Respects ``step``
    and ``is_bigendian``."""
    if msg.encoding not in _ARRAY:
        raise ImageError("unsupported_encoding",
                         f"cannot read {msg.encoding!r} images as arrays; supported: {', '.join(_ARRAY)}")
    channels, kind = _ARRAY[msg.encoding]
    dtype = np.dtype(kind)
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise ImageError("zero_size", f"image has zero size ({width}x{height})")
    if step < width * channels * dtype.itemsize or step % dtype.itemsize:
        raise ImageError("bad_step", f"step {step} does not fit {width} {msg.encoding} pixels")
    if len(msg.data) != step * height:
        raise ImageError("bad_length", f"data has {len(msg.data)} bytes, expected {step * height}")
    rows = np.frombuffer(msg.data, dtype=dtype).reshape(height, step // dtype.itemsize)
    pixels = rows[:, : width * channels].astype(dtype.newbyteorder("="), copy=False)
    return pixels.reshape(height, width) if channels == 1 else pixels.reshape(height, width, channels)


def rgb_to_image(rgb: np.ndarray, header=None):
    """An (H, W, 3) uint8 RGB array (e.g. a class-colour overlay) -> rgb8 Image."""
    return array_to_image(rgb, "rgb8", header)


def labels_to_image(labels: np.ndarray, header=None):
    """(H, W) integer class ids in 0..255 -> mono8 Image (rviz2 shows it as grey levels; the class map is on
    ``label_info``). Ids outside 0..255 raise ImageError (``bad_shape``) rather than wrapping around."""
    labels = np.asarray(labels)
    if labels.dtype != np.uint8:
        if labels.dtype.kind not in "iu":
            raise ImageError("bad_shape", f"labels must be integers, got {labels.dtype}")
        if labels.size and (labels.min() < 0 or labels.max() > 255):
            raise ImageError("bad_shape", f"label ids must lie in 0..255, got {labels.min()}..{labels.max()}")
        labels = labels.astype(np.uint8)
    return array_to_image(labels, "mono8", header)


def confidence_to_image(confidence: np.ndarray, header=None, encoding: str = "32FC1"):
    """(H, W) confidence in [0, 1] -> Image: ``32FC1`` (the values, as float32) or ``mono8`` (0..255 for 0..1,
    rounded; values outside [0, 1] are clipped)."""
    confidence = np.asarray(confidence)
    if encoding == "32FC1":
        return array_to_image(confidence.astype(np.float32, copy=False), "32FC1", header)
    if encoding == "mono8":
        scaled = np.rint(np.clip(confidence.astype(np.float32, copy=False), 0.0, 1.0) * 255.0).astype(np.uint8)
        return array_to_image(scaled, "mono8", header)
    raise ImageError("unsupported_encoding", f"confidence images are 32FC1 or mono8, not {encoding!r}")


def scale_camera_info(info, width: int, height: int):
    """A CameraInfo for an image of ``width`` x ``height`` that covers the same field of view as the camera's
    image (e.g. a mask at 1/4 of the input's size), so that rviz2's Camera display can project the mask.

    The calibration of a sensor_msgs/CameraInfo refers to the full-resolution sensor; the camera's image is its
    ``roi`` (all of it when the ROI is empty), binned by ``binning_x``/``binning_y``. The result describes the new
    image directly: focal lengths and the projection's translation scale by ``width / roi width`` (and height),
    principal points map pixel centres to pixel centres (``c' = (c - offset + 0.5) * s - 0.5``), distortion and
    rectification are unchanged, binning and ROI are cleared. Raises ValueError when ``info`` has no size.
    """
    from sensor_msgs.msg import CameraInfo

    if info.width == 0 or info.height == 0:
        raise ValueError("camera_info has zero width or height; cannot scale it")
    if width <= 0 or height <= 0:
        raise ValueError(f"target size must be positive, got {width}x{height}")
    roi = info.roi
    if roi.width and roi.height:
        x0, y0, w0, h0 = roi.x_offset, roi.y_offset, roi.width, roi.height
    else:
        x0, y0, w0, h0 = 0, 0, info.width, info.height
    sx, sy = width / w0, height / h0

    k = np.asarray(info.k, dtype=np.float64).copy()
    k[0] *= sx
    k[1] *= sx
    k[2] = (k[2] - x0 + 0.5) * sx - 0.5
    k[4] *= sy
    k[5] = (k[5] - y0 + 0.5) * sy - 0.5
    p = np.asarray(info.p, dtype=np.float64).copy()
    p[0] *= sx
    p[1] *= sx
    p[2] = (p[2] - x0 + 0.5) * sx - 0.5
    p[3] *= sx
    p[5] *= sy
    p[6] = (p[6] - y0 + 0.5) * sy - 0.5
    p[7] *= sy

    out = CameraInfo()
    out.header = info.header
    out.width, out.height = int(width), int(height)
    out.distortion_model = info.distortion_model
    out.d = list(info.d)
    out.r = np.asarray(info.r, dtype=np.float64).copy()
    out.k = k
    out.p = p
    return out


def pinhole_camera_info(header, width: int, height: int, horizontal_fov_deg: float = 60.0):
    """A distortion-free CameraInfo for a camera without calibration (the player's clips), principal point at the
    image centre and square pixels, so that rviz2's Camera display has something to project with."""
    from sensor_msgs.msg import CameraInfo

    if width <= 0 or height <= 0:
        raise ValueError(f"size must be positive, got {width}x{height}")
    if not 0.0 < horizontal_fov_deg < 180.0:
        raise ValueError(f"horizontal_fov_deg must lie in (0, 180), got {horizontal_fov_deg}")
    f = (width / 2.0) / np.tan(np.radians(horizontal_fov_deg) / 2.0)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    info = CameraInfo()
    info.header = header
    info.width, info.height = int(width), int(height)
    info.distortion_model = "plumb_bob"
    info.d = [0.0] * 5
    info.k = np.array([f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0])
    info.r = np.eye(3).ravel()
    info.p = np.array([f, 0.0, cx, 0.0, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0])
    return info
