"""Weights that ship inside the package: small person models trained by `tools/make_default_models`.

No Cityscapes or MPII weights can ship (their licences and sizes), so the package carries two models distilled from
teacher models on real frames of two clips (vtest.avi, bikes.mp4). Each has a model card beside its weights
(`assets/models/NAME.md`: data, teachers, per-exit accuracy on held-out frames, GFLOPs, CPU time, licences) and a
small JSON of the figures the tests hold it to. They are a demo and a starting point, not general person models.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class PretrainedModel:
    base: str                          # the registered architecture it is built from
    input_size: tuple[int, int]        # (H, W) it was trained and evaluated at: whole frames (seg) or person crops
    overrides: dict = field(default_factory=dict)
    summary: str = ""


PRETRAINED: dict[str, PretrainedModel] = {
    "adpc_hrnet_w18s_person_seg": PretrainedModel(
        base="adpc_hrnet_w18s_seg", input_size=(576, 768), overrides={"num_classes": 2},
        summary="background/person segmentation of pedestrians seen from above (vtest.avi) and in street traffic "
                "(bikes.mp4); whole 768x576 frames"),
    "adpc_hrnet_w18s_person_pose": PretrainedModel(
        base="adpc_hrnet_w18s_pose", input_size=(128, 128),
        summary="16 MPII joints on 128x128 crops of one person (the detector box enlarged 1.25x)"),
}


def _asset(name: str, suffix: str) -> Path:
    return Path(str(resources.files("anytime_perception") / "assets" / "models" / f"{name}{suffix}"))


def weights_path(name: str) -> Path:
    """The shipped weights file of pretrained model `name`; ValueError names the models that have weights."""
    if name not in PRETRAINED:
        raise ValueError(f"{name!r} has no shipped weights; models with weights: {', '.join(sorted(PRETRAINED))} "
                         "(other models: a checkpoint file, e.g. the authors' Cityscapes/MPII weights)")
    path = _asset(name, ".pth")
    if not path.is_file():
        raise FileNotFoundError(f"the shipped weights of {name} are missing from the installed package ({path}); "
                                "reinstall anytime_perception")
    return path


def model_card(name: str) -> Path:
    """The model card (Markdown) of pretrained model `name`."""
    weights_path(name)
    return _asset(name, ".md")


def card_figures(name: str) -> dict:
    """The figures measured when the weights were made (`tools/make_default_models`, stage `card`): per-exit
    accuracy on the held-out split and on the frames shipped for tests."""
    weights_path(name)
    return json.loads(_asset(name, ".json").read_text())
