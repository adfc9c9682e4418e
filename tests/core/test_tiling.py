"""Tile planning and blending: property tests of the window arithmetic and of seamless stitching."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mmcanet.blending import StripAccumulator, ramp, tile_weight, weight_sums
from mmcanet.tiling import Window, axis_offsets, plan_tiles


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


@given(length=st.integers(1, 200), taper=st.integers(0, 100), start=st.booleans(), end=st.booleans())
def test_ramp_positive_and_bounded(length: int, taper: int, start: bool, end: bool) -> None:
    w = ramp(length, taper, start, end)
    assert w.shape == (length,) and w.dtype == np.float32
    assert (w > 0).all() and (w <= 1).all()


@given(taper=st.integers(1, 64), extra=st.integers(0, 64))
def test_ramps_partition_of_unity(taper: int, extra: int) -> None:
    """Two neighbours overlapping by exactly `taper` px: their weights sum to 1 in the overlap."""
    length = 2 * taper + extra
    left, right = ramp(length, taper, False, True), ramp(length, taper, True, False)
    np.testing.assert_allclose(left[-taper:] + right[:taper], 1.0, atol=2e-3)
    if taper >= 4:
        assert left[-1] < 0.01 and right[0] < 0.01  # a tile's own border counts little where a neighbour exists


@given(sizes(), st.integers(1, 3), st.integers(0, 2**16))
@settings(max_examples=80, deadline=None)
def test_identity_stitching_reproduces_input(args: tuple[int, int, int, int], channels: int, seed: int) -> None:
    """Blending the tiles of an array (an identity model) gives the array back, odd sizes included."""
    width, height, tile, overlap = args
    overlap = min(overlap, tile // 2)  # the engine's limit; beyond it float32 sums of many tiles drift ~1e-5
    rng = np.random.default_rng(seed)
    image = rng.uniform(0, 1, (channels, height, width)).astype(np.float32)
    plan = plan_tiles(width, height, tile, overlap)
    acc = StripAccumulator(plan, channels, overlap)
    out = np.full_like(image, np.nan)
    for r in range(len(plan.row_offsets)):
        for t in plan.tile_row(r):
            acc.add(t, image[(slice(None), *t.window.slices())].copy())  # add() scales in place
        row_off, mean = acc.pop(plan.final_row(r))
        out[:, row_off : row_off + mean.shape[1]] = mean
    np.testing.assert_allclose(out, image, rtol=1e-5, atol=1e-6)


@given(sizes())
@settings(max_examples=100, deadline=None)
def test_weight_sums_factorise(args: tuple[int, int, int, int]) -> None:
    """The per-axis weight sums multiply to the sum of every tile's 2-D weight (no weight plane needed)."""
    width, height, tile, overlap = args
    overlap = min(overlap, tile // 2)
    plan = plan_tiles(width, height, tile, overlap)
    total = np.zeros((height, width), np.float64)
    for t in plan.tiles():
        w = t.window
        total[w.slices()] += tile_weight(w.height, w.width, overlap, t.neighbours)
    rows, cols = weight_sums(plan, overlap)
    np.testing.assert_allclose(np.outer(rows, cols), total, rtol=1e-5)
    assert (rows > 0).all() and (cols > 0).all()


def test_strip_rejects_tiles_outside() -> None:
    plan = plan_tiles(10, 12, 4, 1)
    acc = StripAccumulator(plan, 1, 1)
    tile = list(plan.tiles())[-1]  # last tile row: not in the strip yet
    with pytest.raises(ValueError):
        acc.add(tile, np.zeros((1, 4, 4), np.float32))
