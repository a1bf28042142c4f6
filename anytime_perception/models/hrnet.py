"""HRNet backbone parts: stem, stage-1 layer, transitions and multi-resolution modules.

Built from a `BackboneSpec` (configs.py). Module names and nesting follow the official checkpoints (conv1, bn1,
layer1, transition{1,2,3}, stage{2,3,4}.M.branches / fuse_layers) so official weights load by name. Every conv is
created from `conv_cls`, which is `MaskedConv2d` for the parts that run under a compute mask.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import BLOCKS, MaskedSequential, conv_bn, make_branch
from .configs import BackboneSpec, StageSpec
from .masked_conv import MaskAware, call


def resize(x: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


class HighResolutionModule(nn.Module, MaskAware):
    """Parallel branches, then every output branch sums all inputs resized to its resolution, then ReLU."""

    def __init__(self, conv_cls: type[nn.Conv2d], stage: StageSpec, in_channels: list[int], multi_scale_output: bool,
                 upsample_mode: str, bn_momentum: float):
        super().__init__()
        expansion = BLOCKS[stage.block].expansion
        self.upsample_mode = upsample_mode
        self.num_branches = stage.num_branches
        self.branches = nn.ModuleList(
            make_branch(conv_cls, stage.block, in_channels[i], stage.num_channels[i], stage.num_blocks[i], bn_momentum)
            for i in range(self.num_branches)
        )
        channels = [c * expansion for c in stage.num_channels]
        self.out_channels = channels if multi_scale_output else channels[:1]
        fuse_layers = []
        for i in range(len(self.out_channels) if self.num_branches > 1 else 0):
            row: list[nn.Module | None] = []
            for j in range(self.num_branches):
                if j > i:  # lower resolution: 1x1 conv to C_i here, upsampled in forward
                    row.append(conv_bn(conv_cls, channels[j], channels[i], 1, 1, bn_momentum, relu=False))
                elif j == i:
                    row.append(None)
                else:  # higher resolution: (i - j) stride-2 3x3 convs, ReLU between them
                    steps = [
                        conv_bn(conv_cls, channels[j], channels[i] if k == i - j - 1 else channels[j], 3, 2,
                                bn_momentum, relu=k != i - j - 1)
                        for k in range(i - j)
                    ]
                    row.append(MaskedSequential(*steps))
            fuse_layers.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(fuse_layers)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, xs: list[Tensor], mask=None) -> list[Tensor]:
        xs = [branch(x, mask) for branch, x in zip(self.branches, xs)]
        if self.num_branches == 1:
            return xs
        fused = []
        for i, row in enumerate(self.fuse_layers):
            target = tuple(xs[i].shape[-2:])
            # Summation order as in the official code (branch 0 first), so floats round the same way.
            y = xs[0] if i == 0 else row[0](xs[0], mask)
            for j in range(1, self.num_branches):
                if j == i:
                    y = y + xs[j]
                elif j > i:
                    y = y + resize(row[j](xs[j], mask), target, self.upsample_mode)
                else:
                    y = y + row[j](xs[j], mask)
            fused.append(self.relu(y))
        return fused


def make_stage(conv_cls: type[nn.Conv2d], stage: StageSpec, in_channels: list[int], spec: BackboneSpec,
               is_last_stage: bool) -> nn.ModuleList:
    modules = []
    for m in range(stage.num_modules):
        single_output = is_last_stage and spec.last_module_single_output and m == stage.num_modules - 1
        module = HighResolutionModule(conv_cls, stage, in_channels, not single_output, spec.fuse_upsample,
                                      spec.bn_momentum)
        in_channels = module.out_channels
        modules.append(module)
    return nn.ModuleList(modules)


class Transition(nn.ModuleList, MaskAware):
    """Branch i keeps its input (None), changes channels (conv3x3+BN+ReLU), or is new: a stride-2 conv chain from
    the previous stage's last branch."""

    def __init__(self, conv_cls: type[nn.Conv2d], pre_channels: list[int], cur_channels: list[int],
                 bn_momentum: float):
        layers: list[nn.Module | None] = []
        for i, c_out in enumerate(cur_channels):
            if i < len(pre_channels):
                if c_out != pre_channels[i]:
                    layers.append(conv_bn(conv_cls, pre_channels[i], c_out, 3, 1, bn_momentum, relu=True))
                else:
                    layers.append(None)
            else:
                chain = []
                for k in range(i + 1 - len(pre_channels)):
                    c_in = pre_channels[-1]
                    c = c_out if k == i - len(pre_channels) else c_in
                    chain.append(conv_bn(conv_cls, c_in, c, 3, 2, bn_momentum, relu=True))
                layers.append(MaskedSequential(*chain))
        super().__init__(layers)
        self.num_pre = len(pre_channels)

    def forward(self, xs: list[Tensor], mask=None) -> list[Tensor]:
        out = []
        for i, layer in enumerate(self):
            if layer is None:
                out.append(xs[i])
            else:
                out.append(layer(xs[i] if i < self.num_pre else xs[-1], mask))
        return out


def make_stem(bn_momentum: float, channels: int = 64) -> dict[str, nn.Module]:
    """Two stride-2 3x3 convs to 1/4 resolution; returned by name because they sit at the model's top level."""
    return {
        "conv1": nn.Conv2d(3, channels, 3, stride=2, padding=1, bias=False),
        "bn1": nn.BatchNorm2d(channels, momentum=bn_momentum),
        "conv2": nn.Conv2d(channels, channels, 3, stride=2, padding=1, bias=False),
        "bn2": nn.BatchNorm2d(channels, momentum=bn_momentum),
    }


def concat_at_quarter(features: Tensor | list[Tensor]) -> Tensor:
    """Exit input: every branch upsampled bilinearly to branch 0 (1/4 resolution) and concatenated."""
    if isinstance(features, Tensor):
        return features
    size = tuple(features[0].shape[-2:])
    return torch.cat([features[0]] + [resize(f, size, "bilinear") for f in features[1:]], dim=1)


def init_weights(module: nn.Module) -> None:
    """The official initialisation: convs N(0, 0.001), BN weight 1 and bias 0, conv biases 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.001)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
