"""Tables of active output tiles of one compute mask at one resolution, built on the mask's device.

A tile is TILE x TILE output pixels of one image; it is *active* when any of its pixels is computed. The kernels
launch one program per tile of the map (a fixed grid, so no host sync): `order` lists active tiles first, and a
program whose index is not below `count` (a one-element tensor on the device) returns at once. `near` marks tiles
within one tile of an active one: only their skipped pixels can have a computed pixel among their RBF neighbours
(the fill reaches 3 pixels, less than a tile), everywhere else the fill is zero. The computed map is stored with a
zero border as wide as the fill's reach, so the fill's neighbour lookups need no bounds checks: a neighbour outside
the image reads "skipped", which is what the emulation's zero padding gives. Built once per exit and resolution
and memoised on the `ComputeMask`, like the CPU backend's row tables (`sparse/tables.py`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..masked_conv import RBF_SIZE
from ..sparse.tables import OFFSETS

# 4x4 output pixels: the unit of work. Computed pixels come in scattered clumps, and the share of a map that active
# tiles cover grows fast with the tile (the shipped person model's masks at 576x768, exit 4, 44 % computed: 4x4 tiles
# cover 58-85 % of the maps at 1/4..1/32, 8x8 ones 69-93 %; `benchmarks/gpu.py --tiles --masks person`). The conv
# kernel takes four active 4x4 tiles per program, so its GEMM keeps 64 rows, as with one 8x8 tile.
TILE = 4
REACH = RBF_SIZE // 2
if TILE < REACH:
    raise AssertionError("the fill must not reach past the neighbouring tile")


_OFFSETS_ON: dict[torch.device, Tensor] = {}


def _offsets_on(device: torch.device) -> Tensor:
    """(len(OFFSETS), 2) int32 (dy, dx) on `device`, copied there once: a copy from host memory per table would
    wait for the GPU's queue."""
    if device not in _OFFSETS_ON:
        _OFFSETS_ON[device] = torch.tensor(OFFSETS, dtype=torch.int32, device=device)
    return _OFFSETS_ON[device]


@dataclass
class TileTable:
    height: int
    width: int
    tile: int
    tiles_y: int
    tiles_x: int
    total: int  # B * tiles_y * tiles_x: the size of every launch grid's first axis
    computed: Tensor  # (B, H + 2*REACH, W + 2*REACH) uint8, 1 = computed pixel, zero border
    steps: Tensor  # (len(OFFSETS), 2) int32: each RBF offset as a step in `computed` and in (b, y, x) rows
    order: Tensor  # (total,) int32 tile indices b*tiles_y*tiles_x + ty*tiles_x + tx, active tiles first
    count: Tensor  # (1,) int32: how many tiles are active
    near: Tensor  # (total,) uint8: tile is active or next to an active one (its skipped pixels may need the fill)
    active: Tensor  # (total,) bool, for statistics and tests

    @property
    def tiles_per_image(self) -> int:
        return self.tiles_y * self.tiles_x


def tile_table(mask, height: int, width: int, tile: int = TILE) -> TileTable:
    """The tile table of `mask` (a `ComputeMask`) at output resolution `height` x `width`, memoised on the mask."""

    def make() -> TileTable:
        m = mask.at(height, width) > 0.5  # (B, 1, H, W)
        b = m.shape[0]
        tiles_y, tiles_x = -(-height // tile), -(-width // tile)
        padded = F.pad(m[:, 0], (0, tiles_x * tile - width, 0, tiles_y * tile - height))
        active = padded.reshape(b, tiles_y, tile, tiles_x, tile).any(dim=4).any(dim=2)  # (B, ty, tx)
        near = F.max_pool2d(active[:, None].float(), 3, stride=1, padding=1)[:, 0] > 0
        flat = active.reshape(-1)
        order = torch.argsort((~flat).to(torch.uint8), stable=True).to(torch.int32)
        computed = F.pad(m[:, 0].to(torch.uint8), (REACH, REACH, REACH, REACH)).contiguous()
        dy, dx = _offsets_on(m.device).unbind(1)
        steps = torch.stack([dy * (width + 2 * REACH) + dx, dy * width + dx], dim=1).contiguous()
        return TileTable(height, width, tile, tiles_y, tiles_x, flat.numel(), computed, steps, order.contiguous(),
                         flat.sum(dtype=torch.int32).reshape(1), near.reshape(-1).to(torch.uint8).contiguous(), flat)

    return mask.memo(("gpu.tiles", height, width, tile), make)
