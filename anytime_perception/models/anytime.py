"""The anytime HRNet: a staged forward that yields every exit's prediction as soon as it is computed.

Read one exit top to bottom in `AnytimeHRNet.advance`: a step runs one piece of the network (stem, layer1, a
transition, one HRNet module, or an exit head) under the compute mask of the latest exit. At an exit, logits of
pixels that were confident earlier are carried over (Eq. 4), the confidence criterion makes the mask for what
follows (Eq. 1), and an `ExitResult` comes out. All per-forward data lives in `AnytimeState`; nothing is stored on
modules, so frames can be suspended, resumed, interleaved or dropped freely.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import make_branch
from .configs import ModelConfig
from .confidence import make_criterion
from .execution import make_execution, resolve_execution
from .heads import original_head, pose_head, redesigned_head
from .hrnet import Transition, concat_at_quarter, init_weights, make_stage, make_stem
from .masked_conv import MaskedConv2d, call
from .masks import ComputeMask, mask_from_bool
from .step_cost import StepCost, trace_step_costs

SIZE_MULTIPLE = 32  # three 2x poolings on 1/4-resolution features in the deepest exit head


@dataclass(frozen=True)
class Step:
    name: str
    kind: str  # "stem", "layer1", "transition", "module", "exit"
    stage: int = 0  # transition i / stage s / exit index
    module: int = 0


@dataclass
class ExitResult:
    """One exit's prediction for a batch. Spatial tensors cover the input's area at 1/4 resolution."""

    index: int  # 1-based
    num_exits: int
    logits: Tensor  # (B, K, h, w), after carry-over
    confidence: Tensor  # (B, h, w), the criterion's confidence of `logits`
    compute_mask: Tensor | None  # (B, h, w), 1 = computed at this exit; None if everything was computed
    computed_fraction: Tensor  # (B,), share of positions computed at this exit
    gflops: Tensor  # (B,), cumulative GMACs/2^30 from the input through this exit (paper convention), on the
    # device of the logits like `computed_fraction`: the model never reads a value back to the host
    labels: Tensor | None = None  # (B, h, w) class ids (argmax of `logits`); None for heatmaps

    @property
    def is_final(self) -> bool:
        return self.index == self.num_exits


@dataclass
class AnytimeState:
    """Everything one in-flight forward needs to continue. Drop it to abandon the forward."""

    input_size: tuple[int, int]
    padded_size: tuple[int, int]
    output_size: tuple[int, int]
    num_steps: int
    adaptive: bool
    next_step: int = 0
    features: Tensor | list[Tensor] | None = None
    logits: Tensor | None = None  # latest exit's carried-over logits on the padded grid
    mask: ComputeMask | None = None  # compute mask from the latest exit, in force for the steps that follow
    gflops: Tensor | None = None
    exits_done: int = 0
    meta: dict = field(default_factory=dict)  # free for callers (frame ids, timings)

    @property
    def finished(self) -> bool:
        return self.next_step >= self.num_steps

    @property
    def batch_size(self) -> int:
        return int(self.gflops.shape[0])

    def drop(self) -> None:
        self.features = self.logits = self.mask = None
        self.next_step = self.num_steps


class AnytimeHRNet(nn.Module):
    """The anytime HRNet of `config`; implements the runtime's staged-model protocol (`runtime.protocol`).

    `execution` computes the masked convolutions (see `execution.py`); `execution_reason` says why it was chosen.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        # What the outputs mean, as the loaded weights' file says (training writes {"class_names", "colors"} or
        # {"joint_names"}); None: unknown, the task's default label set applies.
        self.labels: dict | None = None
        spec = config.backbone_spec
        bn = spec.bn_momentum
        masked = MaskedConv2d if config.confidence_adaptive else nn.Conv2d
        has_early_exits = config.exit_head != "none"

        for name, module in make_stem(bn, spec.stem_channels).items():
            self.add_module(name, module)
        self.relu = nn.ReLU(inplace=False)
        s1 = spec.stage1
        self.layer1 = make_branch(nn.Conv2d, s1.block, spec.stem_channels, s1.num_channels[0], s1.num_blocks[0], bn)
        exit_channels = spec.exit_in_channels()
        if has_early_exits:  # exit 1 runs before any mask exists: plain convs
            self.exit1 = self._make_exit_head(nn.Conv2d, 1, exit_channels[0])

        pre_channels = [s1.num_channels[0] * 4]
        for s, stage in enumerate(spec.stages()[1:], start=2):
            self.add_module(f"transition{s - 1}", Transition(masked, pre_channels, list(stage.num_channels), bn))
            modules = make_stage(masked, stage, list(stage.num_channels), spec, is_last_stage=s == 4)
            self.add_module(f"stage{s}", modules)
            pre_channels = modules[-1].out_channels
            if has_early_exits and s < 4:
                self.add_module(f"exit{s}", self._make_exit_head(masked, s, exit_channels[s - 1]))
        if config.task == "pose":
            self.final_layer = masked(spec.final_in_channels(), config.outputs, 1, bias=True)
        else:
            self.last_layer = original_head(masked, spec.final_in_channels(), config.outputs, bn)

        init_weights(self)
        self.criterion = make_criterion(config.criterion_name, config.threshold, config.top_ratio,
                                        config.random_compute_prob, config.random_seed)
        self.set_execution(config.execution, "cpu")
        self.steps = self._plan()

    # ----- construction -------------------------------------------------------------------------------------
    def _make_exit_head(self, conv_cls: type[nn.Conv2d], index: int, c_in: int) -> nn.Module:
        cfg = self.config
        if cfg.exit_head == "rh":
            return redesigned_head(conv_cls, c_in, cfg.outputs, cfg.head_channels, cfg.rh_depths[index - 1],
                                   cfg.backbone_spec.bn_momentum)
        if cfg.task == "pose":
            return pose_head(conv_cls, c_in, cfg.outputs)
        return original_head(conv_cls, c_in, cfg.outputs, cfg.backbone_spec.bn_momentum)

    def _plan(self) -> list[Step]:
        steps = [Step("stem", "stem"), Step("layer1", "layer1")]
        early = self.config.exit_head != "none"
        if early:
            steps.append(Step("exit1", "exit", stage=1))
        for s in (2, 3, 4):
            steps.append(Step(f"transition{s - 1}", "transition", stage=s - 1))
            steps += [Step(f"stage{s}.{m}", "module", stage=s, module=m) for m in range(len(self.get_submodule(f"stage{s}")))]
            if early and s < 4:
                steps.append(Step(f"exit{s}", "exit", stage=s))
        steps.append(Step(f"exit{self.num_exits}", "exit", stage=self.num_exits))
        return steps

    @property
    def num_exits(self) -> int:
        return self.config.num_exits

    @property
    def step_names(self) -> list[str]:
        return [s.name for s in self.steps]

    def exit_head(self, index: int) -> nn.Module:
        if index == self.num_exits:
            return self.final_layer if self.config.task == "pose" else self.last_layer
        return self.get_submodule(f"exit{index}")

    def exit_classifier(self, index: int) -> nn.Conv2d:
        """The last conv of exit `index` (1-based): the one that outputs class logits or heatmaps."""
        head = self.exit_head(index)
        return head if isinstance(head, nn.Conv2d) else head[-1]

    def set_execution(self, name: str, device: torch.device | str | None = None) -> None:
        """Compute masked convolutions with execution `name` ("auto": the fastest measured for `device`)."""
        runs, self.execution_reason = resolve_execution(name, device)
        self.execution = make_execution(runs)

    # ----- staged execution ---------------------------------------------------------------------------------
    def begin(self, images: Tensor, adaptive: bool | None = None) -> AnytimeState:
        """Start a forward. `images`: (B, 3, H, W), normalised. `adaptive=False` runs an adaptive model densely."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        b, _, h, w = images.shape
        if b < 1 or h < 1 or w < 1:
            raise ValueError(f"empty input of shape {tuple(images.shape)}")
        ph, pw = (math.ceil(n / SIZE_MULTIPLE) * SIZE_MULTIPLE for n in (h, w))
        if (ph, pw) != (h, w):  # pad bottom/right; outputs are cropped back and padding is never computed
            images = F.pad(images, (0, pw - w, 0, ph - h))
        state = AnytimeState(
            input_size=(h, w),
            padded_size=(ph, pw),
            output_size=(math.ceil(h / 4), math.ceil(w / 4)),
            num_steps=len(self.steps),
            adaptive=self.config.confidence_adaptive if adaptive is None else adaptive and self.config.confidence_adaptive,
            features=images,
            gflops=torch.zeros(b, dtype=torch.float64, device=images.device),
        )
        return state

    def advance(self, state: AnytimeState) -> ExitResult | None:
        """Run the next step; return the exit's result if the step was an exit, else None."""
        if state.finished:
            raise RuntimeError("this anytime forward has finished (or was dropped)")
        state.gflops = state.gflops + self.step_gflops(state, state.next_step)
        result = self.run_step(state, self.steps[state.next_step])
        state.next_step += 1
        if state.finished:
            state.features = None
        return result

    def run_step(self, state: AnytimeState, step: Step) -> ExitResult | None:
        """The computation of one step, without bookkeeping (`advance` is the public way in)."""
        mask = state.mask
        result = None
        if step.kind == "stem":
            x = self.relu(self.bn1(self.conv1(state.features)))
            state.features = self.relu(self.bn2(self.conv2(x)))
        elif step.kind == "layer1":
            state.features = self.layer1(state.features)
        elif step.kind == "transition":
            features = state.features if isinstance(state.features, list) else [state.features]
            state.features = self.get_submodule(f"transition{step.stage}")(features, mask)
        elif step.kind == "module":
            state.features = self.get_submodule(f"stage{step.stage}")[step.module](state.features, mask)
        else:
            result = self._exit(state, step.stage)
        return result

    def _exit(self, state: AnytimeState, index: int) -> ExitResult:
        computed_under = state.mask
        raw = call(self.exit_head(index), concat_at_quarter(state.features), computed_under)
        if computed_under is not None:  # Eq. 4: confident pixels keep the previous exit's logits
            m = computed_under.base
            logits = state.logits * (1 - m) + raw * m
        else:
            logits = raw
        h, w = state.output_size
        with torch.no_grad():
            confidence, compute, labels = self.criterion(logits[..., :h, :w].detach())
        state.logits = logits
        state.exits_done += 1
        is_final = index == self.num_exits
        if state.adaptive and not is_final:
            state.mask = ComputeMask(mask_from_bool(compute, tuple(logits.shape[-2:]), logits.dtype), self.execution)
        b = logits.shape[0]
        if computed_under is None:
            compute_mask, fraction = None, torch.ones(b, dtype=torch.float64, device=logits.device)
        else:
            compute_mask = computed_under.base[:, 0, :h, :w]
            fraction = compute_mask.flatten(1).double().mean(dim=1)
        return ExitResult(index=index, num_exits=self.num_exits, logits=logits[..., :h, :w], confidence=confidence,
                          compute_mask=compute_mask, computed_fraction=fraction, gflops=state.gflops.clone(),
                          labels=labels)

    def step_costs(self, padded_size: tuple[int, int]) -> tuple[StepCost, ...]:
        """Conv MACs of every step at input size `padded_size` (a multiple of 32), see step_cost.py."""
        return step_cost_table(self.config, padded_size)

    def step_gflops(self, state: AnytimeState, step_index: int) -> Tensor:
        """GMACs/2^30 of one step per image, under the mask in force (paper convention, see step_cost.py)."""
        return self.step_costs(state.padded_size)[step_index].gflops(state.mask, state.batch_size, state.gflops.device)

    def anytime(self, images: Tensor, adaptive: bool | None = None) -> Iterator[ExitResult]:
        """Yield one `ExitResult` per exit, each as soon as it is computed."""
        state = self.begin(images, adaptive)
        while not state.finished:
            result = self.advance(state)
            if result is not None:
                yield result

    def forward(self, images: Tensor) -> list[Tensor]:
        """All exits' logits at 1/4 resolution (the authors' model output), for training and evaluation."""
        return [r.logits for r in self.anytime(images)]


@lru_cache(maxsize=64)
def step_cost_table(config: ModelConfig, padded_size: tuple[int, int]) -> tuple[StepCost, ...]:
    """Conv MACs of every step of `config`'s model at input size `padded_size` (a multiple of 32)."""
    with torch.device("meta"):
        twin = AnytimeHRNet(config).eval()  # eval: BN in train mode rejects the 1x1 maps of tiny inputs
    return trace_step_costs(twin, padded_size)
