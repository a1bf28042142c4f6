"""How much work a step does under the mask in force: the latency model's input.

A model with per-step conv tables (`step_costs(padded_size)`, as `AnytimeHRNet` has) gives the step's GFLOPs
(paper convention, summed over the batch) in plain Python from the table and the mask's computed fraction. The
fraction is read once per mask at the mask's own (1/4) resolution and used for every resolution: resizing the mask
to the coarser ones only to predict would cost more than the prediction is worth (tens of microseconds per exit),
and nearest sampling keeps the fractions within a few percent of each other. Other models are asked through their
`step_gflops(state, i)`, and a model with neither counts every step as one unit of work.
"""
from __future__ import annotations

from ..models.anytime import AnytimeState
from ..models.step_cost import GIGA, StepCost
from .protocol import StagedModel


class StepWork:
    """Predicted work of a stretch of steps of one model, per the model's cost tables when it has them."""

    def __init__(self, model: StagedModel):
        self._step_costs = getattr(model, "step_costs", None)
        self._step_gflops = getattr(model, "step_gflops", None)
        self._tables: dict[tuple[int, int], tuple[StepCost, ...]] = {}

    def of_steps(self, state: AnytimeState, first: int, last: int) -> list[float]:
        """Work of steps first..last (inclusive), all under `state`'s current mask."""
        if self._step_costs is not None:
            return self._from_table(state, first, last)
        if self._step_gflops is not None:
            return [float(self._step_gflops(state, i).sum()) for i in range(first, last + 1)]
        return [1.0] * (last - first + 1)

    def _from_table(self, state: AnytimeState, first: int, last: int) -> list[float]:
        table = self._tables.get(state.padded_size)
        if table is None:
            table = self._tables[state.padded_size] = self._step_costs(state.padded_size)
        mask = state.mask
        per_image = [None] * state.batch_size if mask is None else \
            mask.fraction(*mask.base.shape[-2:]).double().tolist()
        return [sum(cost.macs_at(p) for p in per_image) / GIGA for cost in table[first:last + 1]]
