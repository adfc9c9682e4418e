"""Blending: tile weights, seamless stitching, the feathered restore weight and compositing with the input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mmcanet.inference.blending import (
    StripAccumulator,
    harmonise_fill,
    ramp,
    shift_fill_to_input,
    tile_weight,
    weight_sums,
)
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


def test_shift_fill_to_input_moves_each_band_by_the_local_input_minus_restored_difference() -> None:
    """Level-2A: the network's levels differ from the input's by band (here +0.05 in band 0, -0.02 in
    band 1 over the clear land); deep inside the cloud the fill moves by exactly that, per band."""
    restored, mask, invalid = _fill_scene()
    optical = restored.copy()
    optical[0] += 0.05
    optical[1] -= 0.02
    optical[:, mask] = 0.9  # the cloud itself never counts
    out = shift_fill_to_input(restored, optical, mask, invalid, sigma=32)
    inner = np.zeros_like(mask)
    inner[52:76, 52:76] = True
    np.testing.assert_allclose(out[0][inner] - restored[0][inner], 0.05, atol=1e-4)
    np.testing.assert_allclose(out[1][inner] - restored[1][inner], -0.02, atol=1e-4)
    far = np.ones_like(mask)
    far[40:88, 40:88] = False
    np.testing.assert_array_equal(out[:, far], restored[:, far])  # outside the mask nothing moves
    assert shift_fill_to_input(restored, optical, mask, invalid, sigma=0) is restored
    assert shift_fill_to_input(restored, optical, np.ones_like(mask), invalid, sigma=32) is restored
    nodata = np.zeros_like(mask)
    nodata[:, :30] = True
    o2 = optical.copy()
    o2[:, nodata] = np.nan  # nodata in the input: ignored, not spread
    a = shift_fill_to_input(restored, optical, mask, nodata, sigma=32)
    b = shift_fill_to_input(restored, o2, mask, nodata, sigma=32)
    np.testing.assert_allclose(a[:, mask], b[:, mask], atol=1e-5)


# -- compositing and the soft weights, value by value (mutation survivors of blending) ----------------------


def test_composite_tile_blends_values_and_the_predicted_error_with_alpha() -> None:
    from mmcanet.inference.blending import composite_tile

    rng = np.random.default_rng(3)
    restored = rng.random((3, 4, 5), dtype=np.float32)
    input_dn = rng.integers(0, 12000, (3, 4, 5)).astype(np.uint16)
    alpha = rng.random((4, 5), dtype=np.float32)
    mask = alpha > 0.5
    error = rng.random((4, 5), dtype=np.float32) * 0.1
    values = composite_tile(restored, alpha, input_dn, mask, 10000.0, error, 0.02)
    assert values.shape == (5, 4, 5) and values.dtype == np.float32
    np.testing.assert_allclose(values[:3], input_dn + alpha * (restored * 10000 - input_dn), rtol=1e-6)
    np.testing.assert_array_equal(values[3], mask.astype(np.float32))
    np.testing.assert_allclose(values[4], alpha * error + (1 - alpha) * 0.02, rtol=1e-5, atol=1e-7)
    # no error channel from the model: kept pixels' error everywhere the alpha does not replace it
    kept_only = composite_tile(restored, alpha, input_dn, None, 10000.0, None, 0.02)
    assert kept_only.shape == (5, 4, 5)
    np.testing.assert_array_equal(kept_only[3], np.zeros((4, 5), np.float32))  # no mask: 0
    np.testing.assert_array_equal(kept_only[4], np.full((4, 5), 0.02, np.float32))
    # without a trust layer no error plane at all
    assert composite_tile(restored, alpha, input_dn, mask, 10000.0).shape == (4, 4, 5)
    # not run (restored None): the input comes back exactly, even with alpha 1
    ones = np.ones((4, 5), np.float32)
    np.testing.assert_array_equal(composite_tile(None, ones, input_dn, None, 10000.0)[:3], input_dn.astype(np.float32))
    # alpha 1 everywhere: exactly the restored value, the input (even above 10000 DN) drops out
    np.testing.assert_array_equal(composite_tile(restored, ones, input_dn, None, 10000.0)[:3],
                                  restored * np.float32(10000.0))


def test_harmonise_factor_is_kept_between_a_third_and_three() -> None:
    mask = np.zeros((96, 96), bool)
    mask[24:72, 24:72] = True
    invalid = np.zeros_like(mask)
    inner = (slice(40, 56), slice(40, 56))
    for fill, factor in ((10.0, 1.0 / 3.0), (0.01, 3.0)):  # fill 100x too bright / 10x too dark
        restored = np.full((2, 96, 96), 0.1, np.float32)
        restored[:, mask] = fill * 0.1
        out = harmonise_fill(restored, mask, invalid, sigma=16)
        np.testing.assert_allclose(out[:, inner[0], inner[1]], restored[:, inner[0], inner[1]] * factor, rtol=1e-5)
    # a 1 px scale is a scale: the fill moves (only 0 switches it off)
    restored = np.full((2, 96, 96), 0.1, np.float32)
    restored[:, mask] = 0.2
    assert np.abs(harmonise_fill(restored, mask, invalid, sigma=1) - restored).max() > 0.01


def test_feather_radius_one_spreads_the_weight_two_pixels() -> None:
    from mmcanet.inference.blending import feather

    mask = np.zeros((9, 9), bool)
    mask[4, 4] = True
    w = feather(mask, 1)
    assert w.dtype == np.float32 and w[4, 4] == 1.0 and 0.0 < w[4, 3] < 1.0 and 0.0 < w[4, 2] < w[4, 3]
    assert w[4, 1] == 0.0 and w.min() == 0.0 and w.max() == 1.0
    np.testing.assert_array_equal(feather(mask, 0), mask.astype(np.float32))
    np.testing.assert_array_equal(feather(np.ones((9, 9), bool), 3), np.ones((9, 9), np.float32))
    np.testing.assert_array_equal(feather(np.zeros((9, 9), bool), 3), np.zeros((9, 9), np.float32))


def test_ramp_values_margin_then_raised_cosine() -> None:
    from mmcanet.inference.blending import EDGE_WEIGHT

    w = ramp(12, 8, True, False)  # margin 8 // 4 = 2 px, then a raised cosine over 4 px
    assert w.dtype == np.float32
    np.testing.assert_allclose(w[:2], EDGE_WEIGHT)
    rise = 0.5 - 0.5 * np.cos(np.pi * (np.arange(2, 6) - 2 + 0.5) / 4)
    np.testing.assert_allclose(w[2:6], rise, rtol=1e-6)
    np.testing.assert_array_equal(w[6:], 1.0)
    np.testing.assert_allclose(ramp(12, 8, False, True), w[::-1])
    np.testing.assert_array_equal(ramp(5, 0, True, True), np.ones(5, np.float32))


def test_error_and_change_outputs_by_value() -> None:
    from mmcanet.inference.blending import CHANGE_NODATA, ERROR_NODATA, change_values, error_values

    invalid = np.array([[False, True, False]])
    err = error_values(np.array([[0.03, 0.5, -0.01]], np.float32), invalid)
    np.testing.assert_array_equal(err, np.array([[0.03, ERROR_NODATA, 0.0]], np.float32))
    out = np.array([[[1000.0, 0.0, 5000.0]], [[3000.0, 0.0, 0.0]]], np.float32)
    dn = np.array([[[800, 0, 5000]], [[3400, 0, 1000]]], np.uint16)
    ch = change_values(out, dn, invalid, 10000.0)
    np.testing.assert_allclose(ch, np.array([[(200 + 400) / 2 / 1e4, CHANGE_NODATA, 1000 / 2 / 1e4]]), rtol=1e-6)
