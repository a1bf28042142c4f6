"""The compute mask of one exit, at every resolution the following convolutions need.

Created after exit i from its (carried-over) prediction and handed to every conv of transition_i, stage_{i+1} and
exit_{i+1}. It lives in the anytime state of one forward, never on a module, so any number of forwards (batches,
sizes, suspended frames) can be in flight at once.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .masked_conv import ConvExecution


class ComputeMask:
    """`base` is (B, 1, H, W) at the logits' (1/4) resolution: 1 = compute, 0 = confident, skip.

    `at(h, w)` resizes by nearest sampling, which for the 2^k ratios of HRNet takes the top-left sample of each
    block, exactly as the authors' `F.interpolate(logits, size)` default. Resized masks and any derived data a
    backend needs (index lists, fractions) are memoised per resolution for the lifetime of this mask.
    """

    def __init__(self, base: Tensor, execution: ConvExecution):
        if base.dim() != 4 or base.shape[1] != 1:
            raise ValueError(f"compute mask must be (B, 1, H, W), got {tuple(base.shape)}")
        self.base = base
        self.execution = execution
        self._memo: dict[Any, Any] = {}

    def at(self, height: int, width: int) -> Tensor:
        if (height, width) == tuple(self.base.shape[-2:]):
            return self.base
        return self.memo(("mask", height, width),
                         lambda: F.interpolate(self.base, size=(height, width), mode="nearest"))

    def fraction(self, height: int, width: int) -> Tensor:
        """Share of computed positions per image at this resolution, shape (B,)."""
        return self.memo(("fraction", height, width), lambda: self.at(height, width).flatten(1).mean(dim=1))

    def memo(self, key: Any, make: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    @property
    def batch_size(self) -> int:
        return self.base.shape[0]


def mask_from_bool(compute: Tensor, padded_size: tuple[int, int], dtype: torch.dtype) -> Tensor:
    """(B, h, w) bool on the valid region -> (B, 1, H, W) float on the padded grid; padding is never computed."""
    b, h, w = compute.shape
    mask = torch.zeros(b, 1, *padded_size, dtype=dtype, device=compute.device)
    mask[:, 0, :h, :w] = compute.to(dtype)
    return mask
