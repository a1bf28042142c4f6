"""Triton kernels of the GPU backend: a conv unit over active tiles, then one pass that finishes every pixel.

`conv_tiles`: implicit-GEMM convolution (1x1 or KxK, stride 1 or 2, zero padding) of the active tiles only, the
im2col gather fused into the loads (no im2col buffer), BN folded into the weights, fp32 accumulation, any float input
dtype. It writes the raw folded conv output (no bias) of all pixels of active tiles to an fp32 buffer. A program
takes GEMM_ROWS pixels: one 8x8 tile, or four active 4x4 tiles wherever they lie (the gather addresses every row
on its own anyway), so small tiles cost no smaller matrix products.

`finish`: every output pixel, one program per tile, with the unit's epilogue:
- computed pixel: conv + (s*b + t), the BN-folded bias;
- skipped pixel of a `near` tile: the RBF fill of the computed neighbours' raw outputs, then BN's affine map
  (sum w_o*y_q + s*b*sum w_o + t over computed neighbours q), exactly what the emulation computes;
- tiles with no active tile next to them: the fill is zero, the pre-activation is BN's shift t (no loads);
then + residual and ReLU, stored in the output's dtype. The fill needs the conv output of neighbouring tiles, so it
cannot run inside the conv's program without a halo; a second pass over the map is a plain bandwidth cost (it writes
the output once, which the model needs anyway) and keeps the conv kernel a pure GEMM.

Triton decides at decoration time whether kernels are compiled or interpreted (`TRITON_INTERPRET=1`, CPU tensors):
`INTERPRETED` records which, and the execution only runs CPU tensors through interpreted kernels.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .tiles import REACH

INTERPRETED = bool(triton.knobs.runtime.interpret)
# Channel blocks per program. Compiled: register-sized. Interpreted: every op of a program costs Python time whatever
# its size, so one program covers all channels of a tile (HRNet's masked convs have at most 720).
MAX_BLOCK_N, MAX_BLOCK_K = (1024, 1024) if INTERPRETED else (64, 32)
# Rows (output pixels) of one conv program's GEMM: one 8x8 tile, or four 4x4 ones.
GEMM_ROWS = 64


@triton.jit
def _tile_pixels(tile, tiles_x, tiles_per_image, out_h, out_w, TILE: tl.constexpr):
    """The TILE*TILE output pixels of tile number `tile` (row-major over batch, tile rows, tile columns): image index,
    pixel rows and columns, and which of them lie inside the map."""
    b = tile // tiles_per_image
    rest = tile % tiles_per_image
    p = tl.arange(0, TILE * TILE)
    oy = (rest // tiles_x) * TILE + p // TILE
    ox = (rest % tiles_x) * TILE + p % TILE
    return b, oy, ox, (oy < out_h) & (ox < out_w)


@triton.jit
def _active_pixels(order_ptr, count, first, tiles_x, tiles_per_image, out_h, out_w, TILE: tl.constexpr,
                   GROUP: tl.constexpr):
    """The pixels of active tiles first .. first+GROUP-1 of `order` (GROUP*TILE*TILE rows, tile by tile): image index,
    pixel rows and columns, and which of them lie inside the map and belong to an active tile."""
    p = tl.arange(0, GROUP * TILE * TILE)
    slot = first + p // (TILE * TILE)
    active = slot < count
    tile = tl.load(order_ptr + slot, mask=active, other=0)
    b = tile // tiles_per_image
    rest = tile % tiles_per_image
    q = p % (TILE * TILE)
    oy = (rest // tiles_x) * TILE + q // TILE
    ox = (rest % tiles_x) * TILE + q % TILE
    return b, oy, ox, active & (oy < out_h) & (ox < out_w)


@triton.jit
def _conv_tiles_kernel(x_ptr, w_ptr, y_ptr, order_ptr, count_ptr,
                       c_in, in_h, in_w, c_out, out_h, out_w, tiles_x, tiles_per_image,
                       sxn, sxc, sxh, sxw,
                       KSIZE: tl.constexpr, STRIDE: tl.constexpr, PAD: tl.constexpr, TILE: tl.constexpr,
                       GROUP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    first = tl.program_id(0) * GROUP
    count = tl.load(count_ptr)
    if first < count:
        b, oy, ox, inside = _active_pixels(order_ptr, count, first, tiles_x, tiles_per_image, out_h, out_w, TILE,
                                           GROUP)
        n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        n_ok = n < c_out
        iy0 = oy * STRIDE - PAD
        ix0 = ox * STRIDE - PAD
        corner = x_ptr + b.to(tl.int64) * sxn + iy0.to(tl.int64) * sxh + ix0.to(tl.int64) * sxw  # tap (0, 0)
        k = tl.arange(0, BLOCK_K)
        acc = tl.zeros((GROUP * TILE * TILE, BLOCK_N), dtype=tl.float32)
        for ky in tl.static_range(KSIZE):
            iy = iy0 + ky
            row_ok = inside & (iy >= 0) & (iy < in_h)
            for kx in tl.static_range(KSIZE):
                ix = ix0 + kx
                tap_ok = row_ok & (ix >= 0) & (ix < in_w)
                pixel = corner + (ky * sxh + kx * sxw)
                w_tap = w_ptr + (ky * KSIZE + kx) * c_in * c_out + n[None, :]
                for c0 in range(0, c_in, BLOCK_K):
                    c = c0 + k
                    c_ok = c < c_in
                    a = tl.load(pixel[:, None] + c[None, :] * sxc, mask=tap_ok[:, None] & c_ok[None, :], other=0.0)
                    w = tl.load(w_tap + c[:, None] * c_out, mask=c_ok[:, None] & n_ok[None, :], other=0.0)
                    acc = tl.dot(a, w, acc, input_precision=PRECISION)
        rows = (b.to(tl.int64) * out_h + oy) * out_w + ox
        tl.store(y_ptr + rows[:, None] * c_out + n[None, :], acc, mask=inside[:, None] & n_ok[None, :])


@triton.jit
def _finish_kernel(y_ptr, computed_ptr, near_ptr, steps_ptr, rbf_ptr, n_offsets,
                   bact_ptr, ubias_ptr, shift_ptr, res_ptr, out_ptr,
                   channels, out_h, out_w, tiles_x, tiles_per_image,
                   srn, src, srh, srw, son, soc, soh, sow,
                   HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr, TILE: tl.constexpr, REACH: tl.constexpr,
                   BLOCK_C: tl.constexpr):
    tile = tl.program_id(0)
    b, oy, ox, inside = _tile_pixels(tile, tiles_x, tiles_per_image, out_h, out_w, TILE)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < channels
    shift = tl.load(shift_ptr + c, mask=c_ok, other=0.0)
    pre = tl.zeros((TILE * TILE, BLOCK_C), dtype=tl.float32) + shift[None, :]
    if tl.load(near_ptr + tile) != 0:
        rows = (b.to(tl.int64) * out_h + oy) * out_w + ox
        flags = computed_ptr + (b.to(tl.int64) * (out_h + 2 * REACH) + oy + REACH) * (out_w + 2 * REACH) + ox + REACH
        computed = (tl.load(flags, mask=inside, other=0) != 0) & inside
        skipped = inside & (computed == 0)
        values = y_ptr + rows[:, None] * channels + c[None, :]
        acc = tl.zeros((TILE * TILE, BLOCK_C), dtype=tl.float32)
        weight_sum = tl.zeros((TILE * TILE,), dtype=tl.float32)
        for o in range(n_offsets):
            w_o = tl.load(rbf_ptr + o)
            ok = skipped & (tl.load(flags + tl.load(steps_ptr + 2 * o), mask=skipped, other=0) != 0)
            v = tl.load(values + tl.load(steps_ptr + 2 * o + 1) * channels, mask=ok[:, None] & c_ok[None, :],
                        other=0.0)
            acc += w_o * v
            weight_sum += tl.where(ok, w_o, 0.0)
        ubias = tl.load(ubias_ptr + c, mask=c_ok, other=0.0)
        fill = acc + ubias[None, :] * weight_sum[:, None] + shift[None, :]
        bact = tl.load(bact_ptr + c, mask=c_ok, other=0.0)
        y = tl.load(values, mask=computed[:, None] & c_ok[None, :], other=0.0)
        pre = tl.where(computed[:, None], y + bact[None, :], fill)
    keep = inside[:, None] & c_ok[None, :]
    if HAS_RESIDUAL:
        r = res_ptr + b.to(tl.int64) * srn + oy.to(tl.int64)[:, None] * srh + ox.to(tl.int64)[:, None] * srw \
            + c[None, :] * src
        pre += tl.load(r, mask=keep, other=0.0).to(tl.float32)
    if RELU:
        pre = tl.maximum(pre, 0.0)
    o_ptr = out_ptr + b.to(tl.int64) * son + oy.to(tl.int64)[:, None] * soh + ox.to(tl.int64)[:, None] * sow \
        + c[None, :] * soc
    tl.store(o_ptr, pre.to(out_ptr.dtype.element_ty), mask=keep)


def _block(n: int, low: int, high: int) -> int:
    return max(low, min(high, triton.next_power_of_2(n)))


def tiles_per_program(tile: int) -> int:
    """Active tiles one conv program computes: GEMM_ROWS rows whatever the tile edge, so that small tiles (less
    wasted work around scattered pixels) keep the matrix-unit shape of large ones."""
    return max(1, GEMM_ROWS // (tile * tile))


def conv_tiles(x: Tensor, weight_rows: Tensor, table, kernel: int, stride: int, padding: int) -> Tensor:
    """Raw folded conv output (B*H*W, C_out) fp32 at every pixel of the active tiles of `table` (others unset).

    `weight_rows`: (kernel*kernel*C_in, C_out), taps in (ky, kx, c_in) order, in `x`'s dtype. `x` in any layout.
    """
    b, c_in, in_h, in_w = x.shape
    c_out = weight_rows.shape[1]
    y = torch.empty((b * table.height * table.width, c_out), dtype=torch.float32, device=x.device)
    block_n = _block(c_out, 16, MAX_BLOCK_N)
    group = tiles_per_program(table.tile)
    grid = (triton.cdiv(table.total, group), triton.cdiv(c_out, block_n))
    # fp32 inputs accumulate in IEEE fp32 (TF32 would miss the 1e-4 tolerance); fp16/bf16 use the tensor cores
    precision = "ieee" if x.dtype == torch.float32 else "tf32"
    _conv_tiles_kernel[grid](x, weight_rows, y, table.order, table.count,
                             c_in, in_h, in_w, c_out, table.height, table.width, table.tiles_x,
                             table.tiles_per_image, *x.stride(),
                             KSIZE=kernel, STRIDE=stride, PAD=padding, TILE=table.tile, GROUP=group,
                             BLOCK_N=block_n, BLOCK_K=_block(c_in, 16, MAX_BLOCK_K), PRECISION=precision)
    return y


def finish(y: Tensor, table, rbf: Tensor, n_offsets: int, bact: Tensor, ubias: Tensor, shift: Tensor,
           residual: Tensor | None, relu: bool, out: Tensor) -> Tensor:
    """Write `out` (B, C, H, W, any layout): computed pixels from `y`, skipped ones filled, + residual, ReLU."""
    b, channels, out_h, out_w = out.shape
    block_c = _block(channels, 16, MAX_BLOCK_N)
    grid = (table.total, triton.cdiv(channels, block_c))
    res = residual if residual is not None else out
    _finish_kernel[grid](y, table.computed, table.near, table.steps, rbf, n_offsets, bact, ubias, shift, res, out,
                         channels, out_h, out_w, table.tiles_x, table.tiles_per_image,
                         *res.stride(), *out.stride(),
                         HAS_RESIDUAL=residual is not None, RELU=relu, TILE=table.tile, REACH=REACH,
                         BLOCK_C=block_c)
    return out
