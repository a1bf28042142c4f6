"""A stand-in model for testing the node deterministically with real rclpy and no timing assumptions.

:class:`GatedModel` implements the runtime's :class:`~anytime_perception.runtime.protocol.StagedModel`
(``steps``, ``num_exits``, ``step_names``, ``begin``, ``advance``) plus what the node reads (``config.task``, ``config.task_spec`` mean/std, ``config.outputs``). Each
model step waits at a gate until the test lets it through (``allow(n)``), so a test can publish a newer frame, a
priority event or an action cancel *while* a given step runs and know exactly where the runtime will decide:

    model = GatedModel()
    node = AnytimeNode(model_loader=model.loader(), ...)
    model.wait_blocked()       # the worker waits before the first step of the first frame
    model.allow(2)             # module1, exit1 -> exit 1 is published

Its exits produce (B, K, H/4, W/4) logits whose argmax is ``(exit_index + round(image mean * 10)) % K`` everywhere,
a confidence of 0.25 * exit index, and a compute mask computing the left half after exit 1.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch

from ..models.anytime import AnytimeState, ExitResult, Step
from .weights import LoadedModel


@dataclass(frozen=True)
class _TaskSpec:
    name: str
    mean: tuple = (0.0, 0.0, 0.0)
    std: tuple = (1.0, 1.0, 1.0)


@dataclass
class _Config:
    task: str = "seg"
    outputs: int = 3
    confidence_adaptive: bool = True
    task_spec: _TaskSpec = field(default_factory=lambda: _TaskSpec("seg"))


class GatedModel:
    def __init__(self, num_exits: int = 4, classes: int = 3, task: str = "seg", gated: bool = True):
        self.steps = []
        for k in range(1, num_exits + 1):
            self.steps += [Step(f"module{k}", "module", stage=k), Step(f"exit{k}", "exit", stage=k)]
        self.num_exits = num_exits
        self.config = _Config(task=task, outputs=classes, task_spec=_TaskSpec(task))
        self.device = torch.device("cpu")
        self.gated = gated
        self.log: list[tuple[float, str]] = []          # (image mean, step name) of every step run
        self._permits = 0
        self._waiting = False
        self._cond = threading.Condition()

    @property
    def step_names(self) -> list[str]:
        return [s.name for s in self.steps]

    def loader(self, weights: str = "gated test model"):
        """A model_loader for AnytimeNode / AnytimePerception."""
        return lambda settings: LoadedModel(self, self.config.task, weights, True, 0.0)

    # ----- the gate -------------------------------------------------------------------------------------------
    def allow(self, steps: int = 1) -> None:
        """Let ``steps`` more steps run."""
        with self._cond:
            self._permits += steps
            self._cond.notify_all()

    def open(self) -> None:
        """No more gating: every step runs at once."""
        with self._cond:
            self.gated = False
            self._cond.notify_all()

    def wait_blocked(self, timeout: float = 10.0) -> bool:
        """Wait until the worker waits at the gate with no permits left (it is about to run a step)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._waiting and self._permits == 0, timeout)

    def wait_steps(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until ``count`` steps have run in total."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.log) >= count, timeout)

    # ----- the staged-model interface -------------------------------------------------------------------------
    def begin(self, images: torch.Tensor) -> AnytimeState:
        b, _, h, w = images.shape
        return AnytimeState(input_size=(h, w), padded_size=(h, w), output_size=(max(1, h // 4), max(1, w // 4)),
                            num_steps=len(self.steps), adaptive=True, features=images,
                            gflops=torch.zeros(b, dtype=torch.float64))

    def advance(self, state: AnytimeState) -> ExitResult | None:
        if state.finished:
            raise RuntimeError("finished")
        with self._cond:
            self._waiting = True
            self._cond.notify_all()
            ok = self._cond.wait_for(lambda: not self.gated or self._permits > 0, timeout=30.0)
            self._waiting = False
            if not ok:
                raise TimeoutError("GatedModel: no permit within 30 s (test forgot to allow a step?)")
            if self.gated:
                self._permits -= 1
        step = self.steps[state.next_step]
        images = state.features
        mean = float(images.mean())
        state.gflops = state.gflops + 1.0
        result = None
        if step.kind == "exit":
            state.exits_done += 1
            k = state.exits_done
            b = images.shape[0]
            h, w = state.output_size
            label = (k + round(mean * 10)) % self.config.outputs
            logits = torch.zeros(b, self.config.outputs, h, w)
            logits[:, label] = 1.0
            if k == 1:
                mask, fraction = None, torch.ones(b, dtype=torch.float64)
            else:
                mask = torch.zeros(b, h, w)
                mask[:, :, : max(1, w // 2)] = 1.0
                fraction = mask.flatten(1).double().mean(dim=1)
            result = ExitResult(index=k, num_exits=self.num_exits, logits=logits,
                                confidence=torch.full((b, h, w), min(1.0, 0.25 * k)), compute_mask=mask,
                                computed_fraction=fraction, gflops=state.gflops.clone())
        state.next_step += 1
        if state.finished:
            state.features = None
        with self._cond:
            self.log.append((mean, step.name))
            self._cond.notify_all()
        return result
