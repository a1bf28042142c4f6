"""Image and label transforms for training and evaluation samples (OpenCV and NumPy, no global RNG).

Every random choice is drawn from a `numpy.random.Generator` the caller passes in, so a sample's augmentation is a
function of that generator's seed alone (the datasets seed it from (seed, epoch, index)).

Conventions: images are read as OpenCV BGR uint8 and leave here as RGB float32 (3, H, W) normalised with ImageNet
mean/std; sizes are (height, width); coordinates are (x, y) pixels, 0-based, pixel centres at integers.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..models.configs import IMAGENET_MEAN, IMAGENET_STD
from .preprocess import normalise, resize_to

# HRNet-pose convention: a person box's `scale` is its side in units of this many pixels.
PIXELS_PER_SCALE_UNIT = 200.0

# `pixel * scale - offset` per RGB channel is (pixel / 255 - mean) / std.
_SCALE_RGB = 1.0 / (255.0 * np.asarray(IMAGENET_STD, dtype=np.float32))
_OFFSET_RGB = np.asarray(IMAGENET_MEAN, dtype=np.float32) / np.asarray(IMAGENET_STD, dtype=np.float32)


# ----- reading ------------------------------------------------------------------------------------------------------
def read_image(path: Path, *, ignore_orientation: bool = False) -> np.ndarray:
    """An image file as BGR uint8 (H, W, 3). `ignore_orientation` keeps the stored pixel order even if the file has
    an EXIF rotation (annotations made in stored pixels, like MPII's, need that)."""
    flags = cv2.IMREAD_COLOR | (cv2.IMREAD_IGNORE_ORIENTATION if ignore_orientation else 0)
    image = cv2.imread(str(path), flags)
    if image is None:
        raise FileNotFoundError(f"cannot read image {path} (missing or not an image OpenCV can decode)")
    return image


def read_label(path: Path) -> np.ndarray:
    """A single-channel 8-bit label PNG as uint8 (H, W)."""
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label is None:
        raise FileNotFoundError(f"cannot read label image {path} (missing or not an image OpenCV can decode)")
    if label.ndim != 2 or label.dtype != np.uint8:
        raise ValueError(f"label image {path} must be single-channel 8-bit (class ids), got shape {label.shape} "
                         f"dtype {label.dtype}")
    return label


def read_image_and_label(image_path: Path, label_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An image (BGR uint8) and its label map (uint8), refused unless they have the same size."""
    image, label = read_image(image_path), read_label(label_path)
    if label.shape != image.shape[:2]:
        raise ValueError(f"label {label_path} is {label.shape[1]}x{label.shape[0]} but image {image_path} is "
                         f"{image.shape[1]}x{image.shape[0]}")
    return image, label


def normalize(image_bgr: np.ndarray) -> np.ndarray:
    """BGR uint8 (H, W, 3) -> RGB float32 (3, H, W), /255 then ImageNet mean/std, as the authors' input transform
    (the node's normalisation, preprocess.normalise)."""
    return normalise(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB), _SCALE_RGB, _OFFSET_RGB)


# ----- segmentation -------------------------------------------------------------------------------------------------
def scale_choices(scale_range: tuple[float, float], step: float = 0.1) -> np.ndarray:
    """The random-scale factors: scale_range[0], +step, ... up to scale_range[1] inclusive (the authors' 0.5 +
    randint(0, 16) / 10 is scale_range (0.5, 2.1))."""
    low, high = float(scale_range[0]), float(scale_range[1])
    if not 0 < low <= high:
        raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {scale_range}")
    count = int(np.floor((high - low) / step + 1e-6)) + 1
    return np.round(low + step * np.arange(count), 6)


def resize_long_side(image: np.ndarray, label: np.ndarray | None, long_side: int):
    """Resize so the longer side is `long_side` (aspect kept, sides rounded): image bilinear, label nearest."""
    h, w = image.shape[:2]
    if h > w:
        new_h, new_w = long_side, int(w * long_side / h + 0.5)
    else:
        new_h, new_w = int(h * long_side / w + 0.5), long_side
    new_h, new_w = max(new_h, 1), max(new_w, 1)
    image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    if label is not None:
        label = cv2.resize(label, (new_w, new_h), interpolation=cv2.INTER_NEAREST)
    return image, label


def seg_train_sample(image_bgr: np.ndarray, label: np.ndarray, rng: np.random.Generator, *,
                     crop_size: tuple[int, int], base_size: int, scale_range: tuple[float, float],
                     ignore_index: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """The authors' segmentation augmentation: random scale (long side = base_size * a factor from
    `scale_choices(scale_range)`), pad to the crop (image 0 after normalisation, label ignore_index), random crop,
    random horizontal flip. Returns the normalised (3, h, w) float32 image and the (h, w) int64 label of crop_size.

    Only the cropped window is normalised, which is why the padding is 0 in normalised units (the mean colour)."""
    crop_h, crop_w = crop_size
    factors = scale_choices(scale_range)
    factor = factors[rng.integers(0, len(factors))]
    image_bgr, label = resize_long_side(image_bgr, label, int(base_size * factor + 0.5))

    h, w = label.shape
    # Offsets into the image padded at the bottom/right to at least the crop size.
    top = int(rng.integers(0, max(h - crop_h, 0) + 1))
    left = int(rng.integers(0, max(w - crop_w, 0) + 1))
    inside_h, inside_w = min(crop_h, h - top), min(crop_w, w - left)
    image_out = np.zeros((3, crop_h, crop_w), dtype=np.float32)
    label_out = np.full((crop_h, crop_w), ignore_index, dtype=np.int64)
    image_out[:, :inside_h, :inside_w] = normalize(image_bgr[top:top + inside_h, left:left + inside_w])
    label_out[:inside_h, :inside_w] = label[top:top + inside_h, left:left + inside_w]

    if rng.random() < 0.5:
        image_out = np.ascontiguousarray(image_out[:, :, ::-1])
        label_out = np.ascontiguousarray(label_out[:, ::-1])
    return image_out, label_out


def seg_eval_image(image_bgr: np.ndarray, input_size: tuple[int, int] | None) -> np.ndarray:
    """The un-augmented evaluation input: the whole image, or resized to `input_size` (H, W) as the node resizes
    camera frames (preprocess.resize_to), so evaluation scores what the node would see."""
    if input_size is not None:
        image_bgr = resize_to(image_bgr, (int(input_size[0]), int(input_size[1])))
    return normalize(image_bgr)


# ----- pose ---------------------------------------------------------------------------------------------------------
def _as_pair(value) -> np.ndarray:
    pair = np.broadcast_to(np.asarray(value, dtype=np.float64), (2,))
    return pair.astype(np.float64)


def crop_affine(center, scale, rotation_deg: float, output_size: tuple[int, int]) -> np.ndarray:
    """The 2x3 matrix taking image pixels to crop pixels for a person box (HRNet-pose convention).

    The box is centred at `center` (x, y) and `scale[0] * 200` pixels wide (`scale` a number or (sx, sy); only the
    width sets the zoom, so the output's aspect follows `output_size`). Its centre maps to (W / 2, H / 2) of the
    `output_size` (H, W) crop, and the content turns by `rotation_deg` (positive: counter-clockwise as displayed,
    y down; the image point `rotation_deg` clockwise from straight above the centre lands straight above it)."""
    center = _as_pair(center)
    zoom = float(output_size[1]) / (_as_pair(scale)[0] * PIXELS_PER_SCALE_UNIT)
    theta = np.deg2rad(float(rotation_deg))
    cos, sin = np.cos(theta), np.sin(theta)
    linear = zoom * np.array([[cos, sin], [-sin, cos]])
    out_center = np.array([output_size[1] * 0.5, output_size[0] * 0.5])
    return np.concatenate([linear, (out_center - linear @ center)[:, None]], axis=1)


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(..., 2) points through a 2x3 affine matrix."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def to_original(coords, center, scale, heatmap_size: tuple[int, int]) -> np.ndarray:
    """(N, J, 2) (x, y) heatmap pixels -> (N, J, 2) original image pixels, for crops made by `crop_affine` with
    rotation 0 at any input size that is a multiple of `heatmap_size` (H, W). `center` (N, 2) or (2,); `scale` (N, 2),
    (N,), (2,) or a number. Evaluation predictions are mapped back with this (the authors' transform_preds)."""
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 3 or coords.shape[-1] != 2:
        raise ValueError(f"coords must be (N, J, 2), got shape {coords.shape}")
    n = coords.shape[0]
    centers = np.broadcast_to(np.asarray(center, dtype=np.float64).reshape(-1, 2), (n, 2))
    scales = np.asarray(scale, dtype=np.float64)
    if scales.ndim == 2 or (scales.ndim == 1 and scales.size == 2 and n == 1):
        scales = np.broadcast_to(scales.reshape(-1, 2), (n, 2))
    else:  # one number per sample, or one for all
        scales = np.repeat(np.broadcast_to(scales.reshape(-1), (n,))[:, None], 2, axis=1)
    out = np.empty_like(coords)
    for i in range(n):
        inverse = cv2.invertAffineTransform(crop_affine(centers[i], scales[i], 0.0, heatmap_size))
        out[i] = apply_affine(coords[i], inverse)
    return out


def flip_joints(joints: np.ndarray, width: int, flip_pairs) -> np.ndarray:
    """Joints (J, 3) of an image mirrored left-right: x -> width - 1 - x, left/right joints swapped."""
    flipped = joints.copy()
    flipped[:, 0] = width - 1 - flipped[:, 0]
    for a, b in flip_pairs:
        flipped[[a, b]] = flipped[[b, a]]
    return flipped


def gaussian_targets(joints_xy: np.ndarray, visible: np.ndarray, image_size: tuple[int, int],
                     heatmap_size: tuple[int, int], sigma: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """The authors' heatmap targets: per joint a Gaussian (peak 1, not normalised) centred on the joint's crop
    position divided by the stride and rounded, drawn in a +-3 sigma window; the weight is the visibility, and 0 for
    a joint whose whole window misses the heatmap. Returns (J, h, w) float32 and (J, 1) float32."""
    num_joints = len(joints_xy)
    hm_h, hm_w = heatmap_size
    stride_x, stride_y = image_size[1] / hm_w, image_size[0] / hm_h
    radius = int(sigma * 3)
    offsets = np.arange(-radius, radius + 1, dtype=np.float32)
    window = np.exp(-(offsets[None, :] ** 2 + offsets[:, None] ** 2) / (2 * sigma ** 2))

    targets = np.zeros((num_joints, hm_h, hm_w), dtype=np.float32)
    weights = (np.asarray(visible, dtype=np.float32) > 0).astype(np.float32).reshape(num_joints, 1)
    for j in range(num_joints):
        if weights[j, 0] == 0:
            continue
        mu_x = int(joints_xy[j, 0] / stride_x + 0.5)
        mu_y = int(joints_xy[j, 1] / stride_y + 0.5)
        x0, y0, x1, y1 = mu_x - radius, mu_y - radius, mu_x + radius + 1, mu_y + radius + 1
        if x0 >= hm_w or y0 >= hm_h or x1 <= 0 or y1 <= 0:
            weights[j, 0] = 0
            continue
        tx0, ty0, tx1, ty1 = max(x0, 0), max(y0, 0), min(x1, hm_w), min(y1, hm_h)
        targets[j, ty0:ty1, tx0:tx1] = window[ty0 - y0:ty1 - y0, tx0 - x0:tx1 - x0]
    return targets, weights


def pose_sample(image_bgr: np.ndarray, joints: np.ndarray, center, scale, rng: np.random.Generator | None, *,
                image_size: tuple[int, int], heatmap_size: tuple[int, int], flip_pairs, sigma: float = 2.0,
                scale_factor: float = 0.25, rotation_factor: float = 30.0, rotation_prob: float = 0.6,
                flip_prob: float = 0.5) -> dict:
    """One person's input crop and heatmap targets.

    With `rng` (training), the authors' augmentation: scale * clip(N(0,1) * scale_factor + 1, 1 -+ scale_factor),
    rotation clip(N(0,1) * rotation_factor, +-2 rotation_factor) degrees with probability rotation_prob, and a
    horizontal flip with probability flip_prob (x mirrored, flip_pairs swapped). Without `rng`, the plain crop.
    `joints` (J, 3) are x, y, visible in image pixels. Returns image (3, H, W), target (J, h, w), target_weight (J, 1)
    and the center, scale, rotation and flip the crop used (center in the flipped image's frame when flipped)."""
    center, scale = _as_pair(center), _as_pair(scale)
    rotation, flip = 0.0, False
    if rng is not None:
        scale = scale * float(np.clip(rng.standard_normal() * scale_factor + 1, 1 - scale_factor, 1 + scale_factor))
        turn = float(np.clip(rng.standard_normal() * rotation_factor, -2 * rotation_factor, 2 * rotation_factor))
        rotation = turn if rng.random() < rotation_prob else 0.0
        flip = bool(rng.random() < flip_prob)

    joints = np.asarray(joints, dtype=np.float64)
    if flip:
        width = image_bgr.shape[1]
        joints = flip_joints(joints, width, flip_pairs)
        center = np.array([width - 1 - center[0], center[1]])
    matrix = crop_affine(center, scale, rotation, image_size)
    warp = matrix
    if flip:  # the mirroring folded into the warp: one resampling pass, no flipped copy of the image
        warp = matrix @ np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    crop = cv2.warpAffine(image_bgr, warp, (int(image_size[1]), int(image_size[0])), flags=cv2.INTER_LINEAR)
    crop_xy = apply_affine(joints[:, :2], matrix)
    target, target_weight = gaussian_targets(crop_xy, joints[:, 2], image_size, heatmap_size, sigma)
    return {"image": normalize(crop), "target": target, "target_weight": target_weight, "center": center,
            "scale": scale, "rotation": rotation, "flip": flip}
