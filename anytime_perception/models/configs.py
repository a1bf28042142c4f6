"""Architecture variants as data.

One dict per backbone, read by one builder (`hrnet.build_backbone`). Adding a variant is adding a dict.
Numbers follow the official HRNet configs (segmentation: HRNet-Semantic-Segmentation `w48.yaml`,
`w18_small_v2.yaml`; pose: deep-high-resolution-net `w32_256x256`).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StageSpec:
    num_modules: int
    block: str  # "basic" or "bottleneck"
    num_blocks: tuple[int, ...]
    num_channels: tuple[int, ...]

    @property
    def num_branches(self) -> int:
        return len(self.num_channels)


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    stage1: StageSpec
    stage2: StageSpec
    stage3: StageSpec
    stage4: StageSpec
    fuse_upsample: str  # "bilinear" (segmentation code) or "nearest" (pose code)
    bn_momentum: float
    # The pose network's last module fuses into the 1/4 branch only (multi_scale_output=False).
    last_module_single_output: bool = False
    stem_channels: int = 64

    def stages(self) -> tuple[StageSpec, StageSpec, StageSpec, StageSpec]:
        return (self.stage1, self.stage2, self.stage3, self.stage4)

    def exit_in_channels(self) -> tuple[int, int, int, int]:
        """Channels of each exit's input: stage-1 output, then all branches concatenated at 1/4 resolution."""
        stage1_out = self.stage1.num_channels[0] * 4  # bottleneck expansion
        return (
            stage1_out,
            sum(self.stage2.num_channels),
            sum(self.stage3.num_channels),
            self.final_in_channels(),
        )

    def final_in_channels(self) -> int:
        if self.last_module_single_output:
            return self.stage4.num_channels[0]
        return sum(self.stage4.num_channels)


BACKBONES: dict[str, BackboneSpec] = {
    "hrnet_w48": BackboneSpec(
        name="hrnet_w48",
        stage1=StageSpec(1, "bottleneck", (4,), (64,)),
        stage2=StageSpec(1, "basic", (4, 4), (48, 96)),
        stage3=StageSpec(4, "basic", (4, 4, 4), (48, 96, 192)),
        stage4=StageSpec(3, "basic", (4, 4, 4, 4), (48, 96, 192, 384)),
        fuse_upsample="bilinear",
        bn_momentum=0.01,
    ),
    # HRNetV2-W18-Small-v2: what the authors' code calls "W18".
    "hrnet_w18s": BackboneSpec(
        name="hrnet_w18s",
        stage1=StageSpec(1, "bottleneck", (2,), (64,)),
        stage2=StageSpec(1, "basic", (2, 2), (18, 36)),
        stage3=StageSpec(3, "basic", (2, 2, 2), (18, 36, 72)),
        stage4=StageSpec(2, "basic", (2, 2, 2, 2), (18, 36, 72, 144)),
        fuse_upsample="bilinear",
        bn_momentum=0.01,
    ),
    "hrnet_w32": BackboneSpec(
        name="hrnet_w32",
        stage1=StageSpec(1, "bottleneck", (4,), (64,)),
        stage2=StageSpec(1, "basic", (4, 4), (32, 64)),
        stage3=StageSpec(4, "basic", (4, 4, 4), (32, 64, 128)),
        stage4=StageSpec(3, "basic", (4, 4, 4, 4), (32, 64, 128, 256)),
        fuse_upsample="nearest",
        bn_momentum=0.1,
        last_module_single_output=True,
    ),
}

# Channel width of the redesigned ("RH") exit heads, per backbone (paper Sec. 4).
RH_INTER_CHANNELS = {"hrnet_w48": 128, "hrnet_w18s": 64, "hrnet_w32": 64}

# Task defaults: outputs, the confidence criterion the paper uses, and input normalisation.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# Thresholds the paper uses (max_prob: Sec. 4.1; heatmap_peak: Sec. 4.2); neg_entropy's is ours (Fig. 7 sweeps it).
DEFAULT_THRESHOLDS = {"max_prob": 0.998, "heatmap_peak": 0.002, "neg_entropy": -0.02}


@dataclass(frozen=True)
class TaskSpec:
    name: str
    num_outputs: int
    criterion: str
    default_input_size: tuple[int, int]  # (H, W) the paper evaluates at
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


TASKS: dict[str, TaskSpec] = {
    "seg": TaskSpec("seg", num_outputs=19, criterion="max_prob", default_input_size=(1024, 2048)),
    "pose": TaskSpec("pose", num_outputs=16, criterion="heatmap_peak", default_input_size=(256, 256)),
}


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines one anytime model. `registry.create_model` builds these from names."""

    backbone: str
    task: str
    exit_head: str  # "none" (plain one-exit HRNet), "ee" (original 1x1 heads) or "rh" (encoder-decoder heads)
    confidence_adaptive: bool = False
    num_classes: int | None = None  # default: the task's
    inter_channels: int | None = None  # RH head width; default: RH_INTER_CHANNELS[backbone]
    rh_depths: tuple[int, int, int] = (3, 2, 1)  # pool-conv steps D at exits 1..3
    criterion: str | None = None  # default: the task's
    conf_threshold: float | None = None  # default: the task's
    top_ratio: float = 0.5  # for criterion "top_ratio": share of pixels masked out (most confident first)
    random_compute_prob: float = 0.5  # for criterion "random"
    random_seed: int = 0
    execution: str = "emulate"  # how masked convs run: "emulate", "sparse" or "auto" (execution.py)

    @property
    def backbone_spec(self) -> BackboneSpec:
        return BACKBONES[self.backbone]

    @property
    def task_spec(self) -> TaskSpec:
        return TASKS[self.task]

    @property
    def outputs(self) -> int:
        return self.num_classes if self.num_classes is not None else self.task_spec.num_outputs

    @property
    def head_channels(self) -> int:
        return self.inter_channels if self.inter_channels is not None else RH_INTER_CHANNELS[self.backbone]

    @property
    def criterion_name(self) -> str:
        return self.criterion if self.criterion is not None else self.task_spec.criterion

    @property
    def threshold(self) -> float:
        if self.conf_threshold is not None:
            return self.conf_threshold
        return DEFAULT_THRESHOLDS.get(self.criterion_name, 0.0)

    @property
    def num_exits(self) -> int:
        return 1 if self.exit_head == "none" else 4

    def validate(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; known: {sorted(BACKBONES)}")
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; known: {sorted(TASKS)}")
        if self.exit_head not in ("none", "ee", "rh"):
            raise ValueError(f"exit_head must be 'none', 'ee' or 'rh', got {self.exit_head!r}")
        if self.confidence_adaptive and self.exit_head == "none":
            raise ValueError("confidence adaptivity needs early exits (exit_head 'ee' or 'rh')")
        if self.outputs < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.outputs}")
        if self.head_channels < 1:
            raise ValueError(f"inter_channels must be >= 1, got {self.head_channels}")
        if any(d < 1 for d in self.rh_depths) or len(self.rh_depths) != 3:
            raise ValueError(f"rh_depths must be three integers >= 1, got {self.rh_depths}")
        if not 0.0 <= self.top_ratio <= 1.0:
            raise ValueError(f"top_ratio must be in [0, 1], got {self.top_ratio}")
        if not 0.0 <= self.random_compute_prob <= 1.0:
            raise ValueError(f"random_compute_prob must be in [0, 1], got {self.random_compute_prob}")
        for stage in self.backbone_spec.stages():
            if len(stage.num_blocks) != stage.num_branches:
                raise ValueError(
                    f"{self.backbone}: num_branches ({stage.num_branches}) != len(num_blocks) ({len(stage.num_blocks)})"
                )
