"""Per-exit FLOPs of a model config in the paper's convention (Table 1 of the paper, the `flops` command).

Cumulative GMACs/2^30 from the input through each exit (earlier exit heads included), from the per-step tables of
`step_cost.py` (which also holds the masked-conv cost formula and explains the convention). p is per image in the
model's own accounting (their profiling runs batch 1); `gflops_for_fractions` takes p averaged over a batch as the
authors' counter does on a batch.
"""
from __future__ import annotations

from .anytime import SIZE_MULTIPLE, step_cost_table
from .configs import ModelConfig
from .step_cost import GIGA, MaskedConvGroup, StepCost, masked_conv_macs

__all__ = ["GIGA", "MaskedConvGroup", "StepCost", "step_cost_table", "padded", "dense_gflops_per_exit",
           "gflops_for_fractions"]


def padded(size: tuple[int, int]) -> tuple[int, int]:
    """`size` rounded up to the model's input multiple (what the model runs on)."""
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
            total += masked_conv_macs(g.macs, g.fill_units, p)
        total += step.dense_macs
        if step.name.startswith("exit"):
            out.append(total / GIGA)
            index = len(out)
            if config.confidence_adaptive and index < config.num_exits:
                current = fractions[index] if isinstance(fractions, dict) else float(fractions[index - 1])
    return out
