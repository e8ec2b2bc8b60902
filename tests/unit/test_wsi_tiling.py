"""The tile grid: coverage, overlap large enough for whole objects, tissue-only tiles."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.wsi.tiling import plan_tiles
from pipelines.wsi.tissue import TissueMask


def test_grid_covers_the_slide_with_the_asked_overlap() -> None:
    grid = plan_tiles(10_000, 6_000, (2.0, 2.0), 512, 128)
    assert grid.stride_px == 384
    xs = sorted({t.l0_x for t in grid.tiles})
    ys = sorted({t.l0_y for t in grid.tiles})
    assert xs[0] == 0 and xs[-1] + 512 * 2 >= 10_000
    assert ys[-1] + 512 * 2 >= 6_000
    assert np.diff(xs).tolist() == [768] * (len(xs) - 1)
    assert len(grid.tiles) == grid.total == grid.columns * grid.rows
    first, last = grid.tiles[0], grid.tiles[-1]
    assert first.border_left and first.border_top and not first.border_right
    assert last.border_right and last.border_bottom


@pytest.mark.parametrize("l0_per_px", [(1.0, 1.0), (2.0, 2.0), (2.2, 2.2)])
def test_every_object_up_to_the_overlap_lies_whole_off_inner_edges_in_a_tile(l0_per_px: tuple[float, float]) -> None:
    tile, overlap, margin = 512, 128, 2
    grid = plan_tiles(20_000, 20_000, l0_per_px, tile, overlap)
    sx, sy = l0_per_px
    rng = np.random.default_rng(1)
    largest_px = overlap - 2 * margin - 2
    for _ in range(2000):
        w, h = rng.uniform(4, largest_px, 2)
        x0 = rng.uniform(0, 20_000 - w * sx)
        y0 = rng.uniform(0, 20_000 - h * sy)
        inside = [  # the margin keeps objects off inner seams; the slide's own border is no seam
            t for t in grid.tiles
            if t.l0_x + (0 if t.border_left else margin) * sx <= x0
            and x0 + w * sx <= t.l0_x + (tile - (0 if t.border_right else margin)) * sx
            and t.l0_y + (0 if t.border_top else margin) * sy <= y0
            and y0 + h * sy <= t.l0_y + (tile - (0 if t.border_bottom else margin)) * sy
        ]
        assert inside, (x0, y0, w, h)


def test_only_tiles_over_tissue_are_kept() -> None:
    mask = np.zeros((100, 100), bool)
    mask[40:60, 10:30] = True  # 20 x 20 mask px of 16 level-0 px
    tissue = TissueMask(mask, 16.0, 16.0, 8.0, "brightfield", "auto")
    grid = plan_tiles(1600, 1600, (2.0, 2.0), 128, 32, tissue)
    assert 0 < len(grid.tiles) < grid.total
    for t in grid.tiles:
        assert tissue.coverage(t.l0_x, t.l0_y, t.l0_x + 256, t.l0_y + 256) > 0
    assert all(t.l0_x < 30 * 16 and t.l0_x + 256 > 10 * 16 for t in grid.tiles)


def test_overlap_must_be_smaller_than_the_tile() -> None:
    with pytest.raises(ValueError, match="overlap"):
        plan_tiles(1000, 1000, (1.0, 1.0), 256, 256)


def test_a_slide_smaller_than_one_tile_gets_one_tile() -> None:
    grid = plan_tiles(16, 16, (2.0, 2.0), 512, 128)
    assert len(grid.tiles) == 1 and grid.tiles[0].border_right and grid.tiles[0].border_bottom
