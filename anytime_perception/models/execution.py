"""Executions by name: how the masked convolutions of a confidence-adaptive model are computed.

- "emulate": the authors' semantics, a dense conv then mask and RBF fill (no savings; any device);
- "sparse": only the computed pixels (`sparse/`), on the C++ extension where it is built (CPU), else on plain
  PyTorch ops (any device; on CPU slower than the dense model);
- "triton": the sparse backend on GPUs (`gpu/`): Triton kernels over active 4x4 output tiles, what "sparse" runs
  on CUDA when Triton imports (`pip install .[gpu]`); on CPU tensors only under Triton's interpreter (tests),
  otherwise the CPU sparse backend;
- "auto": the fastest measured for the device: sparse when the C++ extension loads and the device is the CPU
  (measured in `benchmarks/sparse_speedup.py`), otherwise emulate. On CUDA with Triton, whether the tiles beat the
  dense emulation depends on the GPU, the model, the input size and how much the masks skip, so "auto" resolves to
  emulate and a caller that knows its input size measures both (`auto_candidates`, `time_executions`: the node
  does at warm-up) and keeps the faster.

`resolve_execution` says which one runs and why; the model keeps both (`AnytimeHRNet.execution`,
`AnytimeHRNet.execution_reason`) so that a node can log and report them.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from .gpu import TritonExecution, kernels_run_on, triton_error
from .masked_conv import ConvExecution, EmulatedExecution
from .sparse import SparseExecution, extension, load_error

EXECUTIONS: dict[str, Callable[[], ConvExecution]] = {
    "emulate": EmulatedExecution,
    "sparse": SparseExecution,
    "triton": TritonExecution,
}
AUTO = "auto"
EXECUTION_NAMES = (AUTO, *EXECUTIONS)


def resolve_execution(name: str, device: torch.device | str | None = None) -> tuple[str, str]:
    """(the execution that runs for `name` on `device`, why). Raises ValueError for an unknown name."""
    if name not in EXECUTION_NAMES:
        raise ValueError(f"unknown execution {name!r}; known: {', '.join(EXECUTION_NAMES)}")
    kind = torch.device(device if device is not None else "cpu").type
    if name != AUTO:
        if name == "sparse" and kind == "cuda" and kernels_run_on(kind):
            return "triton", "requested sparse on cuda: Triton kernels over active tiles (unmeasured)"
        if name == "triton" and not kernels_run_on(kind):
            why = triton_error() or f"no Triton kernels for {kind} outside the interpreter"
            return name, f"requested; {why}: the CPU sparse backend's paths run"
        if name == "sparse" and (kind != "cpu" or extension() is None):
            detail = (f"no sparse kernels for {kind}" if kind != "cpu"
                      else f"the C++ extension is not loaded ({load_error() or 'not built'})")
            return name, f"requested; {detail}: plain PyTorch ops, slower than the dense model"
        return name, "requested"
    if kind == "cpu":
        if extension() is not None:
            return "sparse", "auto on cpu: the sparse C++ extension is loaded"
        return "emulate", (f"auto on cpu: the sparse C++ extension is not loaded ({load_error() or 'not built'}; "
                           "`python -m anytime_perception.models.sparse.build`), and plain PyTorch ops are slower")
    if auto_candidates(kind):
        return "emulate", (f"auto on {kind}: the emulation until the Triton tiles are measured faster at the input "
                           "size")
    return "emulate", f"auto on {kind}: no sparse backend for {kind} has been measured faster than the emulation"


def auto_candidates(device: torch.device | str) -> tuple[str, ...]:
    """The executions "auto" chooses between by measuring on `device` at the input size; () where the choice is
    fixed (the CPU: by whether the extension loads)."""
    kind = torch.device(device).type
    return ("emulate", "triton") if kind == "cuda" and kernels_run_on(kind) else ()


def time_executions(model, images: torch.Tensor, names: Sequence[str], repeats: int = 3) -> dict[str, float]:
    """Seconds of one adaptive forward of `images` under each execution in `names`, the fastest of `repeats` after
    an untimed forward (Triton compiles, cuDNN picks algorithms, weights are folded). The model keeps the execution
    it had."""
    device = images.device
    previous = (model.execution, model.execution_reason)

    def wait():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    seconds = {}
    try:
        with torch.inference_mode():
            for name in names:
                model.set_execution(name, device)
                times = []
                for _ in range(repeats + 1):
                    wait()
                    began = time.perf_counter()
                    for _result in model.anytime(images, adaptive=True):
                        pass
                    wait()
                    times.append(time.perf_counter() - began)
                seconds[name] = min(times[1:])
    finally:
        model.execution, model.execution_reason = previous
    return seconds


def make_execution(name: str, device: torch.device | str | None = None) -> ConvExecution:
    """A new execution for `name` ("auto" resolved for `device`)."""
    return EXECUTIONS[resolve_execution(name, device)[0]]()
