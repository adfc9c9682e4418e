"""Sample reading through rasterio: the same pixels as osgeo.gdal, clear errors, one GDAL in the process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasters
from mmcanet.errors import InputError
from mmcanet.sample_io import _read_bands, raster_info, read_s2_dn
from osgeo import gdal


def _gdal_bands(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    ds = gdal.Open(str(path))
    out = []
    for i in range(ds.RasterCount):
        band = ds.GetRasterBand(i + 1)
        a = band.ReadAsArray() if size is None else band.ReadAsArray(
            buf_xsize=size[1], buf_ysize=size[0], resample_alg=gdal.GRIORA_Bilinear)
        out.append(a.astype(np.float32))
    return np.stack(out)


@pytest.mark.parametrize("size", [None, (30, 21), (90, 70)])
def test_same_pixels_as_gdal_with_nodata_and_resampling(tmp_path: Path, size: tuple[int, int] | None) -> None:
    arr = rasters.s2_array(45, 35)[:3]
    arr[:, :4, :6] = 0
    arr[1, 10, 10] = 0  # nodata in one band only: that pixel is invalid
    path = rasters.write_raster(tmp_path / "a.tif", arr, geotransform=rasters.default_geotransform(), nodata=0)
    got, invalid = _read_bands(path, size)
    ref = _gdal_bands(path, size)
    ref_bad = ref == 0
    ref[ref_bad] = np.nan
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(invalid, ref_bad.any(axis=0))
    if size is None:
        assert invalid[10, 10] and invalid[:4, :6].all() and invalid.sum() == 4 * 6 + 1


def test_header_and_non_georeferenced_file(tmp_path: Path) -> None:
    path = rasters.write_s2(tmp_path / "x_s2.tif", 20, 24, epsg=None)
    info = raster_info(path)
    assert (info.count, info.height, info.width, info.dtype) == (13, 20, 24, np.dtype(np.uint16))
    assert info.descriptions[8] == "B8A"
    dn, invalid = read_s2_dn(path)
    assert dn.shape == (13, 20, 24) and not invalid.all()


def test_missing_and_corrupt_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nope.tif: file not found"):
        raster_info(tmp_path / "nope.tif")
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00" + b"garbage" * 40)
    with pytest.raises(InputError, match="bad.tif: not a readable raster"):
        _read_bands(bad)


def test_real_bigearthnet_bands_resample_exactly_as_before(shared_data: Path) -> None:
    b02 = sorted(shared_data.glob("bigearthnet-s1s2/**/*_B02.tif"))[0]
    size = (raster_info(b02).height, raster_info(b02).width)
    for band in ("B01", "B05", "B11"):  # 60 m and 20 m bands onto the 10 m grid
        path = b02.with_name(b02.name.replace("B02", band))
        got, _ = _read_bands(path, size)
        np.testing.assert_array_equal(got, _gdal_bands(path, size))
