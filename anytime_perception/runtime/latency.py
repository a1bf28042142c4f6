"""Online latency model: how long will each step take, given how much of it the current mask computes?

A step's cost is a fixed part (unmasked convs, launch and Python overhead) plus a part proportional to the
computed fraction of its masked convs. The model's `step_gflops` under the mask in force measures the work, so
per step we fit `time = a + b * work` by exponentially weighted least squares, which follows a device that
speeds up or slows down (thermal limits, other processes) within a few dozen frames. With no spread in work yet
(a non-adaptive model, identical masks) the fit degenerates to time proportional to work. A step never measured
borrows the average time per unit of work over all steps; before any measurement every prediction is 0, so the
first frame is never skipped for lack of data.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StepLatency:
    count: int = 0
    mean_work: float = 0.0
    mean_time: float = 0.0
    var_work: float = 0.0
    cov: float = 0.0

    def observe(self, work: float, seconds: float, decay: float) -> None:
        self.count += 1
        a = max(1.0 / self.count, decay)
        dw, dt = work - self.mean_work, seconds - self.mean_time
        self.mean_work += a * dw
        self.mean_time += a * dt
        self.var_work = (1 - a) * (self.var_work + a * dw * dw)
        self.cov = (1 - a) * (self.cov + a * dw * dt)

    def predict(self, work: float) -> float:
        if self.var_work > (1e-3 * self.mean_work) ** 2 and self.cov > 0:
            slope = self.cov / self.var_work
            intercept = self.mean_time - slope * self.mean_work
            if intercept >= 0:
                return max(0.0, intercept + slope * work)
        if self.mean_work > 0:
            return self.mean_time * work / self.mean_work
        return self.mean_time


class LatencyModel:
    """Predicted seconds per step index. `decay`: weight of the newest measurement once warmed up."""

    def __init__(self, decay: float = 0.1):
        if not 0 < decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {decay}")
        self.decay = decay
        self.steps: dict[int, StepLatency] = {}
        self._total_work = 0.0
        self._total_time = 0.0

    def observe(self, step_index: int, work: float, seconds: float) -> None:
        self.steps.setdefault(step_index, StepLatency()).observe(work, seconds, self.decay)
        self._total_work += work
        self._total_time += seconds

    def predict(self, step_index: int, work: float) -> float:
        stats = self.steps.get(step_index)
        if stats is not None:
            return stats.predict(work)
        if self._total_work > 0:
            return self._total_time / self._total_work * work
        return 0.0

    def typical(self, step_index: int) -> float:
        """Recent mean seconds of a step, for a job whose mask and size are not known yet (0 if never measured)."""
        stats = self.steps.get(step_index)
        return stats.mean_time if stats is not None else 0.0
