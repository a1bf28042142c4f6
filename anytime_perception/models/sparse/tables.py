"""Index tables of one compute mask at one resolution, built once per exit and resolution and shared by every conv.

Rows are pixels of a channels_last map in (b, y, x) order: row = b*H*W + y*W + x. For an output resolution:
- `act` (int32, sorted): the rows to compute; `cmap`: row -> position in `act`, or -1 (skipped);
- a fill band per neighbourhood size: skipped rows with at least one computed row among their first `n`
  RBF offsets (`OFFSETS`, nearest first), `bandmap`: row -> band index or -1, `tab` (n_band, n): the neighbour's
  row or -1 (outside the image, or skipped), `keep`: which active rows some band row reads.
Everything is built with tensor ops on the mask's device and memoised on the `ComputeMask`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..masked_conv import RBF_SIZE

_R = RBF_SIZE // 2
# The 48 off-centre offsets of the 7x7 RBF kernel, nearest first (ties in raster order). A prefix of this list is a
# disc of squared radius `d2`; `PREFIX_BY_D2[d2]` is its length.
OFFSETS: tuple[tuple[int, int], ...] = tuple(sorted(
    ((dy, dx) for dy in range(-_R, _R + 1) for dx in range(-_R, _R + 1) if (dy, dx) != (0, 0)),
    key=lambda o: (o[0] ** 2 + o[1] ** 2, o)))
OFFSET_D2 = tuple(dy * dy + dx * dx for dy, dx in OFFSETS)
PREFIX_BY_D2 = {d2: sum(1 for v in OFFSET_D2 if v <= d2) for d2 in sorted(set(OFFSET_D2))}

# An offset is dropped from the fill when its weight is below this share of the nearest neighbours' weight: the 48
# offsets together then change a filled value by at most 48e-6 of the largest weight times the largest neighbour,
# far inside the backend's 1e-4 relative tolerance (fp32). Lambda = 3 keeps 8 offsets (d^2 <= 2), 1.5 keeps 20.
RELATIVE_WEIGHT_CUT = 1e-6


def offsets_needed(lam: float) -> int:
    """How many `OFFSETS` carry weight exp(-Lambda^2 d^2) >= RELATIVE_WEIGHT_CUT * exp(-Lambda^2)."""
    reach = 1.0 - math.log(RELATIVE_WEIGHT_CUT) / max(lam * lam, 1e-12)  # largest d^2 kept
    return max(n for d2, n in PREFIX_BY_D2.items() if d2 <= reach) if reach >= 1 else PREFIX_BY_D2[1]


@dataclass
class ActiveRows:
    height: int
    width: int
    rows: int  # B*H*W
    count: int  # number of active rows
    act: Tensor  # (count,) int32
    cmap: Tensor  # (rows,) int32

    @property
    def fraction(self) -> float:
        return self.count / self.rows if self.rows else 0.0

    def act_long(self) -> Tensor:
        return self.act.long()


@dataclass
class FillBand:
    count: int
    bandmap: Tensor  # (rows,) int32
    band: Tensor  # (count,) int64 rows
    tab: Tensor  # (count, n) int32 neighbour rows or -1
    keep: Tensor  # (active count,) uint8: 1 where an active row is some band row's neighbour (its conv output is read)


def _compute_bool(mask, height: int, width: int) -> Tensor:
    return mask.at(height, width)[:, 0] > 0.5  # (B, H, W) bool


def active_rows(mask, height: int, width: int) -> ActiveRows:
    def make() -> ActiveRows:
        m = _compute_bool(mask, height, width).reshape(-1)
        act = torch.nonzero(m).reshape(-1)
        cmap = torch.full((m.numel(),), -1, dtype=torch.int32, device=m.device)
        cmap[act] = torch.arange(act.numel(), dtype=torch.int32, device=m.device)
        return ActiveRows(height, width, m.numel(), int(act.numel()), act.to(torch.int32).contiguous(), cmap)

    return mask.memo(("sparse.active", height, width), make)


def fill_band(mask, height: int, width: int, n: int) -> FillBand:
    """Skipped rows reached by the first `n` offsets from a computed row, with their neighbour table."""

    def make() -> FillBand:
        m = _compute_bool(mask, height, width)
        b = m.shape[0]
        padded = F.pad(m, (_R, _R, _R, _R))
        near = torch.zeros_like(m)
        for dy, dx in OFFSETS[:n]:
            near |= padded[:, _R + dy:_R + dy + height, _R + dx:_R + dx + width]
        band = torch.nonzero((near & ~m).reshape(-1)).reshape(-1)
        rows = b * height * width
        bandmap = torch.full((rows,), -1, dtype=torch.int32, device=m.device)
        bandmap[band] = torch.arange(band.numel(), dtype=torch.int32, device=m.device)
        tab = torch.empty((band.numel(), n), dtype=torch.int32, device=m.device)
        if band.numel():
            bi = band // (height * width)
            rem = band - bi * (height * width)
            y, x = rem // width, rem - (rem // width) * width
            flat = m.reshape(-1)
            for o, (dy, dx) in enumerate(OFFSETS[:n]):
                ny, nx = y + dy, x + dx
                inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
                nrow = band + dy * width + dx
                ok = inside & flat[nrow.clamp(0, rows - 1)]
                tab[:, o] = torch.where(ok, nrow, torch.full_like(nrow, -1)).to(torch.int32)
        active = active_rows(mask, height, width)
        keep = torch.zeros(active.count, dtype=torch.uint8, device=m.device)
        used = tab[tab >= 0].long()
        if used.numel():
            keep[active.cmap[used].long()] = 1
        return FillBand(int(band.numel()), bandmap, band, tab.contiguous(), keep)

    return mask.memo(("sparse.band", height, width, n), make)


def im2col_index(mask, height: int, width: int, in_height: int, in_width: int, kernel: int, stride: int,
                 padding: int) -> tuple[Tensor, Tensor | None]:
    """For the PyTorch path: (count, k*k) input rows of every active output row's taps (clamped) and a validity
    mask (None when every tap lies inside the image)."""

    def make():
        active = active_rows(mask, height, width)
        f = active.act_long()
        hw = height * width
        b = f // hw
        rem = f - b * hw
        oy, ox = rem // width, rem % width
        k = torch.arange(kernel, device=f.device)
        iy = (oy * stride - padding)[:, None, None] + k[None, :, None]
        ix = (ox * stride - padding)[:, None, None] + k[None, None, :]
        valid = (iy >= 0) & (iy < in_height) & (ix >= 0) & (ix < in_width)
        rows = (b[:, None, None] * in_height + iy.clamp(0, in_height - 1)) * in_width + ix.clamp(0, in_width - 1)
        rows = rows.reshape(f.numel(), kernel * kernel)
        valid = valid.reshape(f.numel(), kernel * kernel)
        return rows, (None if bool(valid.all()) else valid)

    return mask.memo(("sparse.im2col", height, width, in_height, in_width, kernel, stride, padding), make)
