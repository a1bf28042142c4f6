"""Exit heads. Every head maps an exit's input (1/4 resolution) to logits (or heatmaps) at 1/4 resolution.

Sequential indices match the authors' checkpoints:
- "original" segmentation head (EE exits and the final `last_layer`): conv1x1 C->C (bias), BN, ReLU, conv1x1 C->K
  (keys .0 .1 .3);
- redesigned "RH" head with D pool-conv steps: D x [AvgPool 2x2, conv1x1, BN, ReLU], (D-1) x [Upsample x2, conv1x1,
  BN, ReLU], then [Upsample x2, conv1x1 -> K] (convs at .1 .5 .9 ... for D = 3);
- pose: a single 1x1 conv (`final_layer` of the pose code; the paper calls it the standard pose head).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import MaskedSequential


class Upsample2x(nn.Module):
    """Bilinear x2 (align_corners=False), parameter-free, so it occupies a Sequential index like nn.Upsample."""

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def original_head(conv_cls: type[nn.Conv2d], c_in: int, c_out: int, bn_momentum: float) -> MaskedSequential:
    return MaskedSequential(
        conv_cls(c_in, c_in, 1, bias=True),
        nn.BatchNorm2d(c_in, momentum=bn_momentum),
        nn.ReLU(inplace=False),
        conv_cls(c_in, c_out, 1, bias=True),
    )


def redesigned_head(conv_cls: type[nn.Conv2d], c_in: int, c_out: int, inter: int, depth: int,
                    bn_momentum: float) -> MaskedSequential:
    """Encoder-decoder exit (paper Sec. 3.3): `depth` pool-conv steps down, `depth` interpolate-conv steps up."""
    layers: list[nn.Module] = []
    for d in range(depth):
        layers += [nn.AvgPool2d(2, 2), conv_cls(c_in if d == 0 else inter, inter, 1, bias=True),
                   nn.BatchNorm2d(inter, momentum=bn_momentum), nn.ReLU(inplace=False)]
    for _ in range(depth - 1):
        layers += [Upsample2x(), conv_cls(inter, inter, 1, bias=True), nn.BatchNorm2d(inter, momentum=bn_momentum),
                   nn.ReLU(inplace=False)]
    layers += [Upsample2x(), conv_cls(inter, c_out, 1, bias=True)]
    return MaskedSequential(*layers)


def pose_head(conv_cls: type[nn.Conv2d], c_in: int, c_out: int) -> MaskedSequential:
    return MaskedSequential(conv_cls(c_in, c_out, 1, bias=True))
