"""One namespace for a training run: a YAML file gives values, command-line flags override them.

Every field of `TrainConfig` is a YAML key and a flag (`lr_schedule` <-> `--lr-schedule`), so anything a shipped
config sets can be changed for one run without editing the file. The resolved configuration is written to
`OUTPUT/config.yaml`; `--resume` reads it back, so a resumed run continues with exactly the settings it started with
(flags given with `--resume` may only extend `iters`/`epochs`, change logging or the number of workers).
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

from ..argtypes import parse_floats, parse_size


@dataclass
class TrainConfig:
    """Defaults follow the authors' segmentation recipe (official-code-notes.md section 5); the shipped YAML files in
    config/train/ set the rest per paper run."""

    model: str = "adpc_hrnet_w18s_seg"
    num_classes: int | None = None  # default: the dataset's
    dataset: str = "cityscapes"  # cityscapes | mpii | folder | folder_pose
    data_root: str | None = None
    split: str = "train"
    crop: tuple[int, int] | None = None  # seg: random crop HxW (default: the dataset's, Cityscapes 512x1024);
    #                                      pose: the person crop (default 256x256; heatmaps are 1/4 of it)
    base_size: int | None = None  # seg random scale is relative to this long side (default: the dataset's)
    scale_range: tuple[float, float] | None = None  # seg random scale range (default: the authors' 0.5-2.1)
    batch_size: int = 3  # per process
    iters: int | None = None  # total optimiser steps; or
    epochs: int | None = None  # total passes over the data (iters = epochs * batches per epoch)
    optimizer: str = "sgd"  # sgd | adam
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4  # SGD only: the authors' Adam ignores weight decay
    lr_schedule: str = "poly"  # poly: lr * (1 - it / iters) ** poly_power | step: x lr_step_factor at lr_steps
    poly_power: float = 0.9
    lr_steps: tuple[float, ...] = (0.81, 0.952)  # step schedule: fractions of the run (pose: epochs 170, 200 of 210)
    lr_step_factor: float = 0.1
    exit_weights: tuple[float, ...] | None = None  # default: 1 per exit
    class_weights: str = "dataset"  # dataset (Cityscapes: the authors' weights) | none
    prior_bias: bool = False  # seg from scratch: classifier biases start at the log class frequencies
    ca_start_iter: int = 0  # adpc models: confidence adaptivity on from this iteration (0: from the start)
    bn_momentum: float | None = None  # default: the backbone's (seg 0.01, pose 0.1)
    precise_bn_batches: int = 50  # batches for recomputing BN statistics at the end (0: off)
    amp: str = "auto"  # auto | none | bf16 | fp16 (auto: bf16 on CPUs with native bf16 and on GPUs that have it)
    workers: int = 2
    device: str = "cpu"  # cpu | cuda
    init: str | None = None  # weights to start from: ImageNet, HRNet, the authors' or this package's checkpoints
    output: str = "output/train"
    resume: bool = False
    log_every: int = 10
    checkpoint_every: int = 500
    seed: int = 0
    stop_at: int | None = None  # stop with a checkpoint after this iteration; --resume continues
    extra: dict = field(default_factory=dict)  # free-form notes carried into the checkpoint (e.g. the data's origin)

    def validate(self) -> None:
        if self.data_root is None:
            raise ValueError("no --data-root given (the dataset's folder)")
        if (self.iters is None) == (self.epochs is None):
            raise ValueError("give exactly one of --iters and --epochs")
        if (self.iters or 1) < 1 or (self.epochs or 1) < 1:
            raise ValueError("--iters/--epochs must be >= 1")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"--optimizer must be sgd or adam, got {self.optimizer!r}")
        if self.lr_schedule not in ("poly", "step"):
            raise ValueError(f"--lr-schedule must be poly or step, got {self.lr_schedule!r}")
        if self.amp not in ("auto", "none", "bf16", "fp16"):
            raise ValueError(f"--amp must be auto, none, bf16 or fp16, got {self.amp!r}")
        if self.class_weights not in ("dataset", "none"):
            raise ValueError(f"--class-weights must be dataset or none, got {self.class_weights!r}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"--device must be cpu or cuda, got {self.device!r}")
        if self.scale_range is not None and (len(self.scale_range) != 2
                                             or not 0 < self.scale_range[0] <= self.scale_range[1]):
            raise ValueError(f"--scale-range must be two numbers 0 < min <= max, got {self.scale_range}")


CHOICES = {"dataset": ("cityscapes", "mpii", "folder", "folder_pose"), "optimizer": ("sgd", "adam"),
           "lr_schedule": ("poly", "step"), "class_weights": ("dataset", "none"),
           "amp": ("auto", "none", "bf16", "fp16"), "device": ("cpu", "cuda")}
METAVARS = {"crop": "HxW", "scale_range": "MIN,MAX", "lr_steps": "F,F", "exit_weights": "W,W,W,W"}
FLAG_TYPES = {"crop": parse_size, "scale_range": parse_floats, "lr_steps": parse_floats, "exit_weights": parse_floats}
HELP = {
    "model": "registered model name (anytime-perception list)",
    "dataset": "cityscapes | mpii | folder | folder_pose",
    "data_root": "the dataset's folder, in its real layout",
    "crop": "seg: training crop HxW (default: the dataset's); pose: person crop (default 256x256)",
    "iters": "total optimiser steps (or --epochs)",
    "init": "checkpoint to start from (ImageNet, HRNet, the authors' ADP-C, or this package's)",
    "resume": "continue the run in --output from its last checkpoint, up to its --iters/--epochs",
    "output": "run folder: config.yaml, log.jsonl, checkpoint_last.pth, model_final.pth",
    "stop_at": "stop with a checkpoint after this iteration (continue later with --resume)",
    "prior_bias": "seg: start every exit classifier's bias at the log frequency of its class in the training labels "
                  "(focal loss's prior initialisation; from scratch with a rare class, without it Adam can push every "
                  "classifier weight of the rare class negative and the class never wins); ignored with --init",
    "config": "YAML file of run settings (keys as these flags, with underscores)",
}
RESUME_MAY_CHANGE = {"iters", "epochs", "log_every", "checkpoint_every", "workers", "resume", "output",
                     "precise_bn_batches", "stop_at"}


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per config field; defaults are None so that only flags actually given override the YAML."""
    parser.add_argument("--config", default=None, help=HELP["config"])
    for f in dataclasses.fields(TrainConfig):
        if f.name == "extra":
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        helptext = HELP.get(f.name, "") + (f" (default: {default})" if default is not None else "")
        if f.type in ("bool", bool):
            parser.add_argument(flag, action="store_true", default=None, help=helptext)
            continue
        parser.add_argument(flag, type=FLAG_TYPES.get(f.name, _scalar_type(f)), default=None, help=helptext,
                            choices=CHOICES.get(f.name), metavar=METAVARS.get(f.name))


def _scalar_type(f: dataclasses.Field):
    text = str(f.type)
    if "int" in text and "float" not in text:
        return int
    if "float" in text:
        return float
    return str


def load_yaml(path: str | Path) -> dict:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown setting(s) {unknown}; known: {sorted(known)}")
    return data


def coerce(values: dict) -> dict:
    """YAML lists and strings to the field types (sizes 'HxW' or [H, W], tuples)."""
    out = dict(values)
    hints = typing.get_type_hints(TrainConfig)
    for key, value in values.items():
        if value is None:
            continue
        if key == "crop":
            out[key] = parse_size(value) if isinstance(value, str) else tuple(int(v) for v in value)
        elif key in ("scale_range", "lr_steps", "exit_weights"):
            out[key] = parse_floats(value) if isinstance(value, str) else tuple(float(v) for v in value)
        elif hints.get(key) in (float, float | None) and isinstance(value, (int, str)):
            out[key] = float(value)
    return out


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults < the run's saved config (with --resume) or --config YAML < flags given."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if f.name != "extra" and getattr(args, f.name, None) is not None}
    values: dict = {}
    if given.get("resume"):
        output = Path(given.get("output") or (load_yaml(args.config).get("output") if args.config else None)
                      or TrainConfig.output)
        saved = output / "config.yaml"
        if not saved.is_file():
            raise ValueError(f"--resume: {saved} not found (nothing to resume in {output})")
        values = load_yaml(saved)
        changed = sorted(k for k, v in coerce(given).items()
                         if k not in RESUME_MAY_CHANGE and coerce({k: values.get(k)}).get(k) != v)
        if changed:
            raise ValueError(f"--resume continues {output} with its saved settings; these flags would change them: "
                             f"{changed} (start a new --output instead)")
    elif args.config:
        values = load_yaml(args.config)
    if "iters" in given or "epochs" in given:  # a run's length given as a flag replaces the file's, either way
        values.pop("iters", None)
        values.pop("epochs", None)
    values.update(given)
    config = TrainConfig(**coerce(values))
    config.validate()
    return config


def save_config(config: TrainConfig, path: Path) -> None:
    import yaml

    data = dataclasses.asdict(config)
    for key, value in data.items():
        if isinstance(value, tuple):
            data[key] = list(value)
    data["resume"] = False
    data["stop_at"] = None  # a stop belongs to one invocation, not to the run
    path.write_text(yaml.safe_dump(data, sort_keys=False))
