"""Building the node's model from its ``model`` / ``checkpoint`` / ``device`` parameters, with clear errors.

``checkpoint`` is one of:

- ``pretrained`` (the default): the weights shipped inside the package for the model (``models.pretrained``: the
  person models); other models have none and say so.
- ``calibrated-untrained``: untrained weights drawn with
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

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from ..data.preprocess import clip_batch
from .params import CALIBRATED_UNTRAINED, SHIPPED_WEIGHTS

CALIBRATION_FRAMES = 4     # frames of the shipped clip the untrained weights are calibrated on
CALIBRATION_SEED = 0
WARMUP_FRAMES = 2          # frames of the shipped clip run before the node serves


class ModelLoadError(RuntimeError):
    """The model cannot be built as configured (unknown name, bad checkpoint, unavailable device)."""


@dataclass(frozen=True)
class LoadedModel:
    model: object                 # AnytimeHRNet, in eval mode on its device
    task: str                     # "seg" or "pose"
    weights: str                  # what the weights are, in words (logged, in /diagnostics and label_info)
    untrained: bool               # True unless a checkpoint file was loaded
    seconds: float                # time it took to build
    execution: str = "emulate"    # the execution that runs ("emulate", "sparse" or "triton"), whatever was asked
    execution_reason: str = ""    # why, in words (logged and in /diagnostics)
    execution_warning: str = ""   # set when what runs is known to be slow (logged as a warning)


def load_model(name: str, checkpoint: str, device: str, input_size: tuple[int, int] | None,
               execution: str = "auto") -> LoadedModel:
    """Build model ``name`` with the weights ``checkpoint`` says (module docstring) on ``device``, its masked
    convolutions run by ``execution`` ("auto", "emulate" or "sparse"; see
    :func:`anytime_perception.models.execution.resolve_execution`). ``input_size`` (H, W) is the size frames are resized
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

    from ..models.execution import resolve_execution
    from ..models.sparse import extension

    try:
        execution, execution_reason = resolve_execution(execution, torch_device)
    except ValueError as error:
        raise ModelLoadError(str(error)) from None
    execution_warning = ""
    if execution == "sparse" and (torch_device.type != "cpu" or extension() is None):
        execution_warning = (f"execution 'sparse' {execution_reason}; reinstall the package where a C++ compiler "
                             "is available (pip install .) or use execution:=auto")
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
        shipped = checkpoint == SHIPPED_WEIGHTS
        if shipped:
            from ..models.pretrained import PRETRAINED, weights_path

            if name not in PRETRAINED:
                raise ModelLoadError(f"{name} has no weights shipped with the package (models with weights: "
                                     f"{', '.join(sorted(PRETRAINED))}); set checkpoint:=/path/to/weights.pth, or "
                                     f"checkpoint:={CALIBRATED_UNTRAINED} for untrained weights")
            try:
                checkpoint = str(weights_path(name))
            except FileNotFoundError as error:
                raise ModelLoadError(str(error)) from None
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
        weights = (f"shipped weights of {name} ({path}; model card beside it)" if shipped else f"checkpoint {path}")
        untrained = False
    try:
        model = model.to(torch_device).eval()
    except RuntimeError as error:       # out of device memory, a device that fails to initialise
        raise ModelLoadError(f"cannot move {name} to {device!r}: {error}") from None
    return LoadedModel(model, model.config.task, weights, untrained, time.perf_counter() - started, execution,
                       execution_reason, execution_warning)


def measure_auto_execution(loaded: LoadedModel, requested: str, size: tuple[int, int] | None, device: str,
                           log=None) -> LoadedModel:
    """For ``execution: auto`` where the fastest execution depends on the hardware (CUDA with Triton: tiles or the
    dense emulation), time an adaptive forward of a clip frame at the input size under each and keep the faster.
    ``loaded`` is returned unchanged where there is nothing to measure (another request, a fixed choice, an input
    size known only when frames arrive, a model without confidence adaptivity)."""
    from ..models import AnytimeHRNet
    from ..models.execution import auto_candidates, time_executions

    model = loaded.model
    candidates = auto_candidates(device)
    if (requested != "auto" or not candidates or size is None or not isinstance(model, AnytimeHRNet)
            or not model.config.confidence_adaptive):
        return loaded
    seconds = time_executions(model, clip_batch(size, 1, model).to(device), candidates)
    fastest = min(seconds, key=seconds.get)
    model.set_execution(fastest, device)
    measured = ", ".join(f"{name} {1000 * s:.1f} ms" for name, s in seconds.items())
    model.execution_reason = (f"auto on {device}: {fastest} measured fastest for an adaptive forward at "
                              f"{size[0]}x{size[1]} ({measured})")
    if log is not None:
        log.info(model.execution_reason)
    return dataclasses.replace(loaded, execution=fastest, execution_reason=model.execution_reason)


def warm_up(model, size: tuple[int, int] | None, device: str, log=None):
    """Run WARMUP_FRAMES frames of the shipped clip through a throw-away runtime at the model's input size, so
    that the first real frame does not pay for one-off work (the FLOPs table the latency model reads, PyTorch's
    first calls) and the latency model starts with measured step times. Returns that latency model."""
    from ..models import AnytimeHRNet
    from ..runtime import AnytimeScheduler, Job, LatencyModel

    latency = LatencyModel()
    if size is None or not isinstance(model, AnytimeHRNet):
        return latency        # the size is known only when frames arrive: the first frame warms up
    began = time.perf_counter()
    warm = AnytimeScheduler(model, latency_model=latency, name="warm-up")
    for image in clip_batch(size, WARMUP_FRAMES, model):
        warm.submit(Job(image.to(device), stamp=0.0))
        warm.run_until_idle()
    if log is not None:
        log.info(f"warmed up on {WARMUP_FRAMES} frames in {time.perf_counter() - began:.1f} s")
    return latency
