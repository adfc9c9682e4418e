"""Blending: tile weights, seamless stitching, the feathered restore weight and compositing with the input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mmcanet.inference.blending import StripAccumulator, harmonise_fill, ramp, tile_weight, weight_sums
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


def _fill_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clear land at 0.30 / 0.10 (two bands) around a 40 x 40 cloud whose fill has the same colour at half the
    brightness, with stripes (the structure the SAR gave it)."""
    h = w = 128
    restored = np.empty((2, h, w), np.float32)
    restored[0], restored[1] = 0.30, 0.10
    mask = np.zeros((h, w), bool)
    mask[44:84, 44:84] = True
    stripes = np.where((np.arange(w) // 4) % 2 == 0, 1.2, 0.8).astype(np.float32)[None, :] * np.ones((h, 1), np.float32)
    restored[0][mask] = (0.15 * stripes)[mask]
    restored[1][mask] = (0.05 * stripes)[mask]
    return restored, mask, np.zeros((h, w), bool)


def test_harmonise_fill_moves_the_fill_to_the_local_brightness_and_keeps_its_structure() -> None:
    restored, mask, invalid = _fill_scene()
    out = harmonise_fill(restored, mask, invalid, sigma=32)
    inner = np.zeros_like(mask)
    inner[52:76, 52:76] = True  # away from the soft edge
    for band, clear_level in ((0, 0.30), (1, 0.10)):
        before = abs(float(restored[band][inner].mean()) - clear_level)
        after = abs(float(out[band][inner].mean()) - clear_level)
        assert after < 0.25 * before, (band, before, after)
    # one factor for all bands: the spectral shape (band ratio) of every pixel stays
    np.testing.assert_allclose(out[0][mask] / out[1][mask], restored[0][mask] / restored[1][mask], rtol=1e-4)
    # the stripes survive: the factor varies slowly, so the stripe contrast inside stays
    a, b = restored[0][inner].reshape(24, 24), out[0][inner].reshape(24, 24)
    np.testing.assert_allclose(b / b.mean(), a / a.mean(), atol=0.05)
    far = np.ones_like(mask)
    far[40:88, 40:88] = False
    np.testing.assert_array_equal(out[:, far], restored[:, far])  # clear pixels stay exactly


def test_harmonise_fill_needs_clear_land_and_ignores_nodata() -> None:
    restored, mask, invalid = _fill_scene()
    assert harmonise_fill(restored, mask, invalid, sigma=0) is restored  # off
    assert harmonise_fill(restored, np.ones_like(mask), invalid, sigma=32) is restored  # nothing clear to follow
    # nodata (value 0 in the restored array) around the cloud must not darken the fill
    nodata = np.zeros_like(mask)
    nodata[:, :30] = True
    r2 = restored.copy()
    r2[:, nodata] = 0.0
    a = harmonise_fill(restored, mask, nodata, sigma=32)
    b = harmonise_fill(r2, mask, nodata, sigma=32)
    np.testing.assert_allclose(a[:, mask], b[:, mask], atol=1e-5)
    # a lone pixel of clear land next to a huge cloud barely moves it (little clear land near)
    big = np.ones_like(mask)
    big[0, 0] = False
    out = harmonise_fill(restored, big, invalid, sigma=32)
    assert float(np.abs(out[:, 64, 64] - restored[:, 64, 64]).max()) < 1e-3
