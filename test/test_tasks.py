import pytest
import torch

from anytime_perception.data.labels import CITYSCAPES, MPII_FLIP_PAIRS, MPII_JOINTS, MPII_SKELETON, class_names, palette
from anytime_perception.tasks.pose import decode_heatmaps
from anytime_perception.tasks.segmentation import upsample_logits


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


def test_logits_upsampled_bilinearly_as_the_authors_evaluate():
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 1, 0, 1] = 4.0
    up = upsample_logits(logits, (4, 4))
    assert up.shape == (1, 2, 4, 4) and upsample_logits(logits, (2, 2)) is logits
    # align_corners=False: the corner output sample sits on the source pixel, the one next to it a quarter away
    assert up[0, 1, 0, 3].item() == pytest.approx(4.0) and up[0, 1, 0, 2].item() == pytest.approx(3.0)
    assert up[0, 1, 1, 3].item() == pytest.approx(3.0) and up[0, 0].abs().max().item() == 0.0
