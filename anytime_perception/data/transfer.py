"""An exit's tensors to host arrays in one copy (the node's download, the counterpart of `preprocess`'s upload).

On a GPU every `.cpu()` and `float(t)` is a blocking copy of its own that waits for the stream; an exit's outputs
(class ids, confidence, computed mask, computed fraction and GFLOPs) would take five. `to_host` packs them into one
device byte buffer (each tensor at an 8-byte aligned offset), copies that once into pinned host memory and waits
once, then views the bytes as the original dtypes and shapes. CPU tensors are returned as numpy views without a
copy; `packed=True` forces the packing on CPU tensors too, which is how the tests check it without a GPU.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

ALIGNMENT = 8  # bytes: every numpy dtype the exits use (up to float64) is aligned at any multiple of 8


def to_host(tensors: Mapping[str, Tensor], packed: bool | None = None) -> dict[str, np.ndarray]:
    """Host numpy arrays of `tensors` (all on one device; any dtype numpy has, not bfloat16), by the same names.

    Arrays of a packed copy share one host buffer and are read-only views of it; CPU arrays share the tensors'
    memory. `packed`: None packs only tensors off the CPU."""
    if not tensors:
        return {}
    devices = {t.device for t in tensors.values()}
    if len(devices) > 1:
        raise ValueError(f"tensors on several devices: {sorted(str(d) for d in devices)}")
    device = devices.pop()
    flat = [t.detach().contiguous() for t in tensors.values()]
    if not (packed if packed is not None else device.type != "cpu"):
        return {name: t.numpy() for name, t in zip(tensors, flat)}
    offsets, total = [], 0
    for t in flat:
        offsets.append(total)
        total += -(-t.numel() * t.element_size() // ALIGNMENT) * ALIGNMENT
    staging = torch.empty(total, dtype=torch.uint8, device=device)
    for t, start in zip(flat, offsets):
        raw = t.reshape(-1).view(torch.uint8)
        staging[start:start + raw.numel()].copy_(raw)
    host = torch.empty(total, dtype=torch.uint8, pin_memory=device.type == "cuda")
    host.copy_(staging, non_blocking=True)
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()
    raw_host = host.numpy()
    arrays = {}
    for name, t, start in zip(tensors, flat, offsets):
        dtype = _numpy_dtype(t.dtype)
        array = raw_host[start:start + t.numel() * dtype.itemsize].view(dtype).reshape(tuple(t.shape))
        array.flags.writeable = False
        arrays[name] = array
    return arrays


def exit_tensors(exit_result, batch_index: int) -> dict[str, Tensor]:
    """What every exit of one image publishes besides its task's outputs, on the exit's device: "cost" (computed
    fraction, GFLOPs; float64) and, when the exit skipped pixels, "computed" (uint8, 255 = computed at this exit)."""
    tensors = {"cost": torch.stack([exit_result.computed_fraction[batch_index],
                                    exit_result.gflops[batch_index]]).double()}
    if exit_result.compute_mask is not None:
        tensors["computed"] = (exit_result.compute_mask[batch_index] > 0.5).to(torch.uint8) * 255
    return tensors


def segmentation_tensors(exit_result, batch_index: int) -> dict[str, Tensor]:
    """`exit_tensors` plus "confidence" (float32) and "labels" (uint8 class ids) when the criterion took them or the
    logits are off the CPU; on the CPU numpy's argmax of the logits is faster (`ros.outputs.class_ids`)."""
    tensors = exit_tensors(exit_result, batch_index)
    tensors["confidence"] = exit_result.confidence[batch_index].float()
    if getattr(exit_result, "labels", None) is not None:
        tensors["labels"] = exit_result.labels[batch_index].to(torch.uint8)
    elif exit_result.logits.device.type != "cpu":
        tensors["labels"] = exit_result.logits[batch_index].argmax(dim=0).to(torch.uint8)
    return tensors


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    if dtype == torch.bfloat16:
        raise TypeError("numpy has no bfloat16: convert the tensor to float32 before the download")
    return torch.empty(0, dtype=dtype).numpy().dtype
