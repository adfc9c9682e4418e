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
    # optical column c's centre lies at x = c - 0.9 in mask pixels, inside mask column c - 1: nearest takes
    # that column's value (no blended values); column 0 lies outside the mask: 255 (no nodata declared)
    expected = np.tile(np.array([255] + [0] * 20 + [1] * 19, np.uint8), (30, 1))
    np.testing.assert_array_equal(got, expected)
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


def _tif(path: Path, array: np.ndarray, *, wkt: str, gt: tuple[float, ...] | None = None,
         gcps: list[tuple[float, float, float, float]] | None = None) -> Path:
    """A one-band GeoTIFF with any CRS; ``gcps`` as ``(pixel, line, x, y)`` (then no geotransform)."""
    arr = np.asarray(array)
    kind = {np.dtype(np.float32): gdal.GDT_Float32, np.dtype(np.uint16): gdal.GDT_UInt16}[arr.dtype]
    ds = gdal.GetDriverByName("GTiff").Create(str(path), arr.shape[1], arr.shape[0], 1, kind)
    if gcps is not None:
        ds.SetGCPs([gdal.GCP(x, y, 0.0, p, line) for p, line, x, y in gcps], wkt)
    else:
        ds.SetGeoTransform(list(gt or GT))
        ds.SetProjection(wkt)
    ds.GetRasterBand(1).WriteArray(arr)
    ds = None
    return path


def test_same_crs_compares_the_crs_not_its_spelling() -> None:
    wkt1 = _wkt(32631)
    wkt2 = str(_srs(32631).ExportToWkt(["FORMAT=WKT2_2018"]))
    from_proj = osr.SpatialReference()
    from_proj.ImportFromProj4("+proj=utm +zone=31 +datum=WGS84 +units=m +no_defs")
    assert wkt1 != wkt2
    assert same_crs(wkt1, wkt2) and same_crs(wkt2, wkt1) and same_crs(wkt1, str(from_proj.ExportToWkt()))
    assert not same_crs(wkt2, _wkt(32632))


def test_same_grid_tolerances_use_the_larger_pixel_side_and_include_their_bound() -> None:
    x0, y0 = GT[0], GT[3]
    wide = (x0, 20.0, 0.0, y0, 0.0, -10.0)  # 20 m x 10 m pixels: the origin may move 0.02 m either way
    tall = (x0, 10.0, 0.0, y0, 0.0, -20.0)
    for gt in (wide, tall):
        assert same_grid(_info(gt=(x0 + 0.015, *gt[1:3], y0 - 0.015, *gt[4:])), _info(gt=gt))
        assert not same_grid(_info(gt=(x0 + 0.025, *gt[1:])), _info(gt=gt))
    # a geographic grid of 1e-4 degree pixels: 1/1000 px is 1e-7 degree (no floor of 1 CRS unit)
    deg = (100.0, 1e-4, 0.0, 10.0, 0.0, -1e-4)
    assert same_grid(_info(gt=(100.0 + 5e-8, *deg[1:]), epsg=4326), _info(gt=deg, epsg=4326))
    assert not same_grid(_info(gt=(100.0 + 5e-5, *deg[1:]), epsg=4326), _info(gt=deg, epsg=4326))  # half a pixel
    assert not same_grid(_info(gt=(100.0, 1e-4 * (1 + 1e-3), *deg[2:]), epsg=4326), _info(gt=deg, epsg=4326))
    # the bounds are inclusive: exactly tol_px pixel of origin, exactly 1e-6 pixel of size / rotation
    g8 = (0.0, 8.0, 0.0, 0.0, 0.0, -8.0)
    assert same_grid(_info(gt=(1.0, 8.0, 0.0, 0.0, 0.0, -8.0)), _info(gt=g8), tol_px=0.125)
    assert same_grid(_info(gt=(0.0, 8.0, 0.0, -1.0, 0.0, -8.0)), _info(gt=g8), tol_px=0.125)
    assert same_grid(_info(gt=(0.0, 8.0, 1e-6 * 8.0, 0.0, 0.0, -8.0)), _info(gt=g8))
    assert not same_grid(_info(gt=(1.25, 8.0, 0.0, 0.0, 0.0, -8.0)), _info(gt=g8), tol_px=0.125)


@pytest.mark.parametrize(
    ("src", "dst", "gt", "size", "bulge"),
    [
        # 100 km of UTM 31N centred on its central meridian, in degrees: the northern edge (a line of
        # constant northing) reaches its highest latitude mid-edge, above both northern corners
        (32631, 4326, (450_000.0, 10_000.0, 0.0, 5_000_000.0, 0.0, -10_000.0), (10, 10), "top"),
        # the same in UTM 31S: the southern edge reaches its lowest latitude mid-edge
        (32731, 4326, (450_000.0, 10_000.0, 0.0, 5_000_000.0, 0.0, -10_000.0), (10, 10), "bottom"),
        # 6 x 20 degrees across the equator, in UTM 31N: the western and eastern edges (meridians) lie
        # farthest from the central meridian at the equator, mid-edge
        (4326, 32631, (0.0, 1.0, 0.0, 10.0, 0.0, -1.0), (6, 20), "left right"),
    ],
)
def test_footprint_samples_every_edge_including_its_middle(tmp_path: Path, src: int, dst: int,
                                                           gt: tuple[float, ...], size: tuple[int, int],
                                                           bulge: str) -> None:
    w, h = size
    ds, _ = open_raster(rasters.write_raster(tmp_path / "r.tif", np.zeros((h, w), np.float32), epsg=src,
                                             geotransform=gt), "SAR")
    ct = osr.CoordinateTransformation(_srs(src), _srs(dst))

    def at(col: float, row: float) -> tuple[float, float]:
        x, y, _ = ct.TransformPoint(gt[0] + col * gt[1], gt[3] + row * gt[5])
        return x, y

    corners = [at(c, r) for c in (0, w) for r in (0, h)]
    mids = {"top": at(w / 2, 0), "bottom": at(w / 2, h), "left": at(0, h / 2), "right": at(w, h / 2)}
    xs, ys = zip(*corners, *mids.values(), strict=True)
    got = footprint(ds, _wkt(dst))
    assert got == pytest.approx((min(xs), min(ys), max(xs), max(ys)), rel=0, abs=1e-9 if dst == 4326 else 1e-6)
    cx, cy = zip(*corners, strict=True)
    step = 1e-4 if dst == 4326 else 1_000.0  # each middle sticks out of the corners' box by more than this
    for edge in bulge.split():
        x, y = mids[edge]
        assert {"top": y > max(cy) + step, "bottom": y < min(cy) - step,
                "left": x < min(cx) - step, "right": x > max(cx) + step}[edge]


def test_coverage_of_a_geographic_grid_with_sub_degree_pixels(tmp_path: Path) -> None:
    # 40 x 30 pixels of 1e-4 degree at 100 E, 10 N (x > y: the overlap's height must use the y bounds)
    deg = (100.0, 1e-4, 0.0, 10.0, 0.0, -1e-4)
    _, ref = open_raster(rasters.write_s2(tmp_path / "s2.tif", 30, 40, epsg=4326, geotransform=deg), "optical")
    sar = rasters.write_raster(tmp_path / "s1.tif", np.full((30, 40), -7.0, np.float32), epsg=4326,
                               geotransform=(100.0, 1e-4, 0.0, 10.0 - 10e-4, 0.0, -1e-4))  # 10 rows south
    ds, info = open_raster(sar, "SAR")
    warn: list[str] = []
    al = align_to(ds, info, ref, what="SAR 's1'", ref_what="optical 's2'", warn=warn.append)
    assert al.warped and al.coverage == pytest.approx(2 / 3, abs=1e-9)
    assert warn == ["SAR 's1' covers about 67% of optical 's2' (bounding boxes); pixels outside it have no data from it"]
    got = al.dataset.ReadAsArray()
    assert np.isnan(got[:10]).all() and (got[10:] == -7.0).all()


def test_coverage_of_99_9_percent_counts_as_full(tmp_path: Path) -> None:
    x0, px, _, y0, _, py = GT
    _, ref = open_raster(rasters.write_s2(tmp_path / "s2.tif", 1, 1000), "optical")
    warn: list[str] = []
    for shift in (1, 2):  # 999 / 1000 of the width covered, then 998 / 1000
        path = rasters.write_raster(tmp_path / f"s1_{shift}.tif", np.zeros((1, 1000), np.float32),
                                    geotransform=(x0 + shift * px, px, 0, y0, 0, py))
        ds, info = open_raster(path, "SAR")
        al = align_to(ds, info, ref, what=f"SAR {shift}", ref_what="optical", warn=warn.append)
        assert al.warped and al.coverage == (0.999, 0.998)[shift - 1]
    assert warn == ["SAR 2 covers about 100% of optical (bounding boxes); pixels outside it have no data from it"]


def test_a_sar_that_does_not_transform_into_the_optical_crs_is_refused(tmp_path: Path) -> None:
    # an orthographic optical CRS centred on 45 N 5 E sees one hemisphere; a SAR at 45 S 175 W lies on the other
    ortho = osr.SpatialReference()
    ortho.ImportFromProj4("+proj=ortho +lat_0=45 +lon_0=5 +datum=WGS84")
    _, ref = open_raster(_tif(tmp_path / "o.tif", np.zeros((30, 40), np.uint16), wkt=str(ortho.ExportToWkt()),
                              gt=(0.0, 10.0, 0.0, 0.0, 0.0, -10.0)), "optical")
    sar = rasters.write_raster(tmp_path / "s1.tif", np.zeros((10, 10), np.float32), epsg=4326,
                               geotransform=(-176.0, 0.2, 0.0, -44.0, 0.0, -0.2))
    ds, info = open_raster(sar, "SAR")
    assert footprint(ds, ref.crs_wkt) is None
    with pytest.raises(InputError) as err:
        align_to(ds, info, ref, what="SAR 'a'", ref_what="optical 'b'")
    assert str(err.value) == ("SAR 'a' and optical 'b' do not overlap (in the optical CRS the first covers nothing "
                              "(its corners do not transform), the second x 0..400, y -300..0); check that both show "
                              "the same place")


def test_a_georeferenced_sar_beside_an_ungeoreferenced_optical_of_another_size_names_the_optical(tmp_path: Path) -> None:
    ds, info = open_raster(rasters.write_s1(tmp_path / "s1.tif", 30, 40), "SAR")
    _, ref = open_raster(rasters.write_s2(tmp_path / "s2.tif", 20, 40, epsg=None), "optical")
    with pytest.raises(InputError) as err:
        align_to(ds, info, ref, what="SAR 'a'", ref_what="optical 'b'")
    assert str(err.value) == ("optical 'b' has no georeferencing (no CRS / geotransform) and its size differs (40x30 "
                              "vs 40x20 for optical 'b'); georeference it (e.g. gdal_translate -a_srs -a_ullr) or "
                              "resample it to the same grid")


@pytest.mark.parametrize("nodata", [None, -9999.0])
def test_a_float64_sar_is_warped_to_float32(tmp_path: Path, nodata: float | None) -> None:
    x0, px, _, y0, _, py = GT
    ramp = np.tile(np.arange(40, dtype=np.float64) * 2.0, (30, 1))
    if nodata is not None:
        ramp[0, 0] = nodata
    al, _ = _aligned(tmp_path, ramp, (x0 + 1.5 * px, px, 0, y0, 0, py), nodata=nodata)
    got = al.dataset.ReadAsArray()
    assert got.dtype == np.float32 and math.isnan(al.nodata)
    np.testing.assert_allclose(got[5, 2:35], (np.arange(2, 35) - 1.5) * 2.0, atol=1e-4)
    assert np.isnan(got[:, 0]).all()
    assert np.isnan(got[0, 1]) == (nodata is not None)  # next to the declared nodata pixel: no value


def test_the_warped_vrt_lives_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x0, px, _, y0, _, py = GT
    inputs = tmp_path / "in"
    inputs.mkdir()
    monkeypatch.chdir(tmp_path)
    al, _ = _aligned(inputs, np.zeros((30, 40), np.float32), (x0 + 0.5 * px, px, 0, y0, 0, py))
    assert al.warped and al.dataset.GetDescription() == ""
    al.dataset.FlushCache()
    del al
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # nothing written beside the inputs or here


def _corner_gcps(x0: float, y0: float, w: int = 40, h: int = 30, px: float = 10.0) -> list[tuple[float, float, float, float]]:
    """Four GCPs ``(pixel, line, x, y)`` at the corners of a north-up ``px`` grid with its top-left corner at (x0, y0)."""
    return [(c, r, x0 + c * px, y0 - r * px) for c in (0, w) for r in (0, h)]


def test_a_sar_georeferenced_only_by_gcps_is_warped_through_them(tmp_path: Path) -> None:
    x0, px, _, y0, _, py = GT
    ramp = np.tile(np.arange(40, dtype=np.float32) * 2.0, (30, 1))
    path = _tif(tmp_path / "gcps.tif", ramp, wkt=_wkt(32631), gcps=_corner_gcps(x0 + 1.5 * px, y0))
    ds, info = open_raster(path, "SAR")
    # what the engine sees: no CRS, the default geotransform, georeferenced (by its GCPs)
    assert info.crs_wkt == "" and info.geotransform == (0.0, 1.0, 0.0, 0.0, 0.0, 1.0) and info.georeferenced
    assert footprint(ds, _wkt(32631)) == pytest.approx((x0 + 15, y0 - 300, x0 + 415, y0), rel=0, abs=1e-6)
    ct = osr.CoordinateTransformation(_srs(32631), _srs(4326))
    lons, lats = zip(*(ct.TransformPoint(x, y)[:2] for x in (x0 + 15, x0 + 415) for y in (y0 - 300, y0)), strict=True)
    assert footprint(ds, _wkt(4326)) == pytest.approx((min(lons), min(lats), max(lons), max(lats)), rel=0, abs=1e-9)
    _, ref = open_raster(rasters.write_s2(tmp_path / "s2.tif", 30, 40), "optical")
    warn: list[str] = []
    al = align_to(ds, info, ref, what="SAR 'g'", ref_what="optical 'o'", warn=warn.append)
    assert al.warped and al.coverage == pytest.approx(38.5 / 40, abs=1e-9) and math.isnan(al.nodata)
    assert warn == ["SAR 'g' covers about 96% of optical 'o' (bounding boxes); pixels outside it have no data from it"]
    got = al.dataset.ReadAsArray()
    np.testing.assert_allclose(got[5, 2:35], (np.arange(2, 35) - 1.5) * 2.0, atol=1e-4)  # as with a geotransform
    assert np.isnan(got[:, 0]).all()


@pytest.mark.parametrize("count", [1, 2])
def test_a_sar_with_too_few_gcps_is_refused(tmp_path: Path, count: int) -> None:
    x0, y0 = GT[0], GT[3]
    path = _tif(tmp_path / "gcps.tif", np.zeros((30, 40), np.float32), wkt=_wkt(32631),
                gcps=_corner_gcps(x0, y0)[:count])  # a polynomial needs 3
    ds, info = open_raster(path, "SAR")
    _, ref = open_raster(rasters.write_s2(tmp_path / "s2.tif", 30, 40), "optical")
    with pytest.raises(InputError, match=r"^SAR/optical footprint: .*GCP transform"):
        align_to(ds, info, ref, what="SAR 'g'", ref_what="optical 'o'")


def test_a_geotransform_with_a_crs_wins_over_gcps(tmp_path: Path) -> None:
    # a raster holding both (a VRT can): the footprint follows the geotransform, as gdalwarp does
    x0, y0 = GT[0], GT[3]
    ds = gdal.GetDriverByName("MEM").Create("", 40, 30, 1, gdal.GDT_Float32)
    ds.SetGeoTransform(GT)
    ds.SetProjection(_wkt(32631))
    ds.SetGCPs([gdal.GCP(x, y, 0.0, c, r) for c, r, x, y in _corner_gcps(x0 + 5000, y0)], _wkt(32631))
    assert ds.GetGCPCount() == 4
    assert footprint(ds, _wkt(32631)) == pytest.approx((x0, y0 - 300, x0 + 400, y0), rel=0, abs=1e-6)
