"""How much work a step does under the mask in force: the latency model's input.

For `AnytimeHRNet` the per-step conv table (`models.flops.step_cost_table`) and the mask's computed fraction give
the step's GFLOPs (paper convention, summed over the batch) in plain Python. The fraction is read once per mask at
the mask's own (1/4) resolution and used for every resolution: resizing the mask to the coarser ones only to
predict would cost more than the prediction is worth (tens of microseconds per exit), and nearest sampling keeps
the fractions within a few percent of each other. Other models are asked through their `step_gflops(state, i)`,
and a model with neither counts every step as one unit of work.
"""
from __future__ import annotations

from ..models.anytime import AnytimeHRNet, AnytimeState
from ..models.flops import GIGA, StepCost, step_cost_table


class StepWork:
    def __init__(self, model):
        self._model = model
        self._tables: dict[tuple[int, int], tuple[StepCost, ...]] = {}
        self._fast = isinstance(model, AnytimeHRNet)
        self._step_gflops = getattr(model, "step_gflops", None)

    def of_steps(self, state: AnytimeState, first: int, last: int) -> list[float]:
        """Work of steps first..last (inclusive), all under `state`'s current mask."""
        if self._fast:
            return self._from_table(state, first, last)
        if self._step_gflops is not None:
            return [float(self._step_gflops(state, i).sum()) for i in range(first, last + 1)]
        return [1.0] * (last - first + 1)

    def _from_table(self, state: AnytimeState, first: int, last: int) -> list[float]:
        table = self._tables.get(state.padded_size)
        if table is None:
            table = self._tables[state.padded_size] = step_cost_table(self._model.config, state.padded_size)
        batch, mask = state.batch_size, state.mask
        per_image = None if mask is None else mask.fraction(*mask.base.shape[-2:]).double().tolist()
        works = []
        for cost in table[first:last + 1]:
            total = float(cost.dense_macs * batch)
            for g in cost.masked:
                if per_image is None:
                    total += g.macs * batch
                else:
                    total += sum(g.macs * p + (1 - p) * p * g.interp_units for p in per_image)
            works.append(total / GIGA)
        return works
