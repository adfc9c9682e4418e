"""Blending: tile weights, seamless stitching, the feathered restore weight and compositing with the input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mmcanet.inference.blending import StripAccumulator, ramp, tile_weight, weight_sums
from mmcanet.inference.tiling import plan_tiles


@st.composite
def sizes(draw: st.DrawFn) -> tuple[int, int, int, int]:
    """(width, height, tile, overlap) with 0 <= overlap < tile; rasters both smaller and larger than a tile."""
    tile = draw(st.integers(1, 64))
    overlap = draw(st.integers(0, tile - 1))
    width = draw(st.integers(1, min(300, 10 * tile)))  # up to ~100 tiles: fast, still odd sizes
    height = draw(st.integers(1, min(300, 10 * tile)))
    return width, height, tile, overlap


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
