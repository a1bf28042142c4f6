"""Augmentation transforms on tiny arrays: geometry of the pose crop, heatmap targets, the segmentation crop."""
import numpy as np
import pytest

from conftest import dependency_missing

try:
    import cv2

    from anytime_perception.data import transforms
    from anytime_perception.data.labels import MPII_FLIP_PAIRS
    from anytime_perception.models.configs import IMAGENET_MEAN, IMAGENET_STD
except ImportError as error:
    dependency_missing(error, "OpenCV (the 'train' extra)")


def unnormalize(image_chw: np.ndarray) -> np.ndarray:
    """Normalised (3, H, W) RGB -> (H, W, 3) RGB in 0..255 floats."""
    rgb = image_chw.transpose(1, 2, 0) * np.asarray(IMAGENET_STD) + np.asarray(IMAGENET_MEAN)
    return rgb * 255.0


def test_crop_affine_maps_box_to_crop_and_rotates_counter_clockwise():
    center, scale = np.array([300.0, 200.0]), 1.5  # a 300 px box
    m = transforms.crop_affine(center, scale, 0.0, (256, 256))
    np.testing.assert_allclose(transforms.apply_affine(center, m), [128, 128])
    np.testing.assert_allclose(transforms.apply_affine([150.0, 50.0], m), [0, 0], atol=1e-9)  # box corner
    m90 = transforms.crop_affine(center, scale, 90.0, (256, 256))
    # 90 degrees: the point right of the centre (clockwise from "up" by 90) lands straight above it.
    np.testing.assert_allclose(transforms.apply_affine([450.0, 200.0], m90), [128, 0], atol=1e-9)
    # Non-square crops: the width sets the zoom, the centre goes to (W/2, H/2).
    m_wide = transforms.crop_affine(center, [1.5, 2.0], 0.0, (256, 192))
    np.testing.assert_allclose(transforms.apply_affine(center, m_wide), [96, 128])
    np.testing.assert_allclose(m_wide[0, 0], 192 / 300)


def test_to_original_inverts_the_heatmap_crop():
    rng = np.random.default_rng(0)
    centers = rng.uniform(50, 500, size=(3, 2))
    scales = rng.uniform(0.5, 3.0, size=3)
    points = rng.uniform(0, 640, size=(3, 16, 2))
    heatmap_coords = np.stack([transforms.apply_affine(points[i], transforms.crop_affine(centers[i], scales[i], 0,
                                                                                       (64, 64)))
                               for i in range(3)])
    back = transforms.to_original(heatmap_coords, centers, np.stack([scales, scales], 1), (64, 64))
    np.testing.assert_allclose(back, points, atol=1e-6)
    # Per-sample scalars and a single (2,) centre for one sample are accepted too.
    np.testing.assert_allclose(transforms.to_original(heatmap_coords, centers, scales, (64, 64)), points, atol=1e-6)
    np.testing.assert_allclose(transforms.to_original(heatmap_coords[:1], centers[0], scales[0], (64, 64)),
                               points[:1], atol=1e-6)
    # Input crop and heatmap agree up to the stride: input pixel 4x = heatmap pixel x.
    m_in = transforms.crop_affine(centers[0], scales[0], 0, (256, 256))
    np.testing.assert_allclose(transforms.apply_affine(points[0], m_in) / 4, heatmap_coords[0], atol=1e-9)


def test_gaussian_targets_peak_window_and_weights():
    joints = np.array([[100.0, 60.0], [2.0, 250.0], [300.0, 100.0], [-40.0, 50.0], [50.0, 50.0]])
    visible = np.array([1, 1, 1, 1, 0])
    target, weight = transforms.gaussian_targets(joints, visible, (256, 256), (64, 64), sigma=2.0)
    assert target.shape == (5, 64, 64) and target.dtype == np.float32 and weight.shape == (5, 1)
    assert np.unravel_index(target[0].argmax(), (64, 64)) == (15, 25)  # (60/4, 100/4) rounded
    assert target[0].max() == 1.0
    assert np.count_nonzero(target[0]) == 13 * 13  # +-3 sigma window, fully inside
    np.testing.assert_allclose(target[0, 15, 26], np.exp(-1 / 8), rtol=1e-6)
    assert weight[1, 0] == 1 and np.count_nonzero(target[1]) < 13 * 13  # clipped at the border, still trained
    assert weight[2, 0] == 0 and not target[2].any()  # far right of the crop
    assert weight[3, 0] == 0 and not target[3].any()  # far left
    assert weight[4, 0] == 0 and not target[4].any()  # not visible


def test_flip_joints_mirrors_and_swaps_pairs():
    joints = np.zeros((16, 3))
    joints[:, 0] = np.arange(16)
    joints[:, 2] = 1
    flipped = transforms.flip_joints(joints, 100, MPII_FLIP_PAIRS)
    assert flipped[0, 0] == 99 - 5 and flipped[5, 0] == 99 - 0  # r_ankle <- mirrored l_ankle
    assert flipped[6, 0] == 99 - 6  # pelvis has no pair
    np.testing.assert_array_equal(transforms.flip_joints(flipped, 100, MPII_FLIP_PAIRS), joints)


def test_scale_choices_are_the_authors_factors():
    np.testing.assert_allclose(transforms.scale_choices((0.5, 2.1)), 0.5 + np.arange(17) / 10)
    np.testing.assert_allclose(transforms.scale_choices((1.0, 1.0)), [1.0])
    with pytest.raises(ValueError, match="scale_range"):
        transforms.scale_choices((2.0, 1.0))


def coordinate_image(height: int, width: int) -> np.ndarray:
    """BGR image whose red channel is x and green channel is y (so a crop tells where it came from)."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, :, 2] = np.arange(width)[None, :]
    image[:, :, 1] = np.arange(height)[:, None]
    return image


def test_seg_crop_keeps_image_and_label_aligned_and_pads():
    h, w = 40, 60
    label = np.random.default_rng(1).integers(0, 4, size=(h, w)).astype(np.uint8)
    label[:5] = 255
    flips = set()
    for seed in range(12):
        rng = np.random.default_rng(seed)
        image_out, label_out = transforms.seg_train_sample(coordinate_image(h, w), label, rng, crop_size=(48, 32),
                                                           base_size=w, scale_range=(1.0, 1.0))
        assert image_out.shape == (3, 48, 32) and image_out.dtype == np.float32
        assert label_out.shape == (48, 32) and label_out.dtype == np.int64
        # Rows 40..47 are padding: label ignore, image 0 in normalised units.
        assert (label_out[h:] == 255).all() and (image_out[:, h:] == 0).all()
        rgb = np.rint(unnormalize(image_out[:, :h])).astype(int)
        xs, ys = rgb[:, :, 0], rgb[:, :, 1]
        np.testing.assert_array_equal(label_out[:h], label[ys, xs])  # every pixel's label is its own
        step = np.diff(xs, axis=1)
        assert (step == step[0, 0]).all() and abs(step[0, 0]) == 1
        flips.add(bool(step[0, 0] < 0))
    assert flips == {False, True}


def test_seg_crop_scales_with_nearest_labels():
    label = np.zeros((30, 40), np.uint8)
    label[:, 20:] = 2
    label[:3] = 255
    image = np.full((30, 40, 3), 128, np.uint8)
    for seed in range(20):
        _, label_out = transforms.seg_train_sample(image, label, np.random.default_rng(seed), crop_size=(16, 16),
                                                   base_size=40, scale_range=(0.5, 2.1))
        assert label_out.shape == (16, 16)
        assert set(np.unique(label_out).tolist()) <= {0, 2, 255}  # nearest: no blended ids
    resized_image, resized_label = transforms.resize_long_side(image, label, 84)
    assert resized_image.shape == (63, 84, 3) and resized_label.shape == (63, 84)


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.png"):
        transforms.read_image(tmp_path / "nothing.png")
    cv2.imwrite(str(tmp_path / "rgb.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="rgb.png.*single-channel"):
        transforms.read_label(tmp_path / "rgb.png")
