"""Residual blocks and the mask-threading container, with the official module names (conv1, bn1, downsample...).

Every forward here is written once, as a chain of `ConvUnit`s (masked_conv.py) that the mask's execution runs:
the emulation runs each unit's modules one after the other, the sparse backend fuses each unit.
"""
from __future__ import annotations

from torch import Tensor, nn

from .masked_conv import ConvUnit, MaskAware, call, conv_units


class MaskedSequential(nn.Sequential, MaskAware):
    """nn.Sequential that hands the compute mask to the children that take one (masked convs, blocks)."""

    def forward(self, x: Tensor, mask=None) -> Tensor:  # noqa: D102
        for unit in conv_units(self):
            x = unit.run(x, mask) if isinstance(unit, ConvUnit) else call(unit, x, mask)
        return x


def conv_bn(conv_cls: type[nn.Conv2d], c_in: int, c_out: int, kernel: int, stride: int, bn_momentum: float,
            relu: bool) -> MaskedSequential:
    """conv (no bias) + BN (+ ReLU): the unit of transitions and fuse layers (keys `.0` conv, `.1` BN)."""
    layers: list[nn.Module] = [
        conv_cls(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out, momentum=bn_momentum),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=False))
    return MaskedSequential(*layers)


class BasicBlock(nn.Module, MaskAware):
    expansion = 1

    def __init__(self, conv_cls: type[nn.Conv2d], inplanes: int, planes: int, bn_momentum: float, stride: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv_cls(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=bn_momentum)
        self.conv2 = conv_cls(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=bn_momentum)
        self.relu = nn.ReLU(inplace=False)
        self.downsample = downsample

    def units(self) -> tuple[ConvUnit, ...]:
        """The block as conv units; the residual joins the last one."""
        return ConvUnit(self.conv1, self.bn1, True), ConvUnit(self.conv2, self.bn2, True)

    def forward(self, x: Tensor, mask=None) -> Tensor:
        return _residual_forward(self, x, mask)


class Bottleneck(nn.Module, MaskAware):
    expansion = 4

    def __init__(self, conv_cls: type[nn.Conv2d], inplanes: int, planes: int, bn_momentum: float, stride: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv_cls(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=bn_momentum)
        self.conv2 = conv_cls(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=bn_momentum)
        self.conv3 = conv_cls(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion, momentum=bn_momentum)
        self.relu = nn.ReLU(inplace=False)
        self.downsample = downsample

    def units(self) -> tuple[ConvUnit, ...]:
        """The block as conv units; the residual joins the last one."""
        return (ConvUnit(self.conv1, self.bn1, True), ConvUnit(self.conv2, self.bn2, True),
                ConvUnit(self.conv3, self.bn3, True))

    def forward(self, x: Tensor, mask=None) -> Tensor:
        return _residual_forward(self, x, mask)


def _residual_forward(block: BasicBlock | Bottleneck, x: Tensor, mask) -> Tensor:
    """relu(units(x) + shortcut(x)): the one forward of both residual blocks (shortcut first, as the official
    code computes it)."""
    residual = x if block.downsample is None else block.downsample(x, mask)
    *body, last = block.units()
    for unit in body:
        x = unit.run(x, mask)
    return last.run(x, mask, residual)


BLOCKS: dict[str, type[nn.Module]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


def make_branch(conv_cls: type[nn.Conv2d], block: str, inplanes: int, planes: int, num_blocks: int,
                bn_momentum: float, stride: int = 1) -> MaskedSequential:
    """A chain of blocks; the first one gets a 1x1 conv + BN shortcut when its shape changes (`downsample.{0,1}`)."""
    block_cls = BLOCKS[block]
    downsample = None
    if stride != 1 or inplanes != planes * block_cls.expansion:
        downsample = conv_bn(conv_cls, inplanes, planes * block_cls.expansion, 1, stride, bn_momentum, relu=False)
    layers = [block_cls(conv_cls, inplanes, planes, bn_momentum, stride, downsample)]
    inplanes = planes * block_cls.expansion
    layers += [block_cls(conv_cls, inplanes, planes, bn_momentum) for _ in range(1, num_blocks)]
    return MaskedSequential(*layers)
