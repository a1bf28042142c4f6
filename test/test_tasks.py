import numpy as np
import pytest
import torch

from anytime_perception.data.labels import CITYSCAPES, MPII_FLIP_PAIRS, MPII_JOINTS, MPII_SKELETON, class_names, palette
from anytime_perception.tasks.pose import decode_heatmaps
from anytime_perception.tasks.segmentation import blend, colorize, labels_at, nearest_resize, to_uint8_confidence


def test_label_sets():
    assert len(CITYSCAPES) == 19 and CITYSCAPES[0].name == "road" and CITYSCAPES[11].color == (220, 20, 60)
    assert len(MPII_JOINTS) == 16 and all(0 <= a < 16 and 0 <= b < 16 for a, b in MPII_SKELETON + MPII_FLIP_PAIRS)
    assert len(set(palette(40))) == 40 and class_names(21)[-1] == "class_20"


def test_heatmap_decoding_quarter_pixel_shift_and_scale():
    h = torch.zeros(1, 2, 8, 8)
    h[0, 0, 2, 3], h[0, 0, 2, 4] = 1.0, 0.5  # right neighbour larger: +0.25 px in x
    h[0, 1, 7, 0] = 2.0  # on the border: no shift
    coords, scores = decode_heatmaps(h, (32, 32))
    assert coords[0, 0].tolist() == pytest.approx([(3.25 + 0.5) * 4 - 0.5, 2.5 * 4 - 0.5])
    assert coords[0, 1].tolist() == pytest.approx([0.5 * 4 - 0.5, 7.5 * 4 - 0.5])
    assert scores.tolist() == [[1.0, 2.0]]


def test_segmentation_helpers():
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 2, 0, 1] = 5
    assert labels_at(logits)[0].tolist() == [[0, 2], [0, 0]]
    assert labels_at(logits, (4, 4)).shape == (1, 4, 4)
    colors = np.array(palette(3), dtype=np.uint8)
    rgb = colorize(np.array([[0, 2]]), colors)
    assert rgb.shape == (1, 2, 3) and tuple(rgb[0, 1]) == CITYSCAPES[2].color
    img = np.full((1, 2, 3), 200, np.uint8)
    assert np.abs(blend(img, rgb, 0.5).astype(int) - (img.astype(int) + rgb) // 2).max() <= 1
    assert to_uint8_confidence(torch.tensor([0.0, 0.5, 1.0])).tolist() == [0, 128, 255]
    labels = np.arange(6).reshape(2, 3)
    assert nearest_resize(labels, (4, 6)).tolist() == [[0, 0, 1, 1, 2, 2]] * 2 + [[3, 3, 4, 4, 5, 5]] * 2
