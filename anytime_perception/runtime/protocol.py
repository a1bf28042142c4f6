"""The staged model the runtime drives: `AnytimeHRNet`, and the test doubles `runtime.testing.ScriptedModel` and
`ros.testing.GatedModel`, all implement `StagedModel`.

A forward is a sequence of steps (`steps`, the last one an exit). `begin(images)` starts one and returns its
`AnytimeState`; each `advance(state)` runs the next step and returns the exit's result when the step is an exit.
All per-forward data lives in the state, so the scheduler may interleave, suspend or drop forwards freely.

Optional, read when present: `step_costs(padded_size)` (per-step conv tables, `models.step_cost.StepCost`) or
`step_gflops(state, step_index)` for the latency model's work estimates, and `device` for a model without
parameters.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from torch import Tensor

from ..models.anytime import AnytimeState, ExitResult, Step


@runtime_checkable
class StagedModel(Protocol):
    """A model run one step at a time, each exit's result available as soon as its step has run."""

    @property
    def steps(self) -> Sequence[Step]:
        """The steps of one forward in order; `Step.kind == "exit"` marks exits."""

    @property
    def num_exits(self) -> int:
        """How many of the steps are exits."""

    @property
    def step_names(self) -> list[str]:
        """`steps`' names."""

    def begin(self, images: Tensor) -> AnytimeState:
        """Start a forward of (B, 3, H, W) normalised images."""

    def advance(self, state: AnytimeState) -> ExitResult | None:
        """Run the next step of `state`; the exit's result if it was an exit, else None."""
