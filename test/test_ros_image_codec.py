"""sensor_msgs/Image and CompressedImage <-> numpy (anytime_perception.ros.image_codec), every encoding and every
bad input; CameraInfo scaling."""
import struct
import sys

import numpy as np
import pytest

from conftest import dependency_missing

try:
    import cv2
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image
    from std_msgs.msg import Header
except ImportError as error:  # pragma: no cover - depends on the environment
    dependency_missing(error, "ROS 2 wheels or OpenCV")

from anytime_perception.ros import image_codec as codec
from anytime_perception.ros.image_codec import ImageError

RNG = np.random.default_rng(0)
H, W = 5, 6


def make_image(pixels: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> Image:
    """An Image with `pad` garbage bytes at the end of every row."""
    pixels = np.asarray(pixels)
    if pixels.dtype.itemsize > 1:
        pixels = pixels.astype(pixels.dtype.newbyteorder(">" if bigendian else "<"))
    rows = pixels.reshape(pixels.shape[0], -1).view(np.uint8)
    padded = np.concatenate([rows, np.full((rows.shape[0], pad), 0xAB, np.uint8)], axis=1)
    msg = Image(height=pixels.shape[0], width=pixels.shape[1], encoding=encoding, is_bigendian=int(bigendian))
    msg.step = padded.shape[1]
    msg.data = padded.tobytes()
    return msg


RGB = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
GRAY = RNG.integers(0, 256, (H, W), dtype=np.uint8)
GRAY16 = RNG.integers(0, 65536, (H, W), dtype=np.uint16)

# encoding -> (pixels as published, expected RGB)
CASES = {
    "rgb8": (RGB, RGB),
    "bgr8": (RGB[:, :, ::-1], RGB),
    "8UC3": (RGB[:, :, ::-1], RGB),
    "rgba8": (np.dstack([RGB, np.full((H, W), 7, np.uint8)]), RGB),
    "bgra8": (np.dstack([RGB[:, :, ::-1], np.full((H, W), 7, np.uint8)]), RGB),
    "8UC4": (np.dstack([RGB[:, :, ::-1], np.full((H, W), 7, np.uint8)]), RGB),
    "mono8": (GRAY, np.repeat(GRAY[:, :, None], 3, axis=2)),
    "8UC1": (GRAY, np.repeat(GRAY[:, :, None], 3, axis=2)),
    "mono16": (GRAY16, np.repeat((GRAY16 >> 8).astype(np.uint8)[:, :, None], 3, axis=2)),
    "16UC1": (GRAY16, np.repeat((GRAY16 >> 8).astype(np.uint8)[:, :, None], 3, axis=2)),
}


@pytest.mark.parametrize("pad", [0, 3, 16])
@pytest.mark.parametrize("encoding", sorted(CASES))
def test_decode_every_encoding_with_and_without_row_padding(encoding, pad):
    pixels, expected = CASES[encoding]
    if pixels.dtype.itemsize == 2 and pad % 2:
        pad += 1   # a row stride must be a whole number of 16-bit pixels
    rgb = codec.image_to_rgb(make_image(pixels, encoding, pad=pad))
    assert rgb.dtype == np.uint8 and rgb.shape == (H, W, 3)
    np.testing.assert_array_equal(rgb, expected)


@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
def test_mono16_big_and_little_endian_give_the_same_pixels(encoding):
    little = codec.image_to_rgb(make_image(GRAY16, encoding, bigendian=False))
    big_msg = make_image(GRAY16, encoding, bigendian=True, pad=2)
    assert bytes(big_msg.data)[:2] == struct.pack(">H", int(GRAY16[0, 0]))
    np.testing.assert_array_equal(codec.image_to_rgb(big_msg), little)
    np.testing.assert_array_equal(little[:, :, 0], (GRAY16 >> 8).astype(np.uint8))


def test_rgb8_without_padding_is_a_view_and_with_padding_a_contiguous_copy():
    view = codec.image_to_rgb(make_image(RGB, "rgb8"))
    assert not view.flags.owndata
    padded = codec.image_to_rgb(make_image(RGB, "rgb8", pad=5))
    assert padded.flags.c_contiguous


@pytest.mark.parametrize("encoding, code, order", [
    ("yuv422", cv2.COLOR_YUV2RGB_UYVY, "uyvy"),
    ("uyvy", cv2.COLOR_YUV2RGB_UYVY, "uyvy"),
    ("yuv422_yuy2", cv2.COLOR_YUV2RGB_YUYV, "yuyv"),
    ("yuyv", cv2.COLOR_YUV2RGB_YUYV, "yuyv"),
])
@pytest.mark.parametrize("pad", [0, 4])
def test_yuv422_matches_opencv(encoding, code, order, pad):
    packed = RNG.integers(0, 256, (8, 10, 2), dtype=np.uint8)   # 10 pixels per row = 5 macro-pixels
    expected = cv2.cvtColor(packed, code)
    rgb = codec.image_to_rgb(make_image(packed, encoding, pad=pad))
    assert rgb.shape == (8, 10, 3)
    assert np.abs(rgb.astype(int) - expected.astype(int)).max() <= 2, order


def test_decodable_encodings_are_listed():
    for name in ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "8UC3", "8UC1", "yuv422", "yuyv", "uyvy"):
        assert name in codec.DECODABLE_ENCODINGS


# ----- bad input: every case has a reason (the node's counter key) and a message -------------------------------
def _bad(**fields) -> Image:
    msg = make_image(RGB, "rgb8")
    for key, value in fields.items():
        setattr(msg, key, value)
    return msg


@pytest.mark.parametrize("msg, reason, words", [
    (_bad(encoding="bayer_rggb8"), "unsupported_encoding", "bayer_rggb8"),
    (_bad(encoding=""), "unsupported_encoding", "unsupported"),
    (_bad(encoding="32FC1"), "unsupported_encoding", "32FC1"),
    (_bad(width=0), "zero_size", "zero size"),
    (_bad(height=0, data=b""), "zero_size", "zero size"),
    (_bad(step=W * 3 - 1), "bad_step", "shorter than a row"),
    (_bad(data=bytes(H * W * 3 - 1)), "bad_length", f"expected step * height = {W * 3} * {H}"),
    (_bad(data=bytes(H * W * 3 + 7)), "bad_length", "bytes"),
    (_bad(data=b""), "bad_length", "0 bytes"),
    (make_image(GRAY16, "mono16", pad=0).__class__(height=2, width=3, encoding="mono16", step=7, data=bytes(14)),
     "bad_step", "multiple"),
    (make_image(np.zeros((2, 3, 2), np.uint8), "yuv422"), "bad_shape", "even width"),
])
def test_bad_images_raise_with_a_reason(msg, reason, words):
    for check in (codec.image_to_rgb, codec.check_image):     # the goal path checks without decoding
        with pytest.raises(ImageError) as info:
            check(msg)
        assert info.value.reason == reason
        assert words in str(info.value)


def test_too_large_is_refused_before_reading_data():
    msg = Image(height=100_000, width=100_000, encoding="rgb8", step=300_000)   # no data at all
    with pytest.raises(ImageError) as info:
        codec.image_to_rgb(msg)
    assert info.value.reason == "too_large" and "exceeds the limit" in str(info.value)
    with pytest.raises(ImageError) as info:
        codec.image_to_rgb(make_image(RGB, "rgb8"), max_pixels=H * W - 1)
    assert info.value.reason == "too_large"
    assert codec.image_to_rgb(make_image(RGB, "rgb8"), max_pixels=H * W).shape == (H, W, 3)


# ----- CompressedImage ----------------------------------------------------------------------------------------
SMOOTH = np.dstack([*np.meshgrid(np.arange(48, dtype=np.uint8) * 5, np.arange(32, dtype=np.uint8) * 7),
                    np.full((32, 48), 90, np.uint8)])


def _compressed(rgb: np.ndarray, ext: str, fmt: str) -> CompressedImage:
    ok, data = cv2.imencode(ext, np.ascontiguousarray(rgb[:, :, ::-1]))
    assert ok
    return CompressedImage(format=fmt, data=data.tobytes())


@pytest.mark.parametrize("ext, fmt", [(".png", "png"), (".png", "rgb8; png compressed bgr8"), (".png", ""),
                                      (".jpg", "jpeg"), (".jpg", "bgr8; jpeg compressed bgr8"), (".jpg", "")])
def test_compressed_png_and_jpeg(ext, fmt):
    rgb = codec.compressed_to_rgb(_compressed(SMOOTH, ext, fmt))
    assert rgb.shape == SMOOTH.shape and rgb.dtype == np.uint8
    tolerance = 0 if ext == ".png" else 12
    assert np.abs(rgb.astype(int) - SMOOTH.astype(int)).max() <= tolerance   # RGB order, not BGR


def test_compressed_header_sizes_are_read_without_decoding():
    for ext in (".png", ".jpg"):
        data = bytes(_compressed(SMOOTH, ext, "").data)
        assert codec._compressed_dimensions(data) == (48, 32)


def test_bad_compressed_images_raise_with_a_reason():
    cases = [
        (CompressedImage(format="compressedDepth png", data=b"\x89PNG"), "unsupported_encoding"),
        (CompressedImage(format="h264", data=b"\x00\x00\x01"), "unsupported_encoding"),
        (CompressedImage(format="jpeg", data=b""), "zero_size"),
        (CompressedImage(format="jpeg", data=b"\xff\xd8 certainly not a jpeg"), "decode_failed"),
        (CompressedImage(format="png", data=b"garbage"), "decode_failed"),
    ]
    for msg, reason in cases:
        with pytest.raises(ImageError) as info:
            codec.compressed_to_rgb(msg)
        assert info.value.reason == reason, msg.format
        assert str(info.value)
    # a PNG header claiming 100000 x 100000 pixels is refused before decoding
    header = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", 100_000, 100_000) + bytes(9)
    with pytest.raises(ImageError) as info:
        codec.compressed_to_rgb(CompressedImage(format="png", data=header))
    assert info.value.reason == "too_large"
    with pytest.raises(ImageError) as info:
        codec.compressed_to_rgb(_compressed(SMOOTH, ".jpg", "jpeg"), max_pixels=100)
    assert info.value.reason == "too_large"


# ----- building output images --------------------------------------------------------------------------------
def test_labels_overlay_and_confidence_builders():
    header = Header(frame_id="cam")
    labels = RNG.integers(0, 19, (H, W))
    msg = codec.labels_to_image(labels, header)
    assert (msg.encoding, msg.step, msg.height, msg.width, msg.header.frame_id) == ("mono8", W, H, W, "cam")
    assert isinstance(msg.data, (bytes, bytearray)) or msg.data.typecode == "B"
    np.testing.assert_array_equal(codec.image_to_array(msg), labels)

    msg = codec.rgb_to_image(RGB, header)
    assert (msg.encoding, msg.step) == ("rgb8", W * 3)
    np.testing.assert_array_equal(codec.image_to_rgb(msg), RGB)

    confidence = RNG.random((H, W)).astype(np.float32)
    msg = codec.confidence_to_image(confidence, header)
    assert (msg.encoding, msg.step, msg.is_bigendian) == ("32FC1", W * 4, int(sys.byteorder == "big"))
    np.testing.assert_array_equal(codec.image_to_array(msg), confidence)
    msg = codec.confidence_to_image(np.array([[0.0, 0.5, 1.0, 1.7]]), encoding="mono8")
    np.testing.assert_array_equal(codec.image_to_array(msg), [[0, 128, 255, 255]])


def test_builders_survive_serialization():
    from rclpy.serialization import deserialize_message, serialize_message

    msg = codec.confidence_to_image(RNG.random((H, W)).astype(np.float32))
    back = deserialize_message(serialize_message(msg), Image)
    np.testing.assert_array_equal(codec.image_to_array(back), codec.image_to_array(msg))


def test_image_to_array_respects_step_and_endianness():
    msg = make_image(GRAY16, "mono16", pad=4, bigendian=True)
    np.testing.assert_array_equal(codec.image_to_array(msg), GRAY16)
    msg = make_image(RGB, "bgr8", pad=1)
    np.testing.assert_array_equal(codec.image_to_array(msg), RGB)   # channels as stored, no reordering


def test_bad_builder_input_raises():
    with pytest.raises(ImageError, match="0..255"):
        codec.labels_to_image(np.array([[0, 256]]))
    with pytest.raises(ImageError, match="integers"):
        codec.labels_to_image(np.zeros((2, 2), np.float32))
    with pytest.raises(ImageError, match="dtype"):
        codec.array_to_image(np.zeros((2, 2, 3), np.float32), "rgb8")
    with pytest.raises(ImageError, match="shape"):
        codec.array_to_image(np.zeros((2, 2)), "rgb8")
    with pytest.raises(ImageError) as info:
        codec.array_to_image(np.zeros((0, 2, 3), np.uint8), "rgb8")
    assert info.value.reason == "zero_size"
    with pytest.raises(ImageError) as info:
        codec.array_to_image(np.zeros((2, 2), np.uint8), "yuv422")
    assert info.value.reason == "unsupported_encoding"
    with pytest.raises(ImageError):
        codec.confidence_to_image(np.zeros((2, 2)), encoding="16UC1")


# ----- CameraInfo --------------------------------------------------------------------------------------------
def _camera_info(width=640, height=480, roi=None) -> CameraInfo:
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    info.header.frame_id = "cam"
    info.d = [0.1, -0.2, 0.001, 0.002, 0.0]
    info.k = np.array([500.0, 0.0, 319.5, 0.0, 510.0, 239.5, 0.0, 0.0, 1.0])
    info.r = np.eye(3).ravel()
    info.p = np.array([500.0, 0.0, 319.5, -25.0, 0.0, 510.0, 239.5, 0.0, 0.0, 0.0, 1.0, 0.0])
    if roi:
        info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = roi
    return info


def _project(p, point):
    u, v, w = np.asarray(p).reshape(3, 4) @ np.append(point, 1.0)
    return u / w, v / w


def test_scale_camera_info_to_a_quarter_mask():
    info = _camera_info()
    small = codec.scale_camera_info(info, 160, 120)
    assert (small.width, small.height, small.header.frame_id) == (160, 120, "cam")
    k = np.asarray(small.k).reshape(3, 3)
    assert k[0, 0] == pytest.approx(125.0) and k[1, 1] == pytest.approx(127.5)
    # the image centre stays the image centre (pixel centres map to pixel centres)
    assert k[0, 2] == pytest.approx(79.5) and k[1, 2] == pytest.approx(59.5)
    assert list(small.d) == list(info.d) and small.distortion_model == "plumb_bob"
    assert np.asarray(small.p)[3] == pytest.approx(-25.0 / 4)
    # a 3D point lands at the same relative place in both images
    u, v = _project(info.p, [0.3, -0.2, 2.0])
    u4, v4 = _project(small.p, [0.3, -0.2, 2.0])
    assert (u4 + 0.5) * 4 - 0.5 == pytest.approx(u) and (v4 + 0.5) * 4 - 0.5 == pytest.approx(v)


def test_scale_camera_info_with_roi_describes_the_cropped_image():
    info = _camera_info(roi=(100, 40, 320, 240))
    out = codec.scale_camera_info(info, 320, 240)   # same size as the ROI: a pure crop
    k = np.asarray(out.k).reshape(3, 3)
    assert k[0, 0] == pytest.approx(500.0) and k[0, 2] == pytest.approx(219.5) and k[1, 2] == pytest.approx(199.5)
    assert (out.roi.width, out.binning_x) == (0, 0)


def test_scale_camera_info_rejects_missing_sizes():
    with pytest.raises(ValueError, match="zero width"):
        codec.scale_camera_info(CameraInfo(), 10, 10)
    with pytest.raises(ValueError, match="positive"):
        codec.scale_camera_info(_camera_info(), 0, 10)


def test_pinhole_camera_info():
    info = codec.pinhole_camera_info(Header(frame_id="camera"), 768, 576, horizontal_fov_deg=90.0)
    k = np.asarray(info.k).reshape(3, 3)
    assert k[0, 0] == pytest.approx(384.0) and k[0, 2] == pytest.approx(383.5) and k[1, 2] == pytest.approx(287.5)
    assert (info.width, info.height, info.header.frame_id) == (768, 576, "camera")
    with pytest.raises(ValueError):
        codec.pinhole_camera_info(Header(), 10, 10, horizontal_fov_deg=180.0)


def test_camera_model_uses_a_calibration_and_refuses_unusable_ones():
    from anytime_perception.ros.outputs import CameraModel

    warnings = []
    model = CameraModel(warn=warnings.append)
    guess = model.for_size(Header(frame_id="f"), 640, 480, 160, 120)        # nothing received yet: pinhole guess
    assert guess.header.frame_id == "f" and guess.k[0] > 0

    uncalibrated = _camera_info()
    uncalibrated.k = np.zeros(9)                                             # a driver without a calibration file
    assert not model.update(uncalibrated) and not model.update(uncalibrated)
    assert not model.update(CameraInfo())                                    # no size
    assert len(warnings) == 2 and "not calibrated" in warnings[0] and "zero width" in warnings[1]
    assert model.info is None
    assert model.intrinsics(640, 480)[0] > 0                                 # markers can still be projected

    assert model.update(_camera_info())
    quarter = model.for_size(Header(frame_id="f"), 640, 480, 160, 120)
    assert quarter.k[0] == pytest.approx(125.0) and quarter.header.frame_id == "f"
    # frames at half the calibration's size (same aspect): the calibration scales
    assert model.for_size(Header(), 320, 240, 160, 120).k[0] == pytest.approx(125.0)
    # frames of another aspect ratio: the calibration does not describe them
    wide = model.for_size(Header(), 640, 360, 160, 90)
    expected = codec.scale_camera_info(codec.pinhole_camera_info(Header(), 640, 360), 160, 90)
    assert list(wide.k) == pytest.approx(list(expected.k))
    assert len(warnings) == 3 and "640x360" in warnings[2]
    model.for_size(Header(), 640, 360, 160, 90)
    assert len(warnings) == 3                                                # once per kind

    # a new calibration replaces the cached CameraInfos; the same one again keeps them
    changed = _camera_info()
    changed.k = np.array([1000.0, 0.0, 319.5, 0.0, 1020.0, 239.5, 0.0, 0.0, 1.0])
    assert model.update(changed)
    assert model.for_size(Header(), 640, 480, 160, 120).k[0] == pytest.approx(250.0)
    cached = len(model._cache)
    assert model.update(changed) and len(model._cache) == cached
