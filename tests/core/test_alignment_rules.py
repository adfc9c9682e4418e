"""Alignment's rules, each pinned by value: when two grids count as the same, when SAR is warped, what the
warped pixels hold, and the exact reason a user reads when two rasters cannot be put on one grid."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasters
from mmcanet.alignment import _bounds, _fmt_box, _is_north_up, align_to, footprint, same_crs, same_grid
from mmcanet.errors import InputError
from mmcanet.raster_read import RasterInfo, open_raster
from osgeo import gdal, osr

GT = rasters.default_geotransform()  # 10 m pixels, UTM 31N


def _srs(epsg: int) -> osr.SpatialReference:
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)  # x = easting / longitude
    return srs


def _wkt(epsg: int) -> str:
    return str(_srs(epsg).ExportToWkt())


def _info(width: int = 40, height: int = 30, gt: tuple[float, ...] = GT, epsg: int | None = 32631,
          georef: bool = True) -> RasterInfo:
    return RasterInfo(path="x", width=width, height=height, count=1, dtype=np.dtype("float32"),
                      crs_wkt=_wkt(epsg) if epsg else "", geotransform=tuple(gt), georeferenced=georef,
                      nodata=(None,), descriptions=("",))


def test_same_crs() -> None:
    assert same_crs("", "")
    assert not same_crs("", _wkt(32631)) and not same_crs(_wkt(32631), "")
    assert same_crs(_wkt(32631), _wkt(32631))
    assert not same_crs(_wkt(32631), _wkt(32632))


def test_same_grid_tolerates_only_rounding() -> None:
    a = _info()
    assert same_grid(a, _info())
    assert not same_grid(a, _info(width=41)) and not same_grid(a, _info(height=29))
    assert not same_grid(a, _info(epsg=32632))
    x0, px, _, y0, _, py = GT
    assert same_grid(a, _info(gt=(x0 + 0.0009 * px, px, 0, y0 - 0.0009 * px, 0, py)))  # 1/1000 px: rounding
    assert not same_grid(a, _info(gt=(x0 + 0.0011 * px, px, 0, y0, 0, py)))
    assert not same_grid(a, _info(gt=(x0, px, 0, y0 - 0.0011 * px, 0, py)))
    assert same_grid(a, _info(gt=(x0, px * (1 + 5e-7), 0, y0, 0, py)))
    assert not same_grid(a, _info(gt=(x0, px * (1 + 2e-6), 0, y0, 0, py)))  # 10 m vs 10.00002 m
    assert not same_grid(a, _info(gt=(x0, px, 0, y0, 0, py * (1 + 2e-6))))
    assert not same_grid(a, _info(gt=(x0, px, 0.01, y0, 0, py)))  # rotation terms
    assert not same_grid(a, _info(gt=(x0, px, 0, y0, 0.01, py)))
    assert same_grid(a, _info(gt=(x0, px, 0, y0 + 0.005, 0, py)), tol_px=0.001)
    assert not same_grid(a, _info(gt=(x0, px, 0, y0 + 0.02, 0, py)), tol_px=0.001)


def test_north_up_and_bounds() -> None:
    assert _is_north_up((0, 10, 0, 0, 0, -10))
    assert _is_north_up((0, 0.5, 0, 0, 0, -0.5))  # sub-unit pixels (degrees) are north-up too
    for gt in ((0, 10, 1, 0, 0, -10), (0, 10, 0, 0, 1, -10), (0, -10, 0, 0, 0, -10), (0, 10, 0, 0, 0, 10),
               (0, 0, 0, 0, 0, -10), (0, 10, 0, 0, 0, 0), (0, 10, 0, 0, 0, 0.5)):
        assert not _is_north_up(gt)
    assert _bounds(_info(width=40, height=30, gt=(100.0, 10, 0, 500.0, 0, -10))) == (100.0, 200.0, 500.0, 500.0)
    assert _bounds(_info(width=4, height=3, gt=(100.0, -10, 0, 500.0, 0, 10))) == (60.0, 500.0, 100.0, 530.0)
    assert _fmt_box(None) == "nothing (its corners do not transform)"
    assert _fmt_box((1.0, 2.0, 3.5, 4.25)) == "x 1..3.5, y 2..4.25"


def test_footprint_follows_the_edges_into_another_crs(tmp_path: Path) -> None:
    ds, info = open_raster(rasters.write_s1(tmp_path / "s1.tif", 30, 40), "SAR")
    same = footprint(ds, info.crs_wkt)
    assert same == pytest.approx(_bounds(info))
    lon_lat = footprint(ds, _wkt(4326))
    ct = osr.CoordinateTransformation(_srs(32631), _srs(4326))  # the test rasters are in UTM 31N
    x0, y0, x1, y1 = _bounds(info)
    corners = [ct.TransformPoint(x, y)[:2] for x in (x0, x1) for y in (y0, y1)]
    lons, lats = zip(*corners, strict=True)
    assert lon_lat == pytest.approx((min(lons), min(lats), max(lons), max(lats)), abs=1e-7)


def _aligned(tmp_path: Path, s1_array: np.ndarray, s1_gt: tuple[float, ...], *, epsg: int = 32631,
             nodata: float | None = None, warn: list[str] | None = None, resample: str = "bilinear",
             width: int = 40, height: int = 30):  # noqa: ANN202 - (Aligned, optical info)
    _, ref = open_raster(rasters.write_s2(tmp_path / "s2.tif", height, width), "optical image")
    path = rasters.write_raster(tmp_path / "sar.tif", s1_array, epsg=epsg, geotransform=s1_gt, nodata=nodata)
    ds, info = open_raster(path, "SAR image")
    return align_to(ds, info, ref, what="SAR image 'sar.tif'", ref_what="optical image 's2.tif'",
                    resample=resample, warn=(warn.append if warn is not None else None)), ref


def test_the_same_grid_is_read_as_it_is(tmp_path: Path) -> None:
    data = np.arange(30 * 40, dtype=np.float32).reshape(30, 40)
    al, _ = _aligned(tmp_path, data, GT, nodata=-9999.0)
    assert not al.warped and al.coverage == 1.0 and al.nodata == -9999.0 and al.source is al.dataset
    np.testing.assert_array_equal(al.dataset.ReadAsArray(), data)


def test_a_half_pixel_shift_is_warped_bilinearly_and_uncovered_pixels_are_nan(tmp_path: Path) -> None:
    x0, px, _, y0, _, py = GT
    ramp = np.tile(np.arange(40, dtype=np.float32) * 2.0, (30, 1))  # +2 per column
    warn: list[str] = []
    al, _ = _aligned(tmp_path, ramp, (x0 + 1.5 * px, px, 0, y0, 0, py), warn=warn)
    assert al.warped and al.source is not None and math.isnan(al.nodata)
    got = al.dataset.ReadAsArray()
    assert got.dtype == np.float32 and got.shape == (30, 40)
    # optical column c's centre lies at SAR column c - 1.5: the bilinear value (c - 1.5) * 2
    np.testing.assert_allclose(got[5, 5:35], (np.arange(5, 35) - 1.5) * 2.0, atol=1e-4)
    assert np.isnan(got[:, 0]).all()  # west of the SAR: no data
    assert al.coverage == pytest.approx(38.5 / 40, abs=1e-3)
    assert warn == ["SAR image 'sar.tif' covers about 96% of optical image 's2.tif' (bounding boxes); "
                    "pixels outside it have no data from it"]


def test_a_sar_nodata_value_becomes_nan_on_the_optical_grid(tmp_path: Path) -> None:
    x0, px, _, y0, _, py = GT
    data = np.full((30, 40), -12.0, np.float32)
    data[10:20, 10:20] = -9999.0
    al, _ = _aligned(tmp_path, data, (x0 + 0.5 * px, px, 0, y0, 0, py), nodata=-9999.0)
    got = al.dataset.ReadAsArray()
    assert math.isnan(al.nodata)
    assert np.isnan(got[14, 14]) and not np.isnan(got[25, 30])
    assert got[25, 30] == pytest.approx(-12.0) and np.nanmin(got) == pytest.approx(-12.0)  # never averaged with -9999


def test_a_mask_is_warped_nearest_with_its_nodata_kept(tmp_path: Path) -> None:
    x0, px, _, y0, _, py = GT
    mask = np.zeros((30, 40), np.uint8)
    mask[:, 20:] = 1
    al, _ = _aligned(tmp_path, mask, (x0 + 1.4 * px, px, 0, y0, 0, py), nodata=None, resample="near")
    got = al.dataset.ReadAsArray()
    assert al.warped and al.nodata == 255 and got.dtype == np.uint8
    assert set(np.unique(got[:, 1:])) <= {0, 1}  # nearest: no blended values
    assert got[0, 0] == 255  # outside the mask's footprint: its declared nodata
    al0, _ = _aligned(tmp_path, mask, (x0 + 1.4 * px, px, 0, y0, 0, py), nodata=7, resample="near")
    assert al0.nodata == 7 and al0.dataset.ReadAsArray()[0, 0] == 7


def test_rasters_without_georeferencing(tmp_path: Path) -> None:
    s2 = rasters.write_s2(tmp_path / "s2.tif", 30, 40, epsg=None)
    plain = rasters.write_raster(tmp_path / "s1.tif", np.zeros((2, 30, 40), np.float32), epsg=None, geotransform=None,
                                 nodata=-9999.0)
    (ds, info), (_, ref) = open_raster(plain, "SAR"), open_raster(s2, "optical")
    warn: list[str] = []
    al = align_to(ds, info, ref, what="SAR 'a'", ref_what="optical 'b'", warn=warn.append)
    assert al.warped is False and al.coverage == 1.0 and al.nodata == -9999.0 and al.source is ds and al.dataset is ds
    assert warn == ["SAR 'a' and optical 'b' have no georeferencing; assuming they are co-registered (same size)"]
    _, georef = open_raster(rasters.write_s2(tmp_path / "g.tif", 30, 40), "optical")
    warn.clear()
    align_to(ds, info, georef, what="SAR 'a'", ref_what="optical 'b'", warn=warn.append)
    assert warn == ["SAR 'a' has no georeferencing; assuming it is co-registered with the other input (same size)"]
    ds_g, info_g = open_raster(rasters.write_s1(tmp_path / "s1g.tif", 30, 40), "SAR")
    warn.clear()
    align_to(ds_g, info_g, ref, what="SAR 'a'", ref_what="optical 'b'", warn=warn.append)
    assert warn == ["optical 'b' has no georeferencing; assuming it is co-registered with the other input (same size)"]
    small = rasters.write_raster(tmp_path / "small.tif", np.zeros((2, 20, 40), np.float32), epsg=None, geotransform=None)
    ds_s, info_s = open_raster(small, "SAR")
    with pytest.raises(InputError) as err:
        align_to(ds_s, info_s, georef, what="SAR 'a'", ref_what="optical 'b'")
    assert str(err.value) == ("SAR 'a' has no georeferencing (no CRS / geotransform) and its size differs (40x20 vs "
                              "40x30 for optical 'b'); georeference it (e.g. gdal_translate -a_srs -a_ullr) or "
                              "resample it to the same grid")


def test_grids_that_cannot_be_aligned_are_refused_with_what_to_do(tmp_path: Path) -> None:
    x0, px, _, y0, _, py = GT
    s1 = rasters.write_s1(tmp_path / "s1.tif", 30, 40, geotransform=(x0 + 5, px, 0, y0, 0, py))
    ds, info = open_raster(s1, "SAR")
    ref = _info()
    no_crs = RasterInfo(**{**ref.__dict__, "crs_wkt": ""})
    with pytest.raises(InputError, match=r"^optical 'b' has a geotransform but no CRS; assign one \(gdal_edit.py -a_srs EPSG:...\)$"):
        align_to(ds, info, no_crs, what="SAR 'a'", ref_what="optical 'b'")
    rotated = RasterInfo(**{**ref.__dict__, "geotransform": (x0, px, 0.5, y0, 0, py)})
    with pytest.raises(InputError, match=r"^optical 'b' has a rotated geotransform; warp it to a north-up grid first \(gdalwarp\)$"):
        align_to(ds, info, rotated, what="SAR 'a'", ref_what="optical 'b'")
    sar_no_crs = RasterInfo(**{**info.__dict__, "crs_wkt": ""})
    with pytest.raises(InputError, match=r"^SAR 'a' has a geotransform but no CRS"):
        align_to(ds, sar_no_crs, ref, what="SAR 'a'", ref_what="optical 'b'")
    far = rasters.write_s1(tmp_path / "far.tif", 30, 40, geotransform=(x0 + 10_000, px, 0, y0, 0, py))
    ds_f, info_f = open_raster(far, "SAR")
    with pytest.raises(InputError) as err:
        align_to(ds_f, info_f, ref, what="SAR 'a'", ref_what="optical 'b'")
    b = _bounds(ref)
    assert str(err.value) == (f"SAR 'a' and optical 'b' do not overlap (in the optical CRS the first covers "
                              f"x {x0 + 10_000:.6g}..{x0 + 10_400:.6g}, y {b[1]:.6g}..{b[3]:.6g}, the second "
                              f"{_fmt_box(b)}); check that both show the same place")


def test_a_sar_in_another_utm_zone_is_reprojected(tmp_path: Path) -> None:
    _, ref = open_raster(rasters.write_s2(tmp_path / "s2.tif", 30, 40), "optical")
    ct = osr.CoordinateTransformation(_srs(32631), _srs(32632))
    x, y, _ = ct.TransformPoint(GT[0] - 200, GT[3] + 200)  # a SAR image around the optical one, in zone 32
    path = rasters.write_raster(tmp_path / "z32.tif", np.full((2, 80, 80), -10.0, np.float32), epsg=32632,
                                geotransform=(x, 10, 0, y, 0, -10))
    ds, info = open_raster(path, "SAR")
    warn: list[str] = []
    al = align_to(ds, info, ref, what="SAR 'z'", ref_what="optical 'o'", warn=warn.append)
    got = al.dataset.ReadAsArray()
    assert al.warped and al.coverage == pytest.approx(1.0) and warn == []
    assert got.shape == (2, 30, 40) and np.allclose(got, -10.0)
    assert gdal.Info(al.dataset, format="json")["size"] == [40, 30]
