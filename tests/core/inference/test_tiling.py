"""Tile planning: property tests of the window arithmetic (tiles cover the raster exactly, strips suffice)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mmcanet.inference.tiling import axis_offsets, plan_tiles
from mmcanet.windows import Window


@st.composite
def sizes(draw: st.DrawFn) -> tuple[int, int, int, int]:
    """(width, height, tile, overlap) with 0 <= overlap < tile; rasters both smaller and larger than a tile."""
    tile = draw(st.integers(1, 64))
    overlap = draw(st.integers(0, tile - 1))
    width = draw(st.integers(1, min(300, 10 * tile)))  # up to ~100 tiles: fast, still odd sizes
    height = draw(st.integers(1, min(300, 10 * tile)))
    return width, height, tile, overlap


@given(length=st.integers(1, 2000), tile=st.integers(1, 300), data=st.data())
def test_axis_offsets_cover_exactly(length: int, tile: int, data: st.DataObject) -> None:
    overlap = data.draw(st.integers(0, tile - 1))
    offs = axis_offsets(length, tile, overlap)
    size = min(tile, length)
    assert offs[0] == 0
    assert offs[-1] + size == length  # the last tile ends on the edge
    assert all(b > a for a, b in zip(offs, offs[1:], strict=False))  # strictly increasing: no duplicate tile
    assert all(o >= 0 and o + size <= length for o in offs)  # inside the raster
    for a, b in zip(offs, offs[1:], strict=False):
        assert a + size - b >= overlap  # neighbours overlap at least `overlap`
        assert b - a <= tile - overlap  # no gap, stride never exceeded
    if length > tile and overlap < tile:
        assert len(offs) == -(-(length - tile) // (tile - overlap)) + 1  # minimal number of tiles


@given(sizes())
@settings(max_examples=150, deadline=None)
def test_plan_covers_raster_exactly(args: tuple[int, int, int, int]) -> None:
    width, height, tile, overlap = args
    plan = plan_tiles(width, height, tile, overlap)
    count = np.zeros((height, width), np.int32)
    shapes = set()
    for t in plan.tiles():
        w = t.window
        assert w.col_off >= 0 and w.col_end <= width and w.row_off >= 0 and w.row_end <= height
        count[w.slices()] += 1
        shapes.add((w.height, w.width))
    assert count.min() >= 1  # every pixel covered
    assert shapes == {(plan.tile_height, plan.tile_width)}  # every tile the same size: they batch
    assert plan.n_tiles == len(list(plan.tiles()))


@given(sizes())
@settings(max_examples=100, deadline=None)
def test_final_rows_fit_in_one_strip(args: tuple[int, int, int, int]) -> None:
    """After tile row r, no later tile touches rows < final_row(r), and the strip never needs more rows."""
    width, height, tile, overlap = args
    plan = plan_tiles(width, height, tile, overlap)
    n = len(plan.row_offsets)
    for r in range(n):
        fin = plan.final_row(r)
        assert plan.row_offsets[r] < fin <= plan.row_offsets[r] + plan.tile_height
        for later in range(r + 1, n):
            assert plan.row_offsets[later] >= fin
    assert plan.final_row(n - 1) == height


def test_neighbour_flags() -> None:
    plan = plan_tiles(100, 50, 40, 10)
    tiles = list(plan.tiles())
    assert tiles[0].neighbours == (False, True, False, True)
    assert tiles[-1].neighbours == (True, False, True, False)
    single = list(plan_tiles(10, 10, 40, 10).tiles())
    assert len(single) == 1 and single[0].neighbours == (False, False, False, False)
    assert single[0].window == Window(0, 0, 10, 10)


def test_invalid_sizes() -> None:
    with pytest.raises(ValueError):
        axis_offsets(10, 8, 8)
    with pytest.raises(ValueError):
        axis_offsets(0, 8, 0)


def test_window_intersection() -> None:
    a = Window(0, 0, 10, 10)
    assert a.intersection(Window(5, 5, 10, 10)) == Window(5, 5, 5, 5)
    assert a.intersection(Window(10, 0, 5, 5)) is None
