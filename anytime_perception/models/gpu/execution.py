"""`TritonExecution`: the sparse backend on GPUs, tile-granular Triton kernels for every conv unit.

It is the CPU sparse backend (`sparse/units.py`) with its fused unit replaced for CUDA tensors: the same seam (blocks
describe their forward as `ConvUnit`s, the execution runs whole units), the same BN folding (`_fold`: weights scaled
by BN, `bact`/`ubias`/`shift`, the RBF weights and how many offsets matter) and the same rules for what it does not
run (training with autograd and unsupported convs: the emulation; BN with batch statistics: the modules). Per unit:

1. `tiles.tile_table`: active output tiles (4x4 by default) of the mask at the conv's output resolution (once per
   exit and resolution, on the device, no host sync);
2. `kernels.conv_tiles`: implicit-GEMM conv over the active tiles only (gather fused, fp32 accumulation);
3. `kernels.finish`: every output pixel: computed ones get bias, skipped ones the RBF fill and BN's affine map
   (equal to the emulation), then residual and ReLU.

Pixels of an active tile that the mask skips are computed by the conv and then overwritten by their fill: the tile,
not the pixel, is the unit of work, which is what makes the gather pay on a GPU. Exit heads are conv units too (1x1
convs with bias; pooling and upsampling between them stay PyTorch ops). Units run on CUDA tensors when Triton
imports, and on CPU tensors when the kernels were decorated under `TRITON_INTERPRET=1` (tests); every other tensor
goes to the CPU sparse backend's own paths (C++ extension or plain PyTorch ops).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..masked_conv import MaskedConv2d
from ..sparse import SparseExecution
from ..sparse.units import _supported
from .tiles import REACH, TILE, tile_table

_kernels = None
_import_error: str | None = None


def load_kernels():
    """The kernels module, imported on first use (Triton is the optional `gpu` extra and decides at import whether
    kernels are compiled or interpreted), or None when Triton does not import."""
    global _kernels, _import_error
    if _kernels is None and _import_error is None:
        try:
            from . import kernels
            _kernels = kernels
        except ImportError as error:
            _import_error = f"Triton not importable ({type(error).__name__}: {error}; pip install .[gpu])"
    return _kernels


def triton_error() -> str | None:
    """Why the Triton kernels cannot run anywhere (None when Triton imports)."""
    load_kernels()
    return _import_error


def kernels_run_on(device: torch.device | str) -> bool:
    """Whether Triton kernels run tensors on `device`: CUDA when Triton imports, CPU under its interpreter."""
    kind = torch.device(device).type
    if kind not in ("cuda", "cpu"):
        return False
    kernels = load_kernels()
    return kernels is not None and (kind == "cuda" or kernels.INTERPRETED)


class TritonExecution(SparseExecution):
    """Masked convolutions over active tiles with Triton kernels (see the module docstring); `tile`: tile edge."""

    name = "triton"

    def __init__(self, tile: int = TILE, **sparse_options):
        if tile < 4 or tile & (tile - 1):
            raise ValueError(f"tile must be a power of two >= 4 (tl.dot takes >= 16 rows; the fill reaches "
                             f"{REACH} pixels), got {tile}")
        super().__init__(**sparse_options)
        self.tile = tile

    def describe(self, device: torch.device | str = "cpu") -> str:
        if kernels_run_on(device):
            mode = "interpreted" if torch.device(device).type == "cpu" else "compiled"
            return f"triton ({self.tile}x{self.tile} active tiles, {mode} kernels)"
        why = triton_error() or f"no Triton kernels for {torch.device(device).type} outside the interpreter"
        return f"{super().describe(device)}; {why}"

    def unit(self, conv: MaskedConv2d, bn: nn.BatchNorm2d | None, relu: bool, x: Tensor, mask,
             residual: Tensor | None = None) -> Tensor:
        """relu(BN(masked_conv(x)) + residual) with the emulation's semantics; BN must be in eval mode."""
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad or (
            residual is not None and residual.requires_grad) or (bn is not None and bn.weight.requires_grad))
        if needs_grad or not _supported(conv) or not kernels_run_on(x.device):
            return super().unit(conv, bn, relu, x, mask, residual)
        if self.stats is not None:
            self.stats["triton"] = self.stats.get("triton", 0) + 1
        b, _, h, w = x.shape
        ho, wo = conv.output_size(h, w)
        folded = self._fold(conv, bn, x.dtype, x.device)
        table = tile_table(mask, ho, wo, self.tile)
        kernels = load_kernels()
        y = kernels.conv_tiles(x, folded.gemm_weight(), table, conv.kernel_size[0], conv.stride[0], conv.padding[0])
        out = torch.empty((b, conv.out_channels, ho, wo), dtype=x.dtype, device=x.device,
                          memory_format=torch.channels_last)
        return kernels.finish(y, table, folded.rbf, folded.nuse, folded.bact, folded.ubias, folded.shift, residual,
                              relu, out)
