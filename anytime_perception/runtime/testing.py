"""Stand-ins for tests: a staged model whose steps take scripted time on a `FakeClock`.

With both, every decision the scheduler makes is deterministic: a test says how long each step takes, schedules
frame arrivals with `clock.call_at` (they happen "during" the step that spans their time) and checks which exits
come out, in which order, and why jobs end.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..models.anytime import AnytimeState, ExitResult, Step
from .clock import FakeClock
from .jobs import Job, JobEnd, JobResult
from .scheduler import AnytimeScheduler

# (name, seconds): four exits, like the real model's exit1 .. exit4 with modules between them.
DEFAULT_STEPS: tuple[tuple[str, float], ...] = (
    ("stem", 1.0), ("exit1", 1.0),
    ("module2", 2.0), ("exit2", 1.0),
    ("module3", 2.0), ("exit3", 1.0),
    ("module4", 2.0), ("exit4", 1.0),
)


class ScriptedModel:
    """A `runtime.protocol.StagedModel` (with `step_gflops`) whose steps take scripted time on a `FakeClock`.

    A step lasts its scripted seconds times `time_scale`; steps after the first exit are "masked": they last (and
    cost) their seconds times the fraction computed there, which `fractions(exit_index, state)` chooses after
    each exit (default 1). An exit's logits are (B, 1, 1, 1) holding the image mean plus the exit index, so results
    tell which frame and exit they came from. `log` records (job id, step name, start, end) of every step run.
    """

    def __init__(self, clock: FakeClock, steps: Sequence[tuple[str, float]] = DEFAULT_STEPS,
                 fractions: Callable[[int, AnytimeState], float] | None = None):
        self.clock = clock
        self.steps = [Step(name, "exit" if name.startswith("exit") else "module") for name, _ in steps]
        self.seconds = [float(t) for _, t in steps]
        self.num_exits = sum(s.kind == "exit" for s in self.steps)
        self.fractions = fractions or (lambda exit_index, state: 1.0)
        self.time_scale = 1.0
        self.log: list[tuple[int | None, str, float, float]] = []
        self.device = torch.device("cpu")

    @property
    def step_names(self) -> list[str]:
        return [s.name for s in self.steps]

    def begin(self, images: Tensor) -> AnytimeState:
        b, _, h, w = images.shape
        return AnytimeState(input_size=(h, w), padded_size=(h, w), output_size=(1, 1), num_steps=len(self.steps),
                            adaptive=True, features={"images": images, "fraction": 1.0},
                            gflops=torch.zeros(b, dtype=torch.float64))

    def step_gflops(self, state: AnytimeState, step_index: int) -> Tensor:
        return torch.full((state.batch_size,), self.seconds[step_index] * state.features["fraction"],
                          dtype=torch.float64)

    def advance(self, state: AnytimeState) -> ExitResult | None:
        if state.finished:
            raise RuntimeError("this anytime forward has finished (or was dropped)")
        index = state.next_step
        step = self.steps[index]
        cost = self.step_gflops(state, index)
        start = self.clock.now()
        self.clock.advance(float(cost[0]) * self.time_scale)
        self.log.append((state.meta.get("job_id"), step.name, start, self.clock.now()))
        state.gflops = state.gflops + cost
        result = None
        if step.kind == "exit":
            state.exits_done += 1
            images = state.features["images"]
            logits = images.double().mean(dim=(1, 2, 3)).view(-1, 1, 1, 1) + state.exits_done
            fraction = state.features["fraction"]
            b = logits.shape[0]
            result = ExitResult(index=state.exits_done, num_exits=self.num_exits, logits=logits,
                                confidence=torch.ones(b, 1, 1), compute_mask=None,
                                computed_fraction=torch.full((b,), fraction, dtype=torch.float64),
                                gflops=state.gflops.clone())
            if state.exits_done < self.num_exits:
                state.features = {"images": images, "fraction": float(self.fractions(state.exits_done, state))}
        state.next_step += 1
        if state.finished:
            state.features = None
        return result


class SchedulerHarness:
    """A synchronous scheduler on a `ScriptedModel` and a `FakeClock` that records every result and end.

    Frames are named by `frame_id`; `submit_at(t, "f2")` makes frame f2 arrive (stamped t) when the clock passes
    t, which may be in the middle of a step. `run()` runs until every job has ended.
    """

    def __init__(self, steps: Sequence[tuple[str, float]] = DEFAULT_STEPS,
                 fractions: Callable[[int, AnytimeState], float] | None = None, **scheduler_kwargs):
        self.clock = FakeClock()
        self.model = ScriptedModel(self.clock, steps, fractions)
        self.results: list[JobResult] = []
        self.ends: list[JobEnd] = []
        self.events: list[tuple] = []  # ("result", frame_id, exit index) and ("end", frame_id, reason), in order
        self.ids: dict[str, int] = {}
        self.scheduler = AnytimeScheduler(self.model, clock=self.clock, on_result=self._on_result,
                                          on_end=self._on_end, **scheduler_kwargs)

    def _on_result(self, result: JobResult) -> None:
        self.results.append(result)
        self.events.append(("result", result.job.frame_id, result.exit_index))

    def _on_end(self, end: JobEnd) -> None:
        self.ends.append(end)
        self.events.append(("end", end.job.frame_id, str(end.reason)))

    def submit(self, frame_id: str, source: str = "cam", stamp: float | None = None, value: float = 0.0,
               **job_fields) -> int:
        stamp = self.clock.now() if stamp is None else stamp
        job = Job(torch.full((3, 2, 2), float(value)), stamp=stamp, frame_id=frame_id, source=source, **job_fields)
        self.ids[frame_id] = self.scheduler.submit(job)
        return self.ids[frame_id]

    def submit_at(self, when: float, frame_id: str, **kwargs) -> None:
        self.clock.call_at(when, lambda: self.submit(frame_id, stamp=when, **kwargs))

    def run(self) -> int:
        return self.scheduler.run_until_idle()

    # ----- reading what happened ----------------------------------------------------------------------------------
    def exits(self, frame_id: str) -> list[int]:
        return [r.exit_index for r in self.results if r.job.frame_id == frame_id]

    def results_of(self, frame_id: str) -> list[JobResult]:
        return [r for r in self.results if r.job.frame_id == frame_id]

    def end(self, frame_id: str) -> JobEnd:
        (end,) = [e for e in self.ends if e.job.frame_id == frame_id]
        return end

    def reason(self, frame_id: str) -> str:
        return str(self.end(frame_id).reason)

    def steps_run(self, frame_id: str) -> list[str]:
        job_id = self.ids[frame_id]
        return [name for jid, name, _, _ in self.model.log if jid == job_id]

    def step_log(self) -> list[tuple[str, str, float, float]]:
        """(frame id, step, start, end) for every step run."""
        frames = {v: k for k, v in self.ids.items()}
        return [(frames.get(jid), name, start, end) for jid, name, start, end in self.model.log]
