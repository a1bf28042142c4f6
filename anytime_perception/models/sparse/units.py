"""`SparseExecution`: masked convolutions that compute only their active output pixels.

Same results as `EmulatedExecution` (the authors' dense emulation) up to float rounding, for every conv kind HRNet
uses. A masked conv is run as a *unit* with what follows it, as the blocks describe their forward
(`masked_conv.ConvUnit`): conv -> eval BatchNorm -> (+ residual) -> ReLU, so that

- computed pixels: the conv with BN folded into weights and bias (fp32: the extension's AVX-512 direct kernel;
  bf16: the extension's AMX tile kernel on im2col rows gathered into an L2-sized per-thread buffer, or without AMX
  im2col chunks and one GEMM per chunk), finished (bias, residual, ReLU) by the conv kernel itself while its results
  are in registers or cache; the raw conv output is kept only for rows the fill reads;
- skipped pixels next to computed ones: the RBF fill of the raw conv output, then BN's affine map;
- all other skipped pixels: the fill is zero there, so the unit's pre-activation is BN's shift `t`;
- skipped pixels get residual add and ReLU in one pass that writes them (channels_last).

Index tables come from `tables.py`, built once per exit and resolution. Per layer, when the active share exceeds a
calibrated threshold (`DENSE_ABOVE`), the conv runs densely (oneDNN) and the same pass fixes the skipped pixels.

Two implementations of the same plan: the C++ extension (`_sparse_cpu`, CPU, float32 and bfloat16; built by
`python -m anytime_perception.models.sparse.build`) and plain PyTorch ops (any device, any float dtype).
`backend="auto"` takes the extension where it applies and PyTorch ops otherwise. With autograd on (training) a unit
runs the emulation, which is differentiable and gives the same values. Folded weights are cached per conv (one
extra copy of the weights for the sparse kernel, one for the dense fallback), refreshed when a parameter changes.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..masked_conv import ConvUnit, EmulatedExecution, MaskedConv2d
from . import tables
from ._ext import extension, load_error

# Per-layer dense fallback: above this share of active output pixels a conv runs densely (oneDNN) and the fused
# epilogue fixes the skipped pixels. Keyed by (dtype, kernel, stride): ((max C_out, threshold), ...). Crossovers
# measured with `benchmarks/sparse_speedup.py --calibrate` on the development machine (2 vCPU, AVX-512 + AMX) for
# HRNet-W48's units: fp32 (direct kernel, at 512x1024 and 1024x2048) 0.85-0.95, 0.7 for the classifier; bf16 (AMX tile kernel, at 1024x2048, 2026-11-25)
# lower for few channels, because AMX makes the dense conv so fast that gathering the active rows' inputs and
# finishing them costs a good part of the whole dense conv: 0.45-0.5 for 48 and 96 channels, 0.65-0.7 for 192 (3x3)
# and for the stride-2 convs, 0.8 for 384, 0.6 for the classifier, 0.7-0.8 for 1x1 convs to 48-128 channels.
DENSE_ABOVE: dict[tuple[str, int, int], tuple[tuple[float, float], ...]] = {
    ("float32", 3, 1): ((math.inf, 0.85),),
    ("float32", 3, 2): ((math.inf, 0.9),),
    ("float32", 1, 1): ((32, 0.65), (math.inf, 0.9)),
    ("bfloat16", 3, 1): ((128, 0.45), (256, 0.65), (384, 0.75), (math.inf, 0.9)),
    ("bfloat16", 3, 2): ((256, 0.7), (math.inf, 0.8)),
    ("bfloat16", 1, 1): ((32, 0.55), (64, 0.65), (256, 0.75), (math.inf, 0.85)),
}
# The gather route (bf16, or fp32 without the direct kernel) copies 9*C_in values per computed pixel of a 3x3 conv for
# 9*C_in*C_out MACs: with few output channels the copy costs more than the GEMM saves (transition 1: 256 -> 48).
# Threshold for C_in >= 4 * C_out on that route.
GATHER_BOUND_DENSE_ABOVE = 0.5
DEFAULT_DENSE_ABOVE = 0.8
# Gathered im2col rows per GEMM: about this many bytes of A (cache-sized for fp32; oneDNN's bf16 GEMM wants more rows).
CHUNK_BYTES = {torch.float32: 1 << 20, torch.bfloat16: 4 << 20}
MIN_CHUNK_ROWS, MAX_CHUNK_ROWS = 128, 16384

# bf16 units with every pixel computed and at most this many output values run as the dense unit (measured on W18s'
# units: 3x3 18->18 at 128x256 0.46 vs 0.53 ms, 72->72 at 32x64 0.20 vs 0.22 ms; 18->18 at 256x512 1.78 vs 1.48 ms
# and 48-96 channels at 1/4 and 1/8 of 1024x2048 favour the extension's pass).
SMALL_DENSE_UNIT = 1 << 20
_EMULATE = EmulatedExecution()


@dataclass
class _Folded:
    """A conv with its eval BN folded in, in one dtype and layout."""
    key: tuple
    wt: Tensor | None  # (k*k*C_in, C_out), taps (ky, kx, c_in) as gathered; made on first use (gemm_weight)
    wp: Tensor | None  # fp32 weights packed for the extension's AVX-512 direct kernel, when it applies
    weight: Tensor  # (C_out, C_in, k, k) channels_last, for the dense fallback
    bias: Tensor  # (C_out,) bact in the activations' dtype, for the all-computed path
    bact: Tensor  # fp32 (C_out,): bias of computed pixels, s*b + t
    shift: Tensor  # fp32 (C_out,): t, the unit's pre-activation where the fill is zero
    ubias: Tensor  # fp32 (C_out,): s*b = bact - t
    rbf: Tensor  # fp32 (48,): RBF weights of tables.OFFSETS
    nuse: int  # offsets that matter (tables.offsets_needed)
    wa: Tensor | None = None  # bf16 weights packed as AMX tiles (extension's conv_rows_amx); made on first use

    def gemm_weight(self) -> Tensor:
        if self.wt is None:
            c_out = self.weight.shape[0]
            self.wt = self.weight.permute(2, 3, 1, 0).reshape(-1, c_out).contiguous()
        return self.wt

    def amx_weight(self) -> Tensor:
        if self.wa is None:
            self.wa = extension().pack_amx(self.gemm_weight())
        return self.wa


# The extension's fp32 direct kernel (AVX-512 implicit GEMM, no im2col buffer) runs at 0.9-0.99 of the dense conv's
# per-FLOP speed for every HRNet-W48 unit measured (3x3 stride 1 and 2 with 48-384 channels, 1x1 up to 720x720),
# against 0.65-0.9 for gather + MKL sgemm (the gather's memory traffic). bf16 keeps gather + oneDNN's AMX GEMM.
USE_DIRECT = True
# bf16 with AMX: the extension's tile kernel with the gather fused (rows gathered into an L2-sized per-thread buffer,
# no oneDNN call per chunk, rows finished from the tiles' results) instead of gather + oneDNN GEMM per chunk.
USE_AMX = True


def _amx() -> bool:
    ext = extension()
    return USE_AMX and ext is not None and hasattr(ext, "conv_rows_amx") and bool(ext.amx_available())


def _pack_direct(weight: Tensor, dtype: torch.dtype) -> Tensor | None:
    # Device and dtype first: asking for the extension compiles it on first use, which GPU weights never need.
    if not USE_DIRECT or dtype != torch.float32 or weight.device.type != "cpu":
        return None
    ext = extension()
    if ext is None or not hasattr(ext, "conv_rows_direct"):
        return None
    return ext.pack_direct(weight.contiguous())


def _versions(*tensors) -> tuple:
    return tuple((id(t), t._version) if t is not None else None for t in tensors)


def _sources(conv: nn.Module, bn: nn.Module | None) -> tuple:
    """The tensors a fold depends on, read from the modules' dicts (nn.Module.__getattr__ costs ~1 us each)."""
    p = conv._parameters
    if bn is None:
        return p["weight"], p.get("bias"), p["Lambda"]
    q, b = bn._parameters, bn._buffers
    return p["weight"], p.get("bias"), p["Lambda"], q.get("weight"), q.get("bias"), b.get("running_mean"), \
        b.get("running_var")


def _supported(conv: nn.Conv2d) -> bool:
    k, s, p = conv.kernel_size, conv.stride, conv.padding
    return (conv.groups == 1 and conv.dilation == (1, 1) and k[0] == k[1] and s[0] == s[1]
            and isinstance(p, tuple) and p[0] == p[1] == k[0] // 2 and conv.padding_mode == "zeros")


class SparseExecution:
    """Computes masked convolutions (and the conv units around them) at their computed pixels only.

    `backend`: "auto" (the C++ extension where it applies, PyTorch ops elsewhere), "cpp" (fails without the
    extension) or "torch". `dense_above`: a share of active pixels above which a conv runs densely (a number, or
    a table like `DENSE_ABOVE`). `fuse=False` runs each masked conv alone (BN, residual and ReLU as modules).
    """

    name = "sparse"

    def __init__(self, backend: str = "auto", dense_above: float | dict | None = None, fuse: bool = True):
        if backend not in ("auto", "cpp", "torch"):
            raise ValueError(f"backend must be 'auto', 'cpp' or 'torch', got {backend!r}")
        if backend == "cpp" and extension() is None:
            raise RuntimeError("the sparse C++ extension is not built: python -m anytime_perception.models.sparse.build")
        self.backend = backend
        self.dense_above = dense_above
        self.fuse = fuse
        self._folded: dict[tuple, _Folded] = {}
        self._local = threading.local()
        self.stats: dict[str, int] | None = None  # set to {} to count units by path (tests, benchmarks)

    def __getstate__(self):  # copies and pickles carry the settings, not the caches (keyed by module identity)
        state = self.__dict__.copy()
        state["_folded"], state["_local"] = {}, None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._local = threading.local()

    # ----- the seam ---------------------------------------------------------------------------------------------
    def masked_conv(self, conv: MaskedConv2d, x: Tensor, mask) -> Tensor:
        return self.unit(conv, None, False, x, mask)

    def conv_unit(self, unit: ConvUnit, x: Tensor, mask, residual: Tensor | None) -> Tensor:
        """A block's conv unit, fused; units with nothing to fuse (plain convs, BN with batch statistics, or
        `fuse=False`) run as their modules do, each masked conv sparse."""
        conv, bn = unit.conv, unit.bn
        if isinstance(bn, nn.Identity):  # BN folded away by fold_batchnorm
            bn = None
        if (not self.fuse or not isinstance(conv, MaskedConv2d)
                or (bn is not None and (bn.training or not bn.track_running_stats))):
            return unit.reference(x, mask, residual)
        return self.unit(conv, bn, unit.relu, x, mask, residual)

    def uses_extension(self, device: torch.device | str = "cpu") -> bool:
        """Whether float32/bfloat16 units on `device` run on the C++ extension (else plain PyTorch ops)."""
        return self.backend != "torch" and torch.device(device).type == "cpu" and extension() is not None

    def describe(self, device: torch.device | str = "cpu") -> str:
        if self.uses_extension(device):
            return "sparse (C++ extension)"
        if self.backend == "torch":
            why = "backend='torch'"
        elif torch.device(device).type != "cpu":
            why = f"no sparse kernels for {torch.device(device).type}"
        else:
            why = f"C++ extension not loaded: {load_error() or 'not built'}"
        return f"sparse (plain PyTorch ops; {why})"

    # ----- one fused unit ---------------------------------------------------------------------------------------
    def unit(self, conv: MaskedConv2d, bn: nn.BatchNorm2d | None, relu: bool, x: Tensor, mask,
             residual: Tensor | None = None) -> Tensor:
        """relu(BN(masked_conv(x)) + residual) with the emulation's semantics; BN must be in eval mode."""
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad or (
            residual is not None and residual.requires_grad) or (bn is not None and bn.weight.requires_grad))
        if needs_grad or not _supported(conv):  # training: the emulation (differentiable, same values)
            if self.stats is not None:
                self.stats["emulate"] = self.stats.get("emulate", 0) + 1
            out = _EMULATE.masked_conv(conv, x, mask)
            out = bn(out) if bn is not None else out
            out = out + residual if residual is not None else out
            return F.relu(out) if relu else out
        b, _, h, w = x.shape
        ho, wo = conv.output_size(h, w)
        folded = self._fold(conv, bn, x.dtype, x.device)
        active = tables.active_rows(mask, ho, wo)
        band = None
        if 0 < active.count < active.rows:
            band = tables.fill_band(mask, ho, wo, folded.nuse)
        dense = active.count == active.rows or active.fraction > self._threshold(conv, x.dtype)
        use_cpp = (self.backend != "torch" and x.device.type == "cpu"
                   and x.dtype in (torch.float32, torch.bfloat16) and extension() is not None)
        if self.stats is not None:
            key = ("cpp" if use_cpp else "torch") + ("-dense" if dense else "-sparse")
            self.stats[key] = self.stats.get(key, 0) + 1
        if active.count == active.rows and (x.dtype == torch.float32 or not use_cpp
                                            or active.rows * conv.out_channels <= SMALL_DENSE_UNIT):
            # nothing skipped here: exactly the dense unit, bias in the conv, add and ReLU in place (fp32: faster than
            # the extension's pass; bf16: in-place ops measured slower on large maps, the extension's pass is kept
            # there; on small ones one op fewer and less Python win)
            out = F.conv2d(x, folded.weight, folded.bias, conv.stride, conv.padding)
            out = out.add_(residual) if residual is not None else out
            return out.relu_() if relu else out
        if use_cpp:
            return self._unit_cpp(conv, folded, active, band, dense, relu, x, residual, ho, wo, mask)
        return self._unit_torch(conv, folded, active, band, dense, relu, x, residual, ho, wo, mask)

    def _threshold(self, conv: nn.Conv2d, dtype: torch.dtype) -> float:
        if isinstance(self.dense_above, (int, float)):
            return float(self.dense_above)
        table = self.dense_above if isinstance(self.dense_above, dict) else DENSE_ABOVE
        key = (str(dtype).replace("torch.", ""), conv.kernel_size[0], conv.stride[0])
        threshold = next((t for c, t in table.get(key, ()) if conv.out_channels <= c), DEFAULT_DENSE_ABOVE)
        if conv.kernel_size[0] > 1 and conv.in_channels >= 4 * conv.out_channels and not (
                dtype == torch.float32 and USE_DIRECT and extension() is not None):
            threshold = min(threshold, GATHER_BOUND_DENSE_ABOVE)
        return threshold

    def _fold(self, conv: MaskedConv2d, bn: nn.BatchNorm2d | None, dtype: torch.dtype, device) -> _Folded:
        key = (id(conv), id(bn), dtype, device)
        versions = _versions(*_sources(conv, bn))
        found = self._folded.get(key)
        if found is not None and found.key == versions:
            return found
        with torch.no_grad():
            weight = conv.weight.detach().float()
            c_out = weight.shape[0]
            bias = conv.bias.detach().float() if conv.bias is not None else torch.zeros(c_out, device=weight.device)
            if bn is not None:
                scale = bn.weight.detach().float() / torch.sqrt(bn.running_var.detach().float() + bn.eps) \
                    if bn.affine else 1.0 / torch.sqrt(bn.running_var.detach().float() + bn.eps)
                shift = (bn.bias.detach().float() if bn.affine else 0.0) - bn.running_mean.detach().float() * scale
            else:
                scale = torch.ones(c_out, device=weight.device)
                shift = torch.zeros(c_out, device=weight.device)
            weight = weight * scale[:, None, None, None]
            ubias = bias * scale
            kernel = conv.rbf_kernel()[0, 0].detach().float()
            rbf = torch.stack([kernel[tables._R + dy, tables._R + dx] for dy, dx in tables.OFFSETS])
            folded = _Folded(
                key=versions,
                wt=None,
                wp=_pack_direct(weight, dtype) if self.backend != "torch" else None,
                weight=weight.to(dtype).contiguous(memory_format=torch.channels_last),
                bias=(ubias + shift).to(dtype),
                bact=(ubias + shift).contiguous(), shift=shift.contiguous(), ubias=ubias.contiguous(),
                rbf=rbf.contiguous(), nuse=tables.offsets_needed(float(conv.Lambda.detach().float())))
        if device is not None:
            folded = _Folded(folded.key, *(t.to(device) if isinstance(t, Tensor) else t
                                           for t in (folded.wt, folded.wp, folded.weight, folded.bias, folded.bact,
                                                     folded.shift, folded.ubias, folded.rbf, folded.nuse)))
        self._folded[key] = folded
        return folded

    def _workspace(self, name: str, numel: int, dtype: torch.dtype, device) -> Tensor:
        """A flat buffer reused across calls (per thread), grown as needed: large fresh allocations page-fault."""
        store = getattr(self._local, "buffers", None)
        if store is None:
            store = self._local.buffers = {}
        key = (name, dtype, device)
        buf = store.get(key)
        if buf is None or buf.numel() < numel:
            buf = store[key] = torch.empty(max(numel, 1), dtype=dtype, device=device)
        return buf[:numel]

    @staticmethod
    def _chunk_rows(k_dim: int, dtype: torch.dtype) -> int:
        rows = CHUNK_BYTES.get(dtype, 1 << 20) // (k_dim * torch.empty((), dtype=dtype).element_size())
        return int(min(MAX_CHUNK_ROWS, max(MIN_CHUNK_ROWS, rows)))

    # ----- C++ extension ----------------------------------------------------------------------------------------
    def _unit_cpp(self, conv, folded: _Folded, active, band, dense: bool, relu: bool, x: Tensor,
                  residual: Tensor | None, ho: int, wo: int, mask) -> Tensor:
        ext = extension()
        b = x.shape[0]
        c_out = conv.out_channels
        rows = active.rows
        x = x.contiguous(memory_format=torch.channels_last)
        out = torch.empty((b, c_out, ho, wo), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
        out2 = out.permute(0, 2, 3, 1).reshape(rows, c_out)
        res = _EMPTY if residual is None else \
            residual.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(rows, c_out)
        has_band = band is not None and band.count
        # sparse: the conv also finishes its active rows (bias, residual, ReLU) while their results are in cache; the
        # epilogue then writes the skipped rows only
        fused = not dense and active.count > 0
        fin = out2 if fused else _EMPTY
        if dense:
            y = F.conv2d(x, folded.weight, None, conv.stride, conv.padding)
            y2 = y.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(rows, c_out)
        else:
            y2 = self._workspace("y", active.count * c_out, x.dtype, x.device).view(active.count, c_out)
            if active.count and folded.wp is not None:
                keep = band.keep if has_band else _NO_KEEP.expand(active.count)
                ext.conv_rows_direct(x.permute(0, 2, 3, 1), active.act, folded.wp, ho, wo, conv.kernel_size[0],
                                     conv.stride[0], conv.padding[0], y2, fin, folded.bact, res, relu,
                                     keep.contiguous())
            elif active.count and x.dtype == torch.bfloat16 and _amx():
                keep = band.keep if has_band else _NO_KEEP.expand(active.count)
                ext.conv_rows_amx(x.permute(0, 2, 3, 1), active.act, folded.amx_weight(), ho, wo, conv.kernel_size[0],
                                  conv.stride[0], conv.padding[0], y2, fin, folded.bact, res, relu, keep.contiguous())
            elif active.count:
                k_dim = folded.gemm_weight().shape[0]
                chunk = self._chunk_rows(k_dim, x.dtype)
                abuf = self._workspace("a", chunk * k_dim, x.dtype, x.device).view(chunk, k_dim)
                ext.conv_rows(x.permute(0, 2, 3, 1), active.act, folded.gemm_weight(), ho, wo, conv.kernel_size[0],
                              conv.stride[0], conv.padding[0], abuf, y2, fin, folded.bact, res, relu)
        if has_band:
            bandmap, tab = band.bandmap, band.tab
        else:
            bandmap, tab = _EMPTY_INT, _EMPTY_TAB
        ext.epilogue(out2, y2, dense, active.cmap, bandmap, tab, folded.nuse, folded.rbf, folded.bact, folded.shift,
                     folded.ubias, res, relu, fused)
        return out

    # ----- plain PyTorch ops (any device, any float dtype) --------------------------------------------------------
    def _unit_torch(self, conv, folded: _Folded, active, band, dense: bool, relu: bool, x: Tensor,
                    residual: Tensor | None, ho: int, wo: int, mask) -> Tensor:
        b, c_in, h, w = x.shape
        c_out = conv.out_channels
        rows = active.rows
        x = x.contiguous(memory_format=torch.channels_last)
        if dense:
            y = F.conv2d(x, folded.weight, None, conv.stride, conv.padding)
            ysrc = y.permute(0, 2, 3, 1).reshape(rows, c_out)
        elif active.count:
            x2 = x.permute(0, 2, 3, 1).reshape(b * h * w, c_in)
            index, valid = tables.im2col_index(mask, ho, wo, h, w, conv.kernel_size[0], conv.stride[0],
                                               conv.padding[0])
            ysrc = torch.empty((active.count, c_out), dtype=x.dtype, device=x.device)
            wt = folded.gemm_weight()
            chunk = self._chunk_rows(wt.shape[0], x.dtype) if x.device.type == "cpu" else active.count
            for start in range(0, active.count, chunk):
                idx = index[start:start + chunk]
                a = x2[idx.reshape(-1)].view(idx.shape[0], idx.shape[1], c_in)
                if valid is not None:
                    a = a * valid[start:start + chunk, :, None].to(a.dtype)
                torch.mm(a.reshape(idx.shape[0], -1), wt, out=ysrc[start:start + chunk])
        else:
            ysrc = x.new_zeros((0, c_out))
        z = folded.shift.expand(rows, c_out).clone()
        if active.count:
            act = active.act_long()
            z[act] = (ysrc[act] if dense else ysrc).float() + folded.bact
        if band is not None and band.count:
            ypad = torch.cat([ysrc.float(), ysrc.new_zeros((1, c_out), dtype=torch.float32)])
            sentinel = ypad.shape[0] - 1
            acc = torch.zeros((band.count, c_out), dtype=torch.float32, device=x.device)
            wsum = torch.zeros((band.count, 1), dtype=torch.float32, device=x.device)
            for o in range(folded.nuse):
                nb = band.tab[:, o].long()
                ok = nb >= 0
                srow = nb if dense else active.cmap[nb.clamp(min=0)].long()
                srow = torch.where(ok, srow, torch.full_like(srow, sentinel))
                acc += folded.rbf[o] * ypad[srow]
                wsum += folded.rbf[o] * ok[:, None].float()
            z[band.band] = acc + folded.ubias * wsum + folded.shift
        if residual is not None:
            z += residual.permute(0, 2, 3, 1).reshape(rows, c_out).float()
        if relu:
            z.clamp_min_(0)
        return z.to(x.dtype).view(b, ho, wo, c_out).permute(0, 3, 1, 2)


_EMPTY = torch.empty(0)
_EMPTY_INT = torch.empty(0, dtype=torch.int32)
_EMPTY_TAB = torch.empty((0, 1), dtype=torch.int32)
_NO_KEEP = torch.zeros(1, dtype=torch.uint8)  # no fill band: no conv output row is read after the conv
