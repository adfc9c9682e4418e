"""The engine's pixel rules, pinned by value: which pixels are nodata, which are kept, which bands go where.

Every test builds inputs that exercise one rule (a band at 0 alone, NaN in VH only, DN above 10000,
permuted band descriptions, a cloud mask with nodata or partial cover) and checks exact output DN, so
breaking the rule changes a number the test compares.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasters
import torch
from mmcanet.errors import InputError, MMCANetError
from mmcanet.inference import RestoreOptions, restore_scene_with_model
from osgeo import gdal
from torch import nn
from toy_models import Card, Constant, Identity, OutOfMemoryAbove, Recorder, SarEcho, SmallConv

H, W = 40, 48


PLUMBING = {"keep_clear": True, "smooth_coarse_bands": False, "tame_bright_cloud": False}
"""Settings of these plumbing tests unless a test says otherwise: the rules here are about keeping clear
pixels and exact values, which the smoothing of coarse bands under cloud (tested on its own) would blur."""


def run(model: nn.Module, s1: Path, s2: Path, out: Path, card: Card | None = None, log: Any = None, **kw: Any) -> Any:
    kw = {**PLUMBING, **kw}
    return restore_scene_with_model(model, card or Card(), RestoreOptions(sar=s1, optical=s2, output=out, **{"harmonise": 0, "sar_structure": 0, **kw}), log=log)


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---- optical nodata: a pixel is nodata only when EVERY band holds the nodata value ------------------


def test_one_band_at_zero_is_not_nodata_all_bands_at_zero_is(tmp_path: Path) -> None:
    arr = rasters.s2_array(H, W)
    arr[:, :4, :] = 0  # every band 0: nodata
    lone = {0: 10, 6: 14, 12: 18}  # band index -> row where only that band is 0
    for band, row in lone.items():
        arr[band, row, 5:15] = 0
    arr[:12, 30, 5:15] = 0  # every band but the last at 0
    arr[1:, 34, 5:15] = 0  # every band but the first at 0
    s2 = rasters.write_s2(tmp_path / "s2.tif", H, W, array=arr)
    s1 = rasters.write_s1(tmp_path / "s1.tif", H, W)
    res = run(Constant(0.3), s1, s2, tmp_path / "o.tif", keep_clear=False, mask_output=tmp_path / "m.tif")
    out, mask = rasters.read(res.output), rasters.read(res.mask_output)[0]
    nodata = np.zeros((H, W), bool)
    nodata[:4] = True
    assert (out[:, nodata] == 0).all() and (mask[nodata] == 255).all()
    assert (out[:, ~nodata] == 3000).all(), "a pixel with some bands at 0 is valid and restored"
    assert (mask[~nodata] != 255).all()
    assert res.nodata_fraction == pytest.approx(4 * W / (H * W))


def test_optical_nodata_value_unset_means_zero(tmp_path: Path) -> None:
    arr = rasters.s2_array(H, W)
    arr[:, 8:12, 20:30] = 0
    s2 = rasters.write_s2(tmp_path / "s2.tif", H, W, array=arr, nodata=None)
    s1 = rasters.write_s1(tmp_path / "s1.tif", H, W)
    res = run(Constant(0.3), s1, s2, tmp_path / "o.tif", keep_clear=False)
    out = rasters.read(res.output)
    gap = np.zeros((H, W), bool)
    gap[8:12, 20:30] = True
    assert (out[:, gap] == 0).all() and (out[:, ~gap] == 3000).all()
    assert gdal.Open(str(res.output)).GetRasterBand(1).GetNoDataValue() == 0


def test_declared_optical_nodata_value_is_used(tmp_path: Path) -> None:
    arr = rasters.s2_array(H, W)
    arr[:, 8:12, 20:30] = 7
    arr[:, 20:22, 20:30] = 0  # 0 is an ordinary value when the nodata value is 7
    s2 = rasters.write_s2(tmp_path / "s2.tif", H, W, array=arr, nodata=7)
    s1 = rasters.write_s1(tmp_path / "s1.tif", H, W)
    res = run(Constant(0.3), s1, s2, tmp_path / "o.tif", keep_clear=False)
    out = rasters.read(res.output)
    gap = np.zeros((H, W), bool)
    gap[8:12, 20:30] = True
    assert (out[:, gap] == 7).all() and (out[:, ~gap] == 3000).all()
    assert gdal.Open(str(res.output)).GetRasterBand(5).GetNoDataValue() == 7


def test_float_optical_nan_in_one_band_is_nodata(tmp_path: Path) -> None:
    arr = rasters.s2_array(H, W).astype(np.float32)
    arr[5, 10:14, 10:20] = np.nan
    s2 = rasters.write_s2(tmp_path / "s2.tif", H, W, array=arr)
    s1 = rasters.write_s1(tmp_path / "s1.tif", H, W)
    res = run(Constant(0.3), s1, s2, tmp_path / "o.tif", keep_clear=False)
    out = rasters.read(res.output)
    gap = np.zeros((H, W), bool)
    gap[10:14, 10:20] = True
    assert out.dtype == np.float32
    assert (out[:, gap] == 0).all()
    np.testing.assert_allclose(out[:, ~gap], 3000, atol=0.01)


# ---- SAR nodata: NaN or the nodata value in EITHER band, non-positive linear power ------------------


@pytest.mark.parametrize("band", [0, 1], ids=["VV", "VH"])
def test_nan_in_one_sar_band_only_is_restored_from_the_optical(tmp_path: Path, band: int) -> None:
    sar = rasters.s1_array(H, W)
    sar[band, 20:25, 10:20] = np.nan
    s1 = rasters.write_s1(tmp_path / "s1.tif", H, W, array=sar)
    s2 = rasters.write_s2(tmp_path / "s2.tif", H, W)
    res = run(Constant(0.3), s1, s2, tmp_path / "o.tif", keep_clear=False,
              mask_output=tmp_path / "m.tif", change_output=tmp_path / "c.tif")
    out, mask, change = (rasters.read(p) for p in (res.output, res.mask_output, res.change_output))
    # #10: a SAR gap never blanks valid optical pixels; they are restored from the optical alone
    assert (out == 3000).all()
    assert (mask[0] != 255).all() and (change[0] >= 0).all()
    assert res.sar_missing_fraction == pytest.approx(50 / (H * W))


def test_sar_nodata_value_in_vh_only_is_restored_from_the_optical(tmp_path: Path) -> None:
    sar = rasters.s1_array(H, W)
    sar[1, 5:9, 30:40] = -9999.0
    s1 = rasters.write_s1(tmp_path / "s1.tif", H, W, array=sar, nodata=-9999.0)
    s2 = rasters.write_s2(tmp_path / "s2.tif", H, W)
    res = run(Constant(0.3), s1, s2, tmp_path / "o.tif", keep_clear=False)
    out = rasters.read(res.output)
    assert (out == 3000).all() and res.sar_missing_fraction == pytest.approx(40 / (H * W))


def test_float_optical_nodata_value_and_nan_both_count_as_nodata(tmp_path: Path) -> None:
    """Floating-point DN: every band at the nodata value in one block, NaN in one band in another."""
    arr = rasters.s2_array(H, W).astype(np.float32)
    arr[:, 2:6, 2:12] = 0.0  # 40 px: the declared nodata in every band
    arr[3, 30:32, 30:40] = np.nan  # 20 px: NaN in one band
    s2 = rasters.write_s2(tmp_path / "s2.tif", H, W, array=arr, nodata=0)
    s1 = rasters.write_s1(tmp_path / "s1.tif", H, W)
    res = run(Constant(0.3), s1, s2, tmp_path / "o.tif", keep_clear=False)
    out = rasters.read(res.output)
    assert res.nodata_fraction == pytest.approx(60 / (H * W))
    assert (out[:, 2:6, 2:12] == 0).all() and (out[:, 30:32, 30:40] == 0).all()
    np.testing.assert_allclose(out[:, 20, 20], 3000.0, rtol=1e-6)  # float output: no rounding to DN


def test_nan_and_the_sar_nodata_value_both_count_as_missing(tmp_path: Path) -> None:
    """Both kinds of gap in one file: NaN in VV in one block, the declared nodata in VH in another."""
    sar = rasters.s1_array(H, W)
    sar[0, 2:4, 2:12] = np.nan  # 20 px
    sar[1, 30:34, 30:40] = -9999.0  # 40 px
    s1 = rasters.write_s1(tmp_path / "s1.tif", H, W, array=sar, nodata=-9999.0)
    s2 = rasters.write_s2(tmp_path / "s2.tif", H, W)
    res = run(Constant(0.3), s1, s2, tmp_path / "o.tif", keep_clear=False)
    assert (rasters.read(res.output) == 3000).all() and res.sar_missing_fraction == pytest.approx(60 / (H * W))


def test_zero_linear_power_in_vh_only_is_restored_from_the_optical(tmp_path: Path) -> None:
    sar = rasters.s1_array(H, W, linear=True)
    sar[1, 5:9, 30:40] = 0.0  # -inf dB: no measurement
    s1 = rasters.write_s1(tmp_path / "s1.tif", H, W, array=sar, linear=True)
    s2 = rasters.write_s2(tmp_path / "s2.tif", H, W)
    res = run(Constant(0.3), s1, s2, tmp_path / "o.tif", keep_clear=False)
    assert res.sar_units == "linear"
    out = rasters.read(res.output)
    assert (out == 3000).all() and res.sar_missing_fraction == pytest.approx(40 / (H * W))


# ---- a restored pixel never reads as nodata -----------------------------------------------------------


@pytest.mark.parametrize(("nodata", "nudged"), [(0, 1), (1, 0), (10000, 9999)])
def test_restored_pixel_equal_to_nodata_is_nudged(tmp_path: Path, nodata: int, nudged: int) -> None:
    arr = rasters.s2_array(H, W, dn_range=(2, 9000))
    arr[:, :3] = nodata
    s2 = rasters.write_s2(tmp_path / "s2.tif", H, W, array=arr, nodata=nodata)
    s1 = rasters.write_s1(tmp_path / "s1.tif", H, W)
    res = run(Constant(nodata / 10000), s1, s2, tmp_path / "o.tif", keep_clear=False)
    out = rasters.read(res.output)
    assert (out[:, :3] == nodata).all()
    assert (out[:, 3:] == nudged).all(), "every band at the nodata value would turn a restored pixel into a hole"


def test_restored_value_at_nodata_in_some_bands_is_nudged_there(tmp_path: Path) -> None:
    values = [0.0] * 13
    values[3] = 0.5  # B4 restored to 5000, every other band to 0 (= the nodata value)
    s2, s1 = rasters.write_s2(tmp_path / "s2.tif", H, W), rasters.write_s1(tmp_path / "s1.tif", H, W)
    out = rasters.read(run(Constant(values), s1, s2, tmp_path / "o.tif", keep_clear=False).output)
    # #10 finding 6: a valid 0 in any band is written 1 DN away from the (file-wide) nodata value
    expected = np.ones(13)
    expected[3] = 5000
    assert (out == expected[:, None, None]).all()


# ---- a given cloud mask: unknown (its nodata, outside its cover) counts as cloud ----------------------


def test_mask_nodata_pixels_are_restored_clear_pixels_kept(tmp_path: Path) -> None:
    m = np.zeros((H, W), np.uint8)
    m[5:12, 5:15] = 255  # the mask's nodata value: unknown
    m[25:35, 30:40] = 1  # cloud
    mask = rasters.write_mask(tmp_path / "mask.tif", m, nodata=255)
    s2, s1 = rasters.write_s2(tmp_path / "s2.tif", H, W), rasters.write_s1(tmp_path / "s1.tif", H, W)
    res = run(Constant(0.5), s1, s2, tmp_path / "o.tif", cloud_mask=mask, feather=0, mask_output=tmp_path / "m.tif")
    out, src, used = rasters.read(res.output), rasters.read(s2), rasters.read(res.mask_output)[0]
    restore = m != 0
    assert (out[:, restore] == 5000).all()
    np.testing.assert_array_equal(out[:, ~restore], src[:, ~restore])
    np.testing.assert_array_equal(used, restore.astype(np.uint8))
    assert res.cloud_mask_source == "given" and res.cloud_fraction == pytest.approx(restore.mean())


def test_mask_covering_half_the_scene_restores_the_other_half(tmp_path: Path) -> None:
    mask = rasters.write_mask(tmp_path / "mask.tif", np.zeros((H, W // 2), np.uint8))  # clear, left half only
    s2, s1 = rasters.write_s2(tmp_path / "s2.tif", H, W), rasters.write_s1(tmp_path / "s1.tif", H, W)
    logs: list[str] = []
    res = run(Constant(0.5), s1, s2, tmp_path / "o.tif", cloud_mask=mask, feather=0, log=logs.append)
    out, src = rasters.read(res.output), rasters.read(s2)
    np.testing.assert_array_equal(out[:, :, : W // 2], src[:, :, : W // 2])
    assert (out[:, :, W // 2 :] == 5000).all(), "outside the mask nothing is known: restore, never keep blindly"
    assert any("cloud mask" in m and "50%" in m for m in logs)


def test_feather_blends_only_next_to_the_mask(tmp_path: Path) -> None:
    m = np.zeros((H, W), np.uint8)
    m[15:25, 20:30] = 1
    mask = rasters.write_mask(tmp_path / "mask.tif", m)
    s2, s1 = rasters.write_s2(tmp_path / "s2.tif", H, W), rasters.write_s1(tmp_path / "s1.tif", H, W)
    out = rasters.read(run(Constant(0.5), s1, s2, tmp_path / "o.tif", cloud_mask=mask, feather=2).output).astype(float)
    src = rasters.read(s2).astype(float)
    assert (out[:, 15:25, 20:30] == 5000).all()
    # weight 1 on the mask, falling linearly to 0 over 2 * feather px: column 18 is 2 px left of it
    a, b = out[:, 15:25, 18], src[:, 15:25, 18]
    far = np.abs(5000 - b) > 500  # where input and restored differ enough to read the weight
    assert far.mean() > 0.9
    np.testing.assert_allclose((a[far] - b[far]) / (5000 - b[far]), 0.6, atol=0.002)
    np.testing.assert_array_equal(out[:, 15:25, :15], src[:, 15:25, :15])


# ---- DN above 10000 -----------------------------------------------------------------------------------


def test_kept_input_dn_above_10000_comes_back_exactly(tmp_path: Path) -> None:
    arr = rasters.s2_array(H, W, scale=6.0, dn_range=(1, 65535))
    assert (arr > 10000).mean() > 0.3  # the fixture exercises the rule
    m = np.zeros((H, W), np.uint8)
    m[10:30, 20:40] = 1
    mask = rasters.write_mask(tmp_path / "mask.tif", m)
    s2, s1 = rasters.write_s2(tmp_path / "s2.tif", H, W, array=arr), rasters.write_s1(tmp_path / "s1.tif", H, W)
    out = rasters.read(run(Constant(0.5), s1, s2, tmp_path / "o.tif", cloud_mask=mask, feather=0).output)
    clear = m == 0
    np.testing.assert_array_equal(out[:, clear], arr[:, clear])
    assert (out[:, ~clear] == 5000).all()


def test_model_sees_dn_above_10000_as_one_and_restores_them_to_10000(tmp_path: Path) -> None:
    arr = rasters.s2_array(H, W, scale=6.0, dn_range=(1, 65535))
    s2, s1 = rasters.write_s2(tmp_path / "s2.tif", H, W, array=arr), rasters.write_s1(tmp_path / "s1.tif", H, W)
    rec = Recorder()
    out = rasters.read(run(rec, s1, s2, tmp_path / "o.tif", keep_clear=False).output)
    seen = torch.cat([s for s, _, _ in rec.seen])
    assert float(seen.max()) == 1.0 and float(seen.min()) > 0.0
    np.testing.assert_array_equal(out, np.minimum(arr, 10000))


# ---- band order from band descriptions ------------------------------------------------------------------

PERMUTED = ("B12", "B2", "B8A", "B4", "B1", "B10", "B3", "B11", "B5", "B9", "B6", "B8", "B7")


@pytest.mark.parametrize("keep_clear", [False, True], ids=["restore-all", "keep-clear-detected"])
def test_optical_bands_are_matched_by_description(tmp_path: Path, keep_clear: bool) -> None:
    arr = rasters.s2_array(H, W)
    std = rasters.write_s2(tmp_path / "std.tif", H, W, array=arr)
    perm = rasters.write_s2(tmp_path / "perm.tif", H, W, array=arr, band_order=PERMUTED)
    s1 = rasters.write_s1(tmp_path / "s1.tif", H, W)
    a = run(SmallConv(), s1, std, tmp_path / "a.tif", keep_clear=keep_clear)
    b = run(SmallConv(), s1, perm, tmp_path / "b.tif", keep_clear=keep_clear)
    out_a, out_b = rasters.read(a.output), rasters.read(b.output)
    assert not np.array_equal(out_a, rasters.read(std)), "the model changed the scene"
    order = [rasters.S2_L1C.index(n) for n in PERMUTED]
    np.testing.assert_array_equal(out_b, out_a[order])  # same restoration, written in the file's own order
    ds = gdal.Open(str(b.output))
    assert tuple(ds.GetRasterBand(i + 1).GetDescription() for i in range(13)) == PERMUTED
    assert a.cloud_fraction == b.cloud_fraction


def test_unknown_band_descriptions_fall_back_to_the_standard_order_with_a_warning(tmp_path: Path) -> None:
    arr = rasters.s2_array(H, W)
    std = rasters.write_s2(tmp_path / "std.tif", H, W, array=arr)
    odd = rasters.write_raster(tmp_path / "odd.tif", arr, geotransform=rasters.default_geotransform(),
                               nodata=0, descriptions=[f"band {i}" for i in range(1, 14)])
    s1 = rasters.write_s1(tmp_path / "s1.tif", H, W)
    a = run(SmallConv(), s1, std, tmp_path / "a.tif", keep_clear=False)
    b = run(SmallConv(), s1, odd, tmp_path / "b.tif", keep_clear=False)
    np.testing.assert_array_equal(rasters.read(b.output), rasters.read(a.output))
    assert any("not Sentinel-2 band names" in w for w in b.warnings) and not a.warnings


def test_sar_bands_are_matched_by_description(tmp_path: Path) -> None:
    sar = rasters.s1_array(H, W)
    s2 = rasters.write_s2(tmp_path / "s2.tif", H, W)
    std = rasters.write_s1(tmp_path / "std.tif", H, W, array=sar)
    swapped = rasters.write_s1(tmp_path / "swapped.tif", H, W, array=sar, order=("VH", "VV"))
    assert gdal.Open(str(swapped)).GetRasterBand(1).GetDescription().startswith("VH")
    a = run(SarEcho(), std, s2, tmp_path / "a.tif", keep_clear=False)
    b = run(SarEcho(), swapped, s2, tmp_path / "b.tif", keep_clear=False)
    out_a = rasters.read(a.output)
    vv = np.clip((sar[0] + 25) / 25, 0, 1) * 10000  # the model echoes normalised VV: [-25, 0] dB -> 0-1
    np.testing.assert_allclose(out_a[0], vv, atol=1)
    np.testing.assert_array_equal(rasters.read(b.output), out_a)


# ---- SAR read without warping only when the grids agree within tolerance ----------------------------


@pytest.mark.parametrize(
    ("shift", "warped"),
    [((0.0, 0.0), False), ((4e-4, 0.0), False), ((0.0, -4e-4), False), ((3e-3, 0.0), True), ((0.0, 3e-3), True)],
)
def test_sar_origin_tolerance_for_reading_without_warping(tmp_path: Path, shift: tuple[float, float], warped: bool) -> None:
    gt = list(rasters.default_geotransform())
    gt[0] += shift[0] * 10.0  # shifts in optical pixels (10 m)
    gt[3] += shift[1] * 10.0
    sar = rasters.s1_array(H, W)
    s1 = rasters.write_s1(tmp_path / "s1.tif", H, W, array=sar, geotransform=gt)
    s2 = rasters.write_s2(tmp_path / "s2.tif", H, W)
    res = run(SarEcho(), s1, s2, tmp_path / "o.tif", keep_clear=False)
    assert res.sar_warped is warped
    if not warped:  # read as is: every pixel's VV exactly, no resampling
        vv = np.rint(np.clip((sar[0] + 25) / 25, 0, 1) * 10000)
        np.testing.assert_array_equal(rasters.read(res.output)[0], vv)


@pytest.mark.parametrize(("rel", "warped"), [(5e-7, False), (3e-6, True)])
def test_sar_pixel_size_tolerance_for_reading_without_warping(tmp_path: Path, rel: float, warped: bool) -> None:
    gt = list(rasters.default_geotransform())
    gt[1] *= 1 + rel
    gt[5] *= 1 + rel
    s1 = rasters.write_s1(tmp_path / "s1.tif", H, W, geotransform=gt)
    s2 = rasters.write_s2(tmp_path / "s2.tif", H, W)
    assert run(SarEcho(), s1, s2, tmp_path / "o.tif", keep_clear=False).sar_warped is warped


def test_rotated_optical_grid_is_refused(tmp_path: Path) -> None:
    s2 = rasters.write_s2(tmp_path / "s2.tif", H, W, geotransform=(600000.0, 10.0, 2.0, 5000000.0, 2.0, -10.0))
    s1 = rasters.write_s1(tmp_path / "s1.tif", H, W)
    with pytest.raises(InputError, match="optical image '.*s2.tif' has a rotated geotransform.*gdalwarp"):
        run(Identity(), s1, s2, tmp_path / "o.tif")
    assert not (tmp_path / "o.tif").exists()


# ---- interruption and out-of-memory -------------------------------------------------------------------


def test_keyboard_interrupt_mid_run_leaves_no_file(tmp_path: Path) -> None:
    s2, s1 = rasters.write_s2(tmp_path / "s2.tif", 70, 70), rasters.write_s1(tmp_path / "s1.tif", 70, 70)
    before = files(tmp_path)
    seen: list[float] = []

    def progress(fraction: float) -> None:
        seen.append(fraction)
        if fraction > 0:
            # the user pressed Ctrl-C while the output is half written
            assert any(".partial-" in name for name in files(tmp_path))
            raise KeyboardInterrupt

    opts = RestoreOptions(sar=s1, optical=s2, output=tmp_path / "o.tif", mask_output=tmp_path / "m.tif",
                          change_output=tmp_path / "c.tif", batch_size=1)
    with pytest.raises(KeyboardInterrupt):
        restore_scene_with_model(Identity(), Card(), opts, progress=progress)
    assert 0 < seen[-1] < 1
    assert files(tmp_path) == before


def test_out_of_memory_halves_the_batch_until_it_fits(tmp_path: Path) -> None:
    # 2 tile rows of 5 tiles (32 px, overlap 8): the first batch holds 4 tiles
    s2, s1 = rasters.write_s2(tmp_path / "s2.tif", 40, 120), rasters.write_s1(tmp_path / "s1.tif", 40, 120)
    model = OutOfMemoryAbove(limit=1)
    res = run(model, s1, s2, tmp_path / "o.tif", keep_clear=False, batch_size=4)
    np.testing.assert_array_equal(rasters.read(res.output), rasters.read(s2))
    assert res.tiles == res.tiles_run == 10
    assert model.batches[:6] == [4, 2, 1, 1, 1, 1], "halved until it fits: 4 -> 2 -> 1 + 1 + 1 + 1"
    assert model.batches[6:] == [1] * 6, "later batches start at the size that fitted"
    assert [w for w in res.warnings if "out of GPU memory" in w] == [
        f"out of GPU memory: batch size reduced to {n} (CUDA out of memory. Tried to allocate 2.00 GiB)" for n in (2, 1)]


def test_out_of_memory_for_a_single_tile_is_a_clear_error(tmp_path: Path) -> None:
    s2, s1 = rasters.write_s2(tmp_path / "s2.tif", H, W), rasters.write_s1(tmp_path / "s1.tif", H, W)
    before = files(tmp_path)
    with pytest.raises(MMCANetError, match="out of GPU memory even for one 32x32 tile on cpu .*; use a smaller tile size"):
        run(OutOfMemoryAbove(limit=0), s1, s2, tmp_path / "o.tif", keep_clear=False, batch_size=2)
    assert files(tmp_path) == before


# ---- output layout and tags ---------------------------------------------------------------------------------


def test_output_tags_say_how_it_was_made(tmp_path: Path) -> None:
    s2, s1 = rasters.write_s2(tmp_path / "cloudy.tif", H, W), rasters.write_s1(tmp_path / "radar.tif", H, W)
    card = Card(name="toy-a", version="1.2")
    res = run(Identity(), s1, s2, tmp_path / "o.tif", card=card, keep_clear=False, tile_size=24, overlap=6)
    md = gdal.Open(str(res.output)).GetMetadata()
    from mmcanet import __version__

    expected = {"MMCANET_MODEL": "toy-a", "MMCANET_MODEL_VERSION": "1.2", "MMCANET_STRATEGY": "single",
                "MMCANET_TILE_SIZE": "24", "MMCANET_OVERLAP": "6", "MMCANET_KEEP_CLEAR": "no",
                "MMCANET_CLOUD_MASK": "detected", "MMCANET_SAR_UNITS": "db", "MMCANET_SAR": "radar.tif",
                "MMCANET_OPTICAL": "cloudy.tif", "MMCANET_VERSION": __version__}
    assert {k: md.get(k) for k in expected} == expected
    assert (res.tile_size, res.overlap, res.width, res.height) == (24, 6, W, H)


# ---- real data (../shared/data) ------------------------------------------------------------------------------


def test_real_triplet_with_clouds_runs_the_model_on_them(shared_data: Path, tmp_path: Path) -> None:
    """SEN12MS-CR triplet 4438 (36 % of its mask is cloud): masked pixels restored, the rest kept exactly."""
    d = shared_data / "sen12mscr-triplets"
    res = restore_scene_with_model(
        Constant(0.25), Card(tile_size=128, overlap=32),
        RestoreOptions(sar=d / "4438_s1.tif", optical=d / "4438_s2_cloudy.tif", output=tmp_path / "o.tif",
                       cloud_mask=d / "4438_cloudmask.tif", feather=0, keep_clear=True, sar_structure=0),
    )
    mask = rasters.read(d / "4438_cloudmask.tif")[0] != 0
    out, src = rasters.read(res.output), rasters.read(d / "4438_s2_cloudy.tif")
    valid = out.any(axis=0)
    assert 0.3 < mask.mean() < 0.4 and res.tiles_run >= 1 and valid.mean() > 0.99
    assert (out[:, mask & valid] == 2500).all()
    np.testing.assert_array_equal(out[:, ~mask & valid], src[:, ~mask & valid])
    assert math.isclose(res.cloud_fraction, float(mask[valid].mean()), rel_tol=1e-6)


# ---- clear pixels: kept for Level-2A input by default, restored for Level-1C -------------------------


@pytest.mark.parametrize(
    ("level", "keep_clear", "kept"),
    [("L2A", None, True), ("L1C", None, False), ("L2A", False, False), ("L1C", True, True), ("L2A", True, True)],
)
def test_clear_pixels_are_kept_by_default_for_level_2a_only(
    tmp_path: Path, level: str, keep_clear: bool | None, kept: bool
) -> None:
    """keep_clear None (the default) = by processing level: a Level-2A image (no B10) keeps the pixels its
    mask calls clear, a Level-1C image has every pixel restored; an explicit True / False wins either way."""
    s2 = rasters.write_s2(tmp_path / "s2.tif", H, W, level=level)
    s1 = rasters.write_s1(tmp_path / "s1.tif", H, W)
    cloud = np.zeros((H, W), np.uint8)
    cloud[10:20, 10:30] = 1
    mask = rasters.write_mask(tmp_path / "mask.tif", cloud)
    res = run(Constant(0.3), s1, s2, tmp_path / "o.tif", keep_clear=keep_clear, cloud_mask=mask, feather=0)
    out, inp = rasters.read(res.output), rasters.read(s2)
    assert out.shape == inp.shape
    assert (out[:, cloud == 1] == 3000).all()
    far = np.ones((H, W), bool)
    far[8:22, 8:32] = False  # away from the cloud's 1 px soft edge
    if kept:
        np.testing.assert_array_equal(out[:, far], inp[:, far])
    else:
        assert (out[:, far] == 3000).all()
    tags = gdal.Open(str(res.output)).GetMetadata()
    assert tags["MMCANET_KEEP_CLEAR"] == ("yes" if kept else "no")


def test_keeps_clear_rule() -> None:
    from mmcanet.bands import S2_BANDS_L1C, S2_BANDS_L2A
    from mmcanet.options import DEFAULT_KEEP_CLEAR, keeps_clear

    assert DEFAULT_KEEP_CLEAR is None
    assert keeps_clear(None, S2_BANDS_L2A) is True
    assert keeps_clear(None, S2_BANDS_L1C) is False
    assert keeps_clear(None, tuple(reversed(S2_BANDS_L1C))) is False  # by name, not by position
    assert keeps_clear(False, S2_BANDS_L2A) is False
    assert keeps_clear(True, S2_BANDS_L1C) is True


def test_level_2a_fill_takes_the_band_levels_of_the_kept_clear_pixels(tmp_path: Path) -> None:
    """Level-2A with its clear pixels kept: the harmonised fill is shifted band by band to the input's
    clear levels (a model that returns 3000 DN in a scene of 2000 DN fills the cloud with ~2000); a
    Level-1C scene with clear pixels kept keeps the model's 3000."""
    size = 96
    cloud = np.zeros((size, size), np.uint8)
    cloud[36:60, 36:60] = 1
    mask = rasters.write_mask(tmp_path / "mask.tif", cloud)
    s1 = rasters.write_s1(tmp_path / "s1.tif", size, size)
    inner = (slice(None), slice(42, 54), slice(42, 54))
    for level, expected in (("L2A", 2000), ("L1C", 3000)):
        bands = 12 if level == "L2A" else 13
        s2 = rasters.write_s2(tmp_path / f"{level}.tif", size, size, level=level,
                              array=np.full((bands, size, size), 2000, np.uint16))
        out = rasters.read(run(Constant(0.3), s1, s2, tmp_path / f"{level}_o.tif", keep_clear=True, cloud_mask=mask,
                               feather=0, harmonise=64).output)
        assert np.abs(out[inner].astype(np.int32) - expected).max() <= 2, (level, out[inner].min(), out[inner].max())


class GuideRecorder(nn.Module):
    """Identity with a ``guide_reach`` option (as the bundled network): records the override it was given."""

    guide_reach = 16

    def __init__(self) -> None:
        super().__init__()
        self.reaches: list[int | None] = []

    def forward(self, s2: torch.Tensor, s1: torch.Tensor, mask: torch.Tensor | None = None,
                guide_reach: int | None = None) -> torch.Tensor:
        self.reaches.append(guide_reach)
        return s2.clone()


@pytest.mark.parametrize(("level", "reach"), [("L2A", 0), ("L1C", None)])
def test_level_2a_guides_the_network_by_the_mask_as_given(tmp_path: Path, level: str, reach: int | None) -> None:
    """The network's own opacity estimate learned Level-1C clouds: for Level-2A input the engine asks for the
    mask as given (guide_reach 0); for Level-1C it leaves the network's own setting (no override)."""
    s2 = rasters.write_s2(tmp_path / "s2.tif", H, W, level=level)
    model = GuideRecorder()
    run(model, rasters.write_s1(tmp_path / "s1.tif", H, W), s2, tmp_path / "o.tif", keep_clear=False)
    assert model.reaches and set(model.reaches) == {reach}
