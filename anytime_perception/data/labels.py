"""Label sets the shipped task heads use: Cityscapes' 19 training classes and MPII's 16 joints."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LabelClass:
    id: int
    name: str
    color: tuple[int, int, int]  # RGB


# Cityscapes trainIds 0..18 with the dataset's official colours (cityscapesscripts labels.py).
CITYSCAPES = tuple(LabelClass(i, n, c) for i, (n, c) in enumerate([
    ("road", (128, 64, 128)), ("sidewalk", (244, 35, 232)), ("building", (70, 70, 70)), ("wall", (102, 102, 156)),
    ("fence", (190, 153, 153)), ("pole", (153, 153, 153)), ("traffic light", (250, 170, 30)),
    ("traffic sign", (220, 220, 0)), ("vegetation", (107, 142, 35)), ("terrain", (152, 251, 152)),
    ("sky", (70, 130, 180)), ("person", (220, 20, 60)), ("rider", (255, 0, 0)), ("car", (0, 0, 142)),
    ("truck", (0, 0, 70)), ("bus", (0, 60, 100)), ("train", (0, 80, 100)), ("motorcycle", (0, 0, 230)),
    ("bicycle", (119, 11, 32)),
]))

# MPII joint order of the pose heatmaps.
MPII_JOINTS = ("r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax", "upper_neck",
               "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist")
MPII_SKELETON = ((0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9), (10, 11), (11, 12),
                 (12, 7), (7, 13), (13, 14), (14, 15))
MPII_FLIP_PAIRS = ((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13))


def palette(num_classes: int) -> list[tuple[int, int, int]]:
    """Colours for class ids 0..num_classes-1: Cityscapes' where they exist, then a fixed spread of hues."""
    colors = [c.color for c in CITYSCAPES[:num_classes]]
    golden = 0.618033988749895
    for i in range(len(colors), num_classes):
        h = (i * golden) % 1.0
        r, g, b = (int(255 * max(0.0, min(1.0, abs((h * 6 + k) % 6 - 3) - 1))) for k in (0, 4, 2))
        colors.append((r, g, b))
    return colors


def class_names(num_classes: int) -> list[str]:
    return [c.name for c in CITYSCAPES[:num_classes]] + [f"class_{i}" for i in range(len(CITYSCAPES), num_classes)]
