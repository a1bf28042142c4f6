"""Building the node's model from its ``model`` / ``checkpoint`` / ``device`` parameters, with clear errors.

``checkpoint`` is one of:

- ``calibrated-untrained`` (the default until a trained model ships): untrained weights drawn with
  :func:`anytime_perception.models.untrained.calibrate_untrained` on frames of the shipped clip at the model's
  input size (seed 0, deterministic), so that the confidence masks skip the paper's shares of pixels after each
  exit (18 / 37 / 62 %) and compute, timings and FLOPs are realistic. The labels (and keypoints) are MEANINGLESS.
  Models without confidence adaptivity (``ee_``, ``rh_``, plain) get the same random weights without calibration.
- ``""``: the network's own initialisation (near-uniform outputs: nothing is ever confident, so every exit
  computes every pixel).
- a path: a checkpoint in any layout ``create_model`` reads (see the README's "Checkpoints"). A missing or corrupt
  file raises :class:`ModelLoadError` naming the file and the problem.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .params import CALIBRATED_UNTRAINED

CALIBRATION_FRAMES = 4     # frames of the shipped clip the untrained weights are calibrated on
CALIBRATION_SEED = 0


class ModelLoadError(RuntimeError):
    """The model cannot be built as configured (unknown name, bad checkpoint, unavailable device)."""


@dataclass(frozen=True)
class LoadedModel:
    model: object                 # AnytimeHRNet, in eval mode on its device
    task: str                     # "seg" or "pose"
    weights: str                  # what the weights are, in words (logged, in /diagnostics and label_info)
    untrained: bool               # True unless a checkpoint file was loaded
    seconds: float                # time it took to build


def normalizer(model) -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset) per channel so that ``pixel * scale - offset`` is the model's normalised input."""
    spec = model.config.task_spec
    std = np.asarray(spec.std, np.float32)
    mean = np.asarray(spec.mean, np.float32)
    return 1.0 / (255.0 * std), mean / std


def normalise(rgb: np.ndarray, scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 ``pixel * scale - offset`` per channel, with OpenCV's vectorised
    kernels (1 ms for 512x1024 on one core, 4-18 ms with a permuted torch conversion)."""
    import cv2

    out = np.empty((3,) + rgb.shape[:2], np.float32)
    for c, plane in enumerate(cv2.split(rgb)):
        cv2.addWeighted(plane, float(scale[c]), plane, 0.0, -float(offset[c]), dst=out[c], dtype=cv2.CV_32F)
    return out


def clip_batch(size: tuple[int, int], count: int, model):
    """``count`` frames of the shipped clip (spread over it) resized to ``size`` and normalised for ``model``:
    (count, 3, H, W)."""
    import cv2
    import torch

    from .player import FrameSource

    source = FrameSource()
    frames = list(source.frames())
    source.close()
    picks = [frames[round(i * (len(frames) - 1) / max(count - 1, 1))] for i in range(count)]
    scale, offset = normalizer(model)
    return torch.stack([torch.from_numpy(normalise(cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA),
                                                   scale, offset)) for rgb in picks])


def load_model(name: str, checkpoint: str, device: str, input_size: tuple[int, int] | None,
               execution: str = "emulate") -> LoadedModel:
    """Build model ``name`` with the weights ``checkpoint`` says (module docstring) on ``device``, its masked
    convolutions run by ``execution`` ("emulate" or "sparse"). ``input_size`` (H, W) is the size frames are resized
    to (the calibration size); None = the shipped clip's. Raises ModelLoadError with a message fit for a log line."""
    import torch

    from ..models import create_model, list_models
    from ..models.checkpoint import CheckpointError

    started = time.perf_counter()
    if name not in list_models():
        raise ModelLoadError(f"unknown model {name!r}; known: {', '.join(list_models())}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} requested but CUDA is not available to PyTorch "
                             f"(torch {torch.__version__}); use device:=cpu")
    try:
        torch_device = torch.device(device)
    except RuntimeError as error:
        raise ModelLoadError(f"bad device {device!r}: {error}") from None
    if torch_device.type == "cuda" and (torch_device.index or 0) >= torch.cuda.device_count():
        raise ModelLoadError(f"device {device!r} requested but PyTorch sees {torch.cuda.device_count()} CUDA "
                             f"device(s) (0..{torch.cuda.device_count() - 1})")

    checkpoint = checkpoint.strip()
    untrained = True
    if checkpoint == CALIBRATED_UNTRAINED:
        from ..models.untrained import calibrate_untrained, randomise_weights

        model = create_model(name, execution=execution)
        if model.config.confidence_adaptive:
            size = input_size or (576, 768)
            images = clip_batch(size, CALIBRATION_FRAMES, model)
            with torch.inference_mode(False), torch.no_grad():
                shares = calibrate_untrained(model, images, seed=CALIBRATION_SEED)
            weights = (f"{CALIBRATED_UNTRAINED}: untrained weights calibrated on {CALIBRATION_FRAMES} frames of the "
                       f"shipped clip at {size[0]}x{size[1]} (confident after exits 1-3: "
                       f"{', '.join(f'{s:.0%}' for s in shares)}); masks and compute are realistic, "
                       "labels are MEANINGLESS")
        else:
            randomise_weights(model, CALIBRATION_SEED)
            weights = (f"{CALIBRATED_UNTRAINED}: random untrained weights ({name} has no confidence adaptivity, "
                       "so nothing to calibrate); outputs are MEANINGLESS")
    elif checkpoint == "":
        model = create_model(name, execution=execution)
        weights = ("initialisation (checkpoint ''): untrained, near-uniform outputs; nothing is ever confident, "
                   "so every exit computes every pixel")
    else:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"checkpoint {str(path)!r} does not exist or is not a file "
                                 f"(use checkpoint:={CALIBRATED_UNTRAINED} to run without trained weights)")
        try:
            model = create_model(name, checkpoint=path, execution=execution)
        except CheckpointError as error:
            raise ModelLoadError(f"cannot load checkpoint {str(path)!r} into {name}: {error}") from None
        except (OSError, RuntimeError, ValueError, EOFError) as error:   # torch.load on a corrupt file
            raise ModelLoadError(f"cannot read checkpoint {str(path)!r}: {type(error).__name__}: {error}") from None
        weights = f"checkpoint {path}"
        untrained = False
    try:
        model = model.to(torch_device).eval()
    except RuntimeError as error:       # out of device memory, a device that fails to initialise
        raise ModelLoadError(f"cannot move {name} to {device!r}: {error}") from None
    return LoadedModel(model, model.config.task, weights, untrained, time.perf_counter() - started)
