"""FLOPs in the paper's convention.

"GFLOPs" in the paper and the authors' code are multiply-accumulates of conv and linear layers (bias, BN, ReLU,
pooling, resizing ignored) divided by 2^30, cumulative from the input through each exit (earlier exit heads
included). A masked conv with computed fraction p at its output resolution counts dense*p + (1-p)*p*C_out*49*H*W,
the second term being the authors' charge for the RBF fill. p is per image here (their profiling runs batch 1);
`gflops_for_fractions` takes p averaged over a batch as their counter does on a batch.

Per-step conv tables come from tracing a twin of the model on the `meta` device, so they hold for any head or
backbone variant without a hand-written formula, and cost nothing to build.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor, nn

from .configs import ModelConfig
from .masked_conv import RBF_SIZE, MaskedConv2d

GIGA = float(2**30)


@dataclass(frozen=True)
class MaskedConvGroup:
    height: int
    width: int
    macs: int  # dense MACs of the masked convs at this output resolution
    interp_units: int  # sum of C_out * 49 * H * W: the RBF term's factor


@dataclass(frozen=True)
class StepCost:
    name: str
    dense_macs: int  # convs that are never masked
    masked: tuple[MaskedConvGroup, ...]

    @property
    def full_macs(self) -> int:
        return self.dense_macs + sum(g.macs for g in self.masked)

    def gflops(self, mask, batch_size: int) -> Tensor:
        """Per-image GMACs/2^30 under `mask` (a ComputeMask, or None for dense)."""
        total = torch.full((batch_size,), float(self.dense_macs), dtype=torch.float64)
        for g in self.masked:
            if mask is None:
                total += g.macs
            else:
                p = mask.fraction(g.height, g.width).detach().double().cpu()
                total += g.macs * p + (1 - p) * p * g.interp_units
        return total / GIGA


@lru_cache(maxsize=64)
def step_cost_table(config: ModelConfig, padded_size: tuple[int, int]) -> tuple[StepCost, ...]:
    """Conv MACs of every step of `config`'s model at input size `padded_size` (a multiple of 32)."""
    from .anytime import AnytimeHRNet

    with torch.device("meta"):
        twin = AnytimeHRNet(config).eval()  # eval: BN in train mode rejects the 1x1 maps of tiny inputs
    records: list[tuple[nn.Conv2d, tuple[int, int]]] = []

    def hook(module, _inputs, output):
        records.append((module, tuple(output.shape[-2:])))

    for m in twin.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(hook)
    state = twin.begin(torch.zeros(1, 3, *padded_size, device="meta"), adaptive=False)
    table = []
    for step in twin.steps:
        records.clear()
        twin.run_step(state, step)
        dense = 0
        groups: dict[tuple[int, int], list[int]] = {}
        for conv, (h, w) in records:
            macs = conv.weight.numel() * h * w
            if isinstance(conv, MaskedConv2d):
                g = groups.setdefault((h, w), [0, 0])
                g[0] += macs
                g[1] += conv.out_channels * RBF_SIZE * RBF_SIZE * h * w
            else:
                dense += macs
        table.append(StepCost(step.name, dense, tuple(MaskedConvGroup(h, w, m, i) for (h, w), (m, i) in groups.items())))
    return tuple(table)


def padded(size: tuple[int, int]) -> tuple[int, int]:
    from .anytime import SIZE_MULTIPLE

    return tuple(-(-n // SIZE_MULTIPLE) * SIZE_MULTIPLE for n in size)


def dense_gflops_per_exit(config: ModelConfig, size: tuple[int, int]) -> list[float]:
    """Cumulative GMACs/2^30 at each exit with nothing masked."""
    out, total = [], 0
    for step in step_cost_table(config, padded(size)):
        total += step.full_macs
        if step.name.startswith("exit"):
            out.append(total / GIGA)
    return out


def gflops_for_fractions(config: ModelConfig, size: tuple[int, int],
                         fractions: dict[int, dict[tuple[int, int], float]] | list[float]) -> list[float]:
    """Cumulative GMACs/2^30 per exit when the mask after exit i computes a share p of positions.

    `fractions` is either {exit_index: {(h, w): p}} (p measured at each conv resolution, as the authors' counter
    sees it) or a list of one p per exit 1..N-1 applied at every resolution (for what-if tables).
    """
    table = step_cost_table(config, padded(size))
    out, total, current = [], 0.0, None
    for step in table:
        for g in step.masked:
            if current is None:
                total += g.macs
                continue
            p = current.get((g.height, g.width), current.get(None)) if isinstance(current, dict) else current
            if p is None:
                raise ValueError(f"no compute fraction given for resolution {g.height}x{g.width}")
            total += g.macs * p + (1 - p) * p * g.interp_units
        total += step.dense_macs
        if step.name.startswith("exit"):
            out.append(total / GIGA)
            index = len(out)
            if config.confidence_adaptive and index < config.num_exits:
                current = fractions[index] if isinstance(fractions, dict) else float(fractions[index - 1])
    return out
