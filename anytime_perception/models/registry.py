"""Model names and `create_model`, timm-style: `{variant}_{arch}_{task}`, e.g. `adpc_hrnet_w48_seg`.

Variants (paper Tables 1-2): no prefix = the plain one-exit HRNet baseline; `ee` = early exits with the original
heads; `rh` = early exits with redesigned heads; `adpc` = redesigned heads + confidence adaptivity (the full
method). Archs: `hrnet_w48`, `hrnet_w18s` (HRNetV2-W18-Small-v2) for `seg`; `hrnet_w32` (the paper's) and
`hrnet_w18s` (ours: the concatenated HRNetV2 representation, as in the segmentation network) for `pose`.
Models with weights shipped in the package (`pretrained.py`) are registered under their own names, e.g.
`adpc_hrnet_w18s_person_seg`, and load them with `create_model(name, pretrained=True)`.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import os

import torch

from .anytime import AnytimeHRNet
from .checkpoint import load_checkpoint
from .configs import ModelConfig
from .pretrained import PRETRAINED, weights_path

VARIANTS = {
    "": dict(exit_head="none", confidence_adaptive=False),
    "ee": dict(exit_head="ee", confidence_adaptive=False),
    "rh": dict(exit_head="rh", confidence_adaptive=False),
    "adpc": dict(exit_head="rh", confidence_adaptive=True),
}
ARCHS_BY_TASK = {"seg": ("hrnet_w48", "hrnet_w18s"), "pose": ("hrnet_w32", "hrnet_w18s")}


def _model_configs() -> dict[str, ModelConfig]:
    configs = {}
    for task, archs in ARCHS_BY_TASK.items():
        for arch in archs:
            for prefix, variant in VARIANTS.items():
                name = f"{prefix}_{arch}_{task}" if prefix else f"{arch}_{task}"
                configs[name] = ModelConfig(backbone=arch, task=task, **variant)
    for name, shipped in PRETRAINED.items():
        configs[name] = dataclasses.replace(configs[shipped.base], **shipped.overrides)
    return configs


MODEL_CONFIGS: dict[str, ModelConfig] = _model_configs()
OVERRIDABLE = {f.name for f in dataclasses.fields(ModelConfig)} - {"backbone", "task", "exit_head",
                                                                   "confidence_adaptive"}


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style `pattern`."""
    return sorted(n for n in MODEL_CONFIGS if fnmatch.fnmatch(n, pattern))


def model_config(name: str, **overrides) -> ModelConfig:
    """The config of model `name` with `overrides` applied and validated."""
    if name not in MODEL_CONFIGS:
        close = [n for n in MODEL_CONFIGS if name.split("_")[-1] in n] or list_models()
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(close))}")
    unknown = set(overrides) - OVERRIDABLE
    if unknown:
        raise ValueError(f"unknown override(s) {sorted(unknown)} for {name}; allowed: {sorted(OVERRIDABLE)}")
    config = dataclasses.replace(MODEL_CONFIGS[name], **overrides)
    config.validate()
    return config


def create_model(name: str, checkpoint: str | os.PathLike | None = None, device: str | torch.device | None = None,
                 pretrained: bool = False, **overrides) -> AnytimeHRNet:
    """Build a registered model. `checkpoint` loads weights in any supported layout (see checkpoint.py);
    `pretrained=True` loads the weights shipped with the package (models of `pretrained.PRETRAINED` only);
    overrides: num_classes, conf_threshold, criterion, top_ratio, inter_channels, rh_depths, execution, ...
    `execution` ("auto", "sparse" or "emulate", see execution.py) is resolved for `device` (default: the CPU)."""
    if pretrained:
        if checkpoint is not None:
            raise ValueError("give either checkpoint or pretrained=True, not both")
        checkpoint = weights_path(name)
    model = AnytimeHRNet(model_config(name, **overrides))
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    if device is not None:
        model.to(device)
        model.set_execution(model.config.execution, device)
    return model.eval()
