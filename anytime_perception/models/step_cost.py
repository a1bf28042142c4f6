"""What one step of a staged model costs, in the paper's convention (the one place the cost formula lives).

"GFLOPs" in the paper and the authors' code are multiply-accumulates of conv and linear layers (bias, BN, ReLU,
pooling, resizing ignored) divided by 2^30. A masked conv with computed fraction p at its output resolution counts
`masked_conv_macs`: dense*p + (1-p)*p*C_out*49*H*W, the second term being the authors' charge for the RBF fill.

Per-step tables come from tracing a twin of the model on the `meta` device (`trace_step_costs`), so they hold for
any head or backbone variant without a hand-written formula, and cost nothing to build. Per-exit sums for a model
config are in `flops.py`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .masked_conv import RBF_SIZE, MaskedConv2d

GIGA = float(2**30)


def rbf_fill_units(out_channels: int, height: int, width: int) -> int:
    """The factor of the RBF fill's charge for one masked conv: C_out * 7 * 7 * H * W (output resolution)."""
    return out_channels * RBF_SIZE * RBF_SIZE * height * width


def masked_conv_macs(dense_macs, fill_units, fraction):
    """MACs charged for masked convs computing a share `fraction` of their outputs (floats or tensors)."""
    return dense_macs * fraction + (1 - fraction) * fraction * fill_units


@dataclass(frozen=True)
class MaskedConvGroup:
    """The masked convs of one step at one output resolution (they share the mask's fraction there)."""

    height: int
    width: int
    macs: int  # dense MACs of the masked convs at this output resolution
    fill_units: int  # sum of `rbf_fill_units` over them


@dataclass(frozen=True)
class StepCost:
    """Conv MACs of one step: never-masked convs, and masked ones grouped by resolution."""

    name: str
    dense_macs: int  # convs that are never masked
    masked: tuple[MaskedConvGroup, ...]

    @property
    def full_macs(self) -> int:
        return self.dense_macs + sum(g.macs for g in self.masked)

    def gflops(self, mask, batch_size: int, device: torch.device | str = "cpu") -> Tensor:
        """Per-image GMACs/2^30 under `mask` (a ComputeMask, or None for dense), shape (batch_size,), on `device`
        (the mask's, when there is one: the count is computed where the mask lives, never read back to the host)."""
        total = torch.full((batch_size,), float(self.dense_macs), dtype=torch.float64, device=device)
        for g in self.masked:
            if mask is None:
                total += g.macs
            else:
                total += masked_conv_macs(g.macs, g.fill_units, mask.fraction(g.height, g.width).detach().double())
        return total / GIGA

    def macs_at(self, fraction: float | None) -> float:
        """MACs of one image when every masked conv computes `fraction` (None: dense), in plain Python."""
        if fraction is None:
            return float(self.full_macs)
        return self.dense_macs + sum(masked_conv_macs(g.macs, g.fill_units, fraction) for g in self.masked)


def trace_step_costs(model: nn.Module, padded_size: tuple[int, int]) -> tuple[StepCost, ...]:
    """Conv MACs of every step of a staged model (on the `meta` device, in eval mode) at input `padded_size`.

    `model` needs `steps`, `begin(images, adaptive=False)` and `run_step(state, step)`; it is traced densely."""
    records: list[tuple[nn.Conv2d, tuple[int, int]]] = []

    def hook(module, _inputs, output):
        records.append((module, tuple(output.shape[-2:])))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        state = model.begin(torch.zeros(1, 3, *padded_size, device="meta"), adaptive=False)
        table = []
        for step in model.steps:
            records.clear()
            model.run_step(state, step)
            dense = 0
            groups: dict[tuple[int, int], list[int]] = {}
            for conv, (h, w) in records:
                macs = conv.weight.numel() * h * w
                if isinstance(conv, MaskedConv2d):
                    group = groups.setdefault((h, w), [0, 0])
                    group[0] += macs
                    group[1] += rbf_fill_units(conv.out_channels, h, w)
                else:
                    dense += macs
            table.append(StepCost(step.name, dense,
                                  tuple(MaskedConvGroup(h, w, m, u) for (h, w), (m, u) in groups.items())))
    finally:
        for handle in handles:
            handle.remove()
    return tuple(table)
