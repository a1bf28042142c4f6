"""The confidence-adaptive convolution, the conv units blocks are made of, and the reference execution.

`MaskedConv2d` is an `nn.Conv2d` that also owns the per-layer RBF interpolation parameter `Lambda` (trainable,
init 3.0) and the constant 7x7 grid of squared distances `square_dis` (names as in the authors' checkpoints). It
holds no mask: the mask of the current exit arrives as an argument (`ComputeMask`), and the mask carries the
*execution* (the backend) that computes masked convolutions. Blocks describe their forward as a chain of `ConvUnit`s
(conv -> BN -> (+ residual) -> ReLU); an execution runs whole units, so a backend can fuse a unit without knowing
which block it belongs to. `EmulatedExecution` is the authors' semantics (dense conv, mask, RBF fill); the table of
executions by name is `execution.py`.
"""
from __future__ import annotations

from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

RBF_SIZE = 7
# The authors place a huge distance at the kernel centre so that its weight is exp(-huge) = 0: a masked position is
# interpolated from its neighbours only.
CENTRE_SQUARE_DISTANCE = 1e5
# Added to the kernel sum before normalising. With Lambda near 4 the neighbour weights are ~1e-7, so this term
# dominates and shrinks the fill ~20x; authors' checkpoints were trained with it, so it stays.
RBF_NORMALISER_EPS = 1e-5


def square_distance_grid(size: int = RBF_SIZE) -> Tensor:
    """Squared distances of a size x size grid from its centre, the centre itself set to a huge distance."""
    r = torch.arange(size, dtype=torch.float32) - size // 2
    grid = r[:, None] ** 2 + r[None, :] ** 2
    grid[size // 2, size // 2] = CENTRE_SQUARE_DISTANCE
    return grid


class MaskAware:
    """Marker for modules whose forward takes `(x, mask)`; containers pass the mask only to these."""


def call(layer: nn.Module, x, mask):
    """Run `layer`, handing it the compute mask if it takes one."""
    return layer(x, mask) if isinstance(layer, MaskAware) else layer(x)


class MaskedConv2d(nn.Conv2d, MaskAware):
    def __init__(self, *args, lambda_init: float = 3.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.Lambda = nn.Parameter(torch.tensor(float(lambda_init)))
        self.register_buffer("square_dis", square_distance_grid())

    def rbf_kernel(self) -> Tensor:
        """Depthwise (C_out, 1, 7, 7) RBF kernel exp(-Lambda^2 d^2), normalised by the full kernel's sum."""
        weights = torch.exp(-(self.Lambda**2) * self.square_dis)
        weights = weights / (weights.sum() + RBF_NORMALISER_EPS)
        return weights.expand(self.out_channels, 1, RBF_SIZE, RBF_SIZE)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Output (H, W) of this conv for an input of `height` x `width`."""
        def one(n: int, i: int) -> int:
            return (n + 2 * self.padding[i] - self.dilation[i] * (self.kernel_size[i] - 1) - 1) // self.stride[i] + 1

        return one(height, 0), one(width, 1)

    def forward(self, x: Tensor, mask: "ComputeMaskLike | None" = None) -> Tensor:
        if mask is None:
            return super().forward(x)
        return mask.execution.masked_conv(self, x, mask)


class ConvUnit(NamedTuple):
    """relu(bn(conv(x)) + residual): the piece of a block an execution may run as one fused operation.

    `bn` is None (or an `nn.Identity` left by BN folding) when the conv has none; the residual, if any, is given
    when the unit runs. A NamedTuple because blocks describe their units on every forward (cheap to make).
    """

    conv: nn.Conv2d
    bn: nn.Module | None
    relu: bool

    def run(self, x: Tensor, mask: "ComputeMaskLike | None", residual: Tensor | None = None) -> Tensor:
        """The unit under `mask`'s execution; without a mask, the modules' own forwards."""
        if mask is None:
            return self.reference(x, None, residual)
        return mask.execution.conv_unit(self, x, mask, residual)

    def reference(self, x: Tensor, mask: "ComputeMaskLike | None", residual: Tensor | None = None) -> Tensor:
        """The unit as its modules compute it, one after the other (the convolution under `mask`)."""
        out = call(self.conv, x, mask)
        if self.bn is not None:
            out = self.bn(out)
        if residual is not None:
            out = out + residual
        return F.relu(out) if self.relu else out


def conv_units(layers: nn.Sequential) -> list[ConvUnit | nn.Module]:
    """A sequential's layers with every conv grouped with the BN and ReLU right after it into a `ConvUnit`."""
    layers = list(layers)
    out: list[ConvUnit | nn.Module] = []
    i = 0
    while i < len(layers):
        layer = layers[i]
        if not isinstance(layer, nn.Conv2d):
            out.append(layer)
            i += 1
            continue
        bn = layers[i + 1] if i + 1 < len(layers) and isinstance(layers[i + 1], nn.BatchNorm2d) else None
        j = i + 1 + (bn is not None)
        relu = j < len(layers) and type(layers[j]) is nn.ReLU
        out.append(ConvUnit(layer, bn, relu))
        i = j + relu
    return out


class ComputeMaskLike(Protocol):
    execution: "ConvExecution"

    def at(self, height: int, width: int) -> Tensor: ...


class ConvExecution(Protocol):
    """How masked convolutions are executed. Must return the conv output at computed positions and the RBF fill
    elsewhere, i.e. equal `EmulatedExecution` up to float rounding; `conv_unit` must equal `ConvUnit.reference`."""

    name: str

    def masked_conv(self, conv: MaskedConv2d, x: Tensor, mask: ComputeMaskLike) -> Tensor: ...

    def conv_unit(self, unit: ConvUnit, x: Tensor, mask: ComputeMaskLike, residual: Tensor | None) -> Tensor: ...

    def describe(self, device: torch.device | str = "cpu") -> str: ...


def rbf_fill(conv: MaskedConv2d, kept: Tensor) -> Tensor:
    """Interpolate every position from its 7x7 neighbourhood of `kept` (the masked conv output, zeros where
    skipped), weights normalised by the full kernel (not by the valid neighbours)."""
    return F.conv2d(kept, conv.rbf_kernel(), padding=RBF_SIZE // 2, groups=conv.out_channels)


class EmulatedExecution:
    """Dense conv everywhere, then keep computed positions and RBF-fill the rest: the authors' semantics, no savings."""

    name = "emulate"

    def masked_conv(self, conv: MaskedConv2d, x: Tensor, mask: ComputeMaskLike) -> Tensor:
        y = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        m = mask.at(y.shape[-2], y.shape[-1]).to(y.dtype)
        kept = y * m
        return kept + rbf_fill(conv, kept) * (1 - m)

    def conv_unit(self, unit: ConvUnit, x: Tensor, mask: ComputeMaskLike, residual: Tensor | None) -> Tensor:
        return unit.reference(x, mask, residual)

    def describe(self, device: torch.device | str = "cpu") -> str:
        return "emulate (dense conv, then mask and RBF fill: the authors' semantics)"
