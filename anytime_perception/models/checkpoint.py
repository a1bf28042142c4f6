"""Loading weights from every layout the HRNet / ADP-C ecosystem ships, detected from the keys.

Layouts:
- `anytime`: the authors' ADP-C / EE / RH training checkpoints (keys `model.<...>` incl. `model.exit1.*`, per-conv
  `Lambda` and `square_dis` for ADP-C, and `loss.criterion.weight`, dropped);
- `hrnet_seg`: HRNet-Semantic-Segmentation models (`model.<backbone>`, `model.last_layer.*`, `loss.*` dropped);
- `hrnet_pose`: deep-high-resolution-net pose models (bare keys, `final_layer.*`);
- `imagenet`: HRNet-Image-Classification weights (bare keys; `incre_modules`, `downsamp_modules`, `final_layer`,
  `classifier` dropped): backbone only;
- `native`: what `save_checkpoint` writes (bare keys of this package's models, with the model config).
Each layout covers a known part of the model; everything in that part must be present with the right shape and
finite values, and nothing unknown may be left over, or loading fails before any weight is touched, naming the
file and the first offending keys. Parts a layout does not cover (e.g. the exits, when starting from an HRNet segmentation model)
keep their initialisation and are reported in the returned `LoadReport` and the log.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

NATIVE_FORMAT = "anytime_perception/1"
BACKBONE_PREFIXES = ("conv1.", "bn1.", "conv2.", "bn2.", "layer1.", "transition", "stage")
IMAGENET_HEAD_PREFIXES = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")
# Parameters the file may lack: BN counters (files from torch 0.4), and the RBF parameters when an EE/RH
# checkpoint starts an ADP-C model (Lambda then keeps its init 3.0; square_dis is a constant).
OPTIONAL_SUFFIXES = (".num_batches_tracked", ".Lambda", ".square_dis")
SHOW = 5


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded into the model; the message names the file and the offending keys."""


@dataclass
class LoadReport:
    path: str
    layout: str
    loaded: int
    kept_initialised: list[str] = field(default_factory=list)  # model parts the layout does not provide
    defaulted: list[str] = field(default_factory=list)  # optional keys the file lacked (Lambda, BN counters)
    dropped: list[str] = field(default_factory=list)  # file keys with no place in this model, dropped by rule


def _first(keys, n: int = SHOW) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict]:
    """Load a file and unwrap it to a flat {key: tensor}; also returns the wrapper's metadata."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for non-checkpoints
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({type(exc).__name__}: {str(exc)[:200]})") from None
    meta: dict = {}
    if isinstance(obj, dict):
        for wrapper in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(wrapper)
            if isinstance(inner, dict) and inner and all(isinstance(v, Tensor) for v in inner.values()):
                meta = {k: v for k, v in obj.items() if k != wrapper}
                obj = inner
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state dict (expected a mapping of parameter names to tensors, "
                              f"got {type(obj).__name__})")
    if all(k.startswith("module.") for k in obj):  # saved from DataParallel / DDP
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj), meta


def detect_layout(keys) -> str:
    keys = list(keys)
    if sum(k.startswith("model.") for k in keys) > len(keys) // 2:
        return "anytime" if any(k.startswith("model.exit1.") for k in keys) else "hrnet_seg"
    if any(k.startswith(IMAGENET_HEAD_PREFIXES[:2]) or k.startswith("classifier.") for k in keys):
        return "imagenet"
    if any(k.startswith("final_layer.") for k in keys) and not any(k.startswith("exit1.") for k in keys):
        return "hrnet_pose"
    return "native"


def _normalise(state: dict[str, Tensor], layout: str) -> tuple[dict[str, Tensor], list[str]]:
    """Map a file's keys to this package's names; return the mapped dict and the keys dropped by rule."""
    dropped = []
    out = {}
    for k, v in state.items():
        if layout in ("anytime", "hrnet_seg"):
            if not k.startswith("model."):
                dropped.append(k)  # loss.criterion.weight (class weights of the training loss)
                continue
            k = k[len("model."):]
        elif layout == "imagenet" and k.startswith(IMAGENET_HEAD_PREFIXES):
            dropped.append(k)
            continue
        out[k] = v
    return out, dropped


def _covered(model_keys, layout: str) -> set[str]:
    """Model keys the layout is expected to provide."""
    def part(k: str) -> str:
        return k.split(".", 1)[0]

    if layout == "imagenet":
        return {k for k in model_keys if k.startswith(BACKBONE_PREFIXES)}
    if layout in ("hrnet_seg", "hrnet_pose"):
        return {k for k in model_keys if k.startswith(BACKBONE_PREFIXES) or part(k) in ("last_layer", "final_layer")}
    return set(model_keys)


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> LoadReport:
    """Load `path` into `model` (all or nothing). Raises CheckpointError with the file and first offending keys."""
    state, meta = read_state_dict(path)
    layout = detect_layout(state)
    if layout == "native" and isinstance(meta.get("model_config"), dict) and hasattr(model, "config"):
        _check_native_config(path, meta["model_config"], model.config)
    state, dropped = _normalise(state, layout)
    target = model.state_dict()
    covered = _covered(target, layout)

    unexpected = set(state) - set(target)
    # Files of adaptive models carry Lambda/square_dis; a non-adaptive model has no place for them.
    rbf_extra = {k for k in unexpected if k.endswith((".Lambda", ".square_dis"))}
    # ImageNet (and pose-from-ImageNet) files fuse every branch in the last module; pose keeps branch 0 only.
    fuse_extra = {k for k in unexpected if layout == "imagenet" and re.match(r"stage4\.\d+\.fuse_layers\.[1-9]", k)}
    unexpected -= rbf_extra | fuse_extra
    dropped += sorted(rbf_extra | fuse_extra)
    if unexpected:
        raise CheckpointError(
            f"{path}: {len(unexpected)} key(s) of this {layout} checkpoint have no place in the model "
            f"(wrong architecture or task?): {_first(unexpected)}")
    missing = covered - set(state)
    optional_missing = {k for k in missing if k.endswith(OPTIONAL_SUFFIXES)}
    if missing - optional_missing:
        raise CheckpointError(f"{path}: {len(missing - optional_missing)} key(s) missing from this {layout} "
                              f"checkpoint (wrong architecture?): {_first(missing - optional_missing)}")
    mismatched = [k for k in state if k in target and state[k].shape != target[k].shape]
    if mismatched:
        detail = ", ".join(f"{k} file {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
                           for k in mismatched[:SHOW])
        raise CheckpointError(f"{path}: {len(mismatched)} shape mismatch(es) (wrong architecture or number of "
                              f"classes?): {detail}")
    loading = {k: v for k, v in state.items() if k in target}
    non_finite = [k for k, v in loading.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if non_finite:
        raise CheckpointError(f"{path}: {len(non_finite)} tensor(s) hold NaN or infinite values (diverged training "
                              f"or a corrupted file?): {_first(non_finite)}")
    model.load_state_dict(loading, strict=False)
    if isinstance(meta.get("labels"), dict) and hasattr(model, "labels"):
        model.labels = meta["labels"]

    kept = sorted({k.split(".", 1)[0] for k in set(target) - covered})
    report = LoadReport(path=str(path), layout=layout, loaded=len(set(state) & set(target)), kept_initialised=kept,
                        defaulted=sorted(optional_missing), dropped=dropped)
    log.info("loaded %d tensors from %s (%s layout)", report.loaded, path, layout)
    if kept:
        log.warning("%s provides no weights for %s: they keep their initialisation", path, ", ".join(kept))
    lambdas = [k for k in optional_missing if k.endswith(".Lambda")]
    if lambdas:
        log.warning("%s has no RBF Lambda for %d masked convs: they keep the initial value 3.0", path, len(lambdas))
    return report


def _check_native_config(path, saved: dict, config) -> None:
    for key in ("backbone", "task", "exit_head", "confidence_adaptive"):
        if key in saved and saved[key] != getattr(config, key):
            raise CheckpointError(f"{path}: saved for {key}={saved[key]!r}, but the model has "
                                  f"{key}={getattr(config, key)!r}")


def save_checkpoint(model: nn.Module, path: str | os.PathLike, **extra) -> None:
    """Save in the native layout, with the model config so loading can check the architecture."""
    payload = {"format": NATIVE_FORMAT, "state_dict": model.state_dict(), **extra}
    if hasattr(model, "config"):
        cfg = dataclasses.asdict(model.config)
        cfg["rh_depths"] = list(cfg["rh_depths"])
        payload["model_config"] = cfg
    torch.save(payload, path)
