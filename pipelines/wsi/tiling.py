"""The tile grid: model-input-sized tiles at the processing resolution, overlapping, only over tissue.

Coordinates: ``t_col``/``t_row`` index the grid, ``l0_*`` are level-0 pixels, tile pixels are at the
processing resolution (``l0_per_px`` level-0 pixels each). Tiles overlap by ``overlap_px``; with the overlap
at least the size of the largest object plus twice the edge margin, every object lies whole, away from the
edges, inside at least one tile, so a cut copy of it in a neighbour tile can be recognised and dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipelines.wsi.tissue import TissueMask


@dataclass(frozen=True)
class Tile:
    t_col: int
    t_row: int
    l0_x: int  # level-0 origin
    l0_y: int
    # which edges lie on the slide's border (an object touching those is not cut by a seam)
    border_left: bool
    border_top: bool
    border_right: bool
    border_bottom: bool


@dataclass(frozen=True)
class TileGrid:
    tile_px: int  # tile side at the processing resolution
    overlap_px: int
    l0_per_px_x: float
    l0_per_px_y: float
    columns: int
    rows: int
    tiles: tuple[Tile, ...]  # the tiles over tissue, row by row

    @property
    def total(self) -> int:
        return self.columns * self.rows

    @property
    def stride_px(self) -> int:
        return self.tile_px - self.overlap_px


def _starts(extent_px: float, tile_px: int, stride_px: int) -> list[int]:
    """Tile origins (processing px) covering ``[0, extent_px)``; the last tile ends at or past the extent."""
    if extent_px <= tile_px:
        return [0]
    count = math.ceil((extent_px - tile_px) / stride_px) + 1
    return [i * stride_px for i in range(count)]


def plan_tiles(
    width_l0: int,
    height_l0: int,
    l0_per_px: tuple[float, float],
    tile_px: int,
    overlap_px: int,
    mask: TissueMask | None = None,
    min_coverage: float = 0.0,
) -> TileGrid:
    """Tiles of ``tile_px`` at the processing resolution over the slide, kept where ``mask`` covers them."""
    if not 0 <= overlap_px < tile_px:
        raise ValueError(f"overlap {overlap_px} px must be at least 0 and less than the tile size {tile_px} px")
    sx, sy = l0_per_px
    stride = tile_px - overlap_px
    xs = _starts(width_l0 / sx, tile_px, stride)
    ys = _starts(height_l0 / sy, tile_px, stride)
    tiles = []
    for row, y in enumerate(ys):
        for col, x in enumerate(xs):
            l0_x, l0_y = round(x * sx), round(y * sy)
            l0_x1, l0_y1 = l0_x + tile_px * sx, l0_y + tile_px * sy
            if mask is not None:
                covered = mask.coverage(l0_x, l0_y, l0_x1, l0_y1)
                if covered <= 0 or covered < min_coverage:
                    continue
            tiles.append(
                Tile(col, row, l0_x, l0_y, col == 0, row == 0, l0_x1 >= width_l0 - 0.5, l0_y1 >= height_l0 - 0.5)
            )
    return TileGrid(tile_px, overlap_px, sx, sy, len(xs), len(ys), tuple(tiles))
