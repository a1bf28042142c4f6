"""The confidence-adaptive convolution and its execution backends.

`MaskedConv2d` is an `nn.Conv2d` that also owns the per-layer RBF interpolation parameter `Lambda` (trainable,
init 3.0) and the constant 7x7 grid of squared distances `square_dis` (names as in the authors' checkpoints). It
holds no mask: the mask of the current exit arrives as an argument (`ComputeMask`), together with the backend that
executes the convolution. Backends are swappable without touching model code: `EmulatedExecution` computes the
dense output and masks it, exactly as the authors' code does; a sparse backend computes only the active positions.
"""
from __future__ import annotations

from typing import Protocol

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
    r = torch.arange(size, dtype=torch.float32) - size // 2
    grid = r[:, None] ** 2 + r[None, :] ** 2
    grid[size // 2, size // 2] = CENTRE_SQUARE_DISTANCE
    return grid


class MaskAware:
    """Marker for modules whose forward takes `(x, mask)`; containers pass the mask only to these."""


def call(layer: nn.Module, x, mask):
    """Run `layer`, handing it the compute mask if it takes one."""
    return layer(x, mask) if isinstance(layer, MaskAware) else layer(x)


def executor_unit(module: nn.Module, x, mask):
    """Let the mask's backend run `module` (a conv-BN-ReLU sequence, a residual block) as one fused unit if it
    implements `forward_unit`; None means "not handled": run the module's own forward."""
    if mask is None:
        return None
    run = getattr(mask.executor, "forward_unit", None)
    return None if run is None else run(module, x, mask)


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
        def one(n: int, i: int) -> int:
            return (n + 2 * self.padding[i] - self.dilation[i] * (self.kernel_size[i] - 1) - 1) // self.stride[i] + 1

        return one(height, 0), one(width, 1)

    def forward(self, x: Tensor, mask: "ComputeMaskLike | None" = None) -> Tensor:
        if mask is None:
            return super().forward(x)
        return mask.executor.masked_conv(self, x, mask)


class ComputeMaskLike(Protocol):
    executor: "ConvExecution"

    def at(self, height: int, width: int) -> Tensor: ...


class ConvExecution(Protocol):
    """How a masked convolution is executed. Must return the conv output at computed positions and the RBF fill
    elsewhere, i.e. equal `EmulatedExecution` up to float rounding."""

    name: str

    def masked_conv(self, conv: MaskedConv2d, x: Tensor, mask: ComputeMaskLike) -> Tensor: ...


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


EXECUTIONS: dict[str, type] = {"emulate": EmulatedExecution}


def make_execution(name: str) -> ConvExecution:
    if name == "sparse" and name not in EXECUTIONS:
        from . import sparse  # noqa: F401  (registers "sparse"; imported on demand to keep startup cheap)
    try:
        return EXECUTIONS[name]()
    except KeyError:
        raise ValueError(f"unknown execution {name!r}; known: {sorted(EXECUTIONS)}") from None
