"""Outputs QGIS draws fast: internal overviews built while writing, Cloud-Optimised GeoTIFF on request.

Real GeoTIFFs with a UTM CRS, written through the project's RasterWriter and read back with GDAL.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasters
from mmcanet.errors import CancelledError
from mmcanet.output_files import cog_source_path_for, remove_stale_partials
from mmcanet.raster_write import OVERVIEW_MIN_SIZE, OVERVIEW_SMALLEST, RasterWriter, overview_levels
from osgeo import gdal, osr

HEIGHT, WIDTH = 1030, OVERVIEW_MIN_SIZE + 76  # just above the rule; odd sizes leave partial edge blocks
NODATA = 0


def _utm_wkt() -> str:
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32631)
    return srs.ExportToWkt()


def _data(count: int = 2, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    rng = np.random.default_rng(7)
    data = np.stack([rasters.smooth_field(rng, height, width) for _ in range(count)])
    data = (1000 + 3000 * (data - data.min()) / (np.ptp(data) + 1e-9)).astype(np.uint16)
    data[:, 100:140, 200:260] = NODATA  # a nodata hole: left out of the averaged overviews
    return data


def _write(path: Path, data: np.ndarray, *, is_canceled=None, **kw) -> Path:  # noqa: ANN001, ANN003
    w = RasterWriter(
        path, width=data.shape[2], height=data.shape[1], count=data.shape[0], dtype=data.dtype,
        geotransform=rasters.default_geotransform(), crs_wkt=_utm_wkt(), nodata=NODATA,
        descriptions=[f"B{i + 1}" for i in range(data.shape[0])], tags={"MMCANET_MODEL": "test v1"}, **kw,
    )
    with w:
        for row in range(0, data.shape[1], 300):
            w.write_rows(row, data[:, row : row + 300])
        return w.commit(is_canceled)


def _overview_sizes(path: Path) -> list[tuple[int, int]]:
    ds = gdal.Open(str(path))
    band = ds.GetRasterBand(1)
    return [(band.GetOverview(i).XSize, band.GetOverview(i).YSize) for i in range(band.GetOverviewCount())]


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [(OVERVIEW_MIN_SIZE - 1, OVERVIEW_MIN_SIZE - 1, []), (OVERVIEW_MIN_SIZE, 16, [2, 4]),
     (10980, 10980, [2, 4, 8, 16, 32, 64]), (700, 5000, [2, 4, 8, 16, 32])],
)
def test_overview_levels_rule(width: int, height: int, expected: list[int]) -> None:
    levels = overview_levels(width, height)
    assert levels == expected
    if levels:  # the coarsest level is the first one small enough, none coarser
        side = max(width, height)
        assert math.ceil(side / levels[-1]) <= OVERVIEW_SMALLEST < math.ceil(side / (levels[-1] // 2))


def test_large_output_gets_internal_averaged_overviews(tmp_path: Path) -> None:
    data = _data()
    out = _write(tmp_path / "restored.tif", data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["restored.tif"]  # internal: no .ovr, no partial left
    levels = overview_levels(WIDTH, HEIGHT)
    assert _overview_sizes(out) == [(math.ceil(WIDTH / f), math.ceil(HEIGHT / f)) for f in levels]
    ds = gdal.Open(str(out))
    np.testing.assert_array_equal(ds.ReadAsArray(), data)  # full resolution untouched
    assert ds.GetMetadataItem("MMCANET_MODEL") == "test v1"
    assert [ds.GetRasterBand(i + 1).GetDescription() for i in range(2)] == ["B1", "B2"]
    assert ds.GetRasterBand(2).GetNoDataValue() == NODATA
    ov = ds.GetRasterBand(1).GetOverview(0).ReadAsArray().astype(np.float64)
    ds = None
    # 2x2 means of valid pixels; blocks entirely inside the hole stay nodata
    blocks = data[0, : HEIGHT // 2 * 2, : WIDTH // 2 * 2].reshape(HEIGHT // 2, 2, WIDTH // 2, 2).astype(np.float64)
    valid = blocks != NODATA
    count = valid.sum(axis=(1, 3))
    mean = np.where(count > 0, (blocks * valid).sum(axis=(1, 3)) / np.maximum(count, 1), NODATA)
    full = count == 4
    assert np.abs(ov[: HEIGHT // 2, : WIDTH // 2][full] - mean[full]).max() <= 1.0  # integer rounding
    assert (ov[50:70, 100:130] == NODATA).all()
    ds = gdal.Open(str(out))
    ov2 = ds.GetRasterBand(1).GetOverview(1).ReadAsArray().astype(np.float64)  # 4x: from the 2x level
    h4, w4 = HEIGHT // 4, WIDTH // 4
    blocks4 = data[0, : h4 * 4, : w4 * 4].reshape(h4, 4, w4, 4).astype(np.float64)
    whole4 = (blocks4 != NODATA).all(axis=(1, 3))
    assert np.abs(ov2[:h4, :w4][whole4] - blocks4.mean(axis=(1, 3))[whole4]).max() <= 1.0


def test_overviews_do_not_depend_on_how_the_rows_arrive(tmp_path: Path) -> None:
    """16-row blocks: the 8x level gets 2 rows per block row, and the 1030-row raster ends on an odd
    carry at every level; the result must equal a write in 256-row blocks."""
    data = _data(count=1)
    small = _write(tmp_path / "small_blocks.tif", data, block=16)
    large = _write(tmp_path / "large_blocks.tif", data)
    a, b = gdal.Open(str(small)), gdal.Open(str(large))
    assert a.GetRasterBand(1).GetBlockSize() == [16, 16]
    for k in range(len(overview_levels(WIDTH, HEIGHT))):
        np.testing.assert_array_equal(a.GetRasterBand(1).GetOverview(k).ReadAsArray(),
                                      b.GetRasterBand(1).GetOverview(k).ReadAsArray())


def test_small_output_and_switched_off_get_none(tmp_path: Path) -> None:
    assert _overview_sizes(_write(tmp_path / "small.tif", _data(height=200, width=300))) == []
    assert _overview_sizes(_write(tmp_path / "off.tif", _data(), overviews=False)) == []


def test_categorical_outputs_use_nearest(tmp_path: Path) -> None:
    mask = (_data(count=1) > 2500).astype(np.uint8)  # classes 0 / 1 only
    out = _write(tmp_path / "mask.tif", mask, resampling="NEAREST")
    ds = gdal.Open(str(out))  # keep the dataset referenced while its bands are used
    ov = ds.GetRasterBand(1).GetOverview(0).ReadAsArray()
    assert set(np.unique(ov)) <= {0, 1}  # an average would invent fractions / other classes


@pytest.mark.parametrize("overviews", [True, False])
def test_cog_is_valid_and_equal_to_the_plain_output(tmp_path: Path, overviews: bool) -> None:
    data = _data(count=3)
    plain = _write(tmp_path / "plain.tif", data, overviews=overviews)
    cog = _write(tmp_path / "cog.tif", data, overviews=overviews, cog=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cog.tif", "plain.tif"]  # the COG's source is gone
    a, b = gdal.Open(str(plain)), gdal.Open(str(cog))
    assert b.GetMetadata("IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    assert "LAYOUT=COG" in gdal.Info(b)
    assert a.GetMetadata("IMAGE_STRUCTURE").get("LAYOUT") != "COG"
    np.testing.assert_array_equal(b.ReadAsArray(), a.ReadAsArray())
    assert b.GetMetadata() == a.GetMetadata()
    assert b.GetGeoTransform() == a.GetGeoTransform()
    assert osr.SpatialReference(b.GetProjection()).IsSame(osr.SpatialReference(a.GetProjection()))
    for i in range(1, 4):
        ba, bb = a.GetRasterBand(i), b.GetRasterBand(i)
        assert (bb.GetDescription(), bb.GetNoDataValue()) == (ba.GetDescription(), ba.GetNoDataValue())
        assert bb.GetOverviewCount() == ba.GetOverviewCount() == (len(overview_levels(WIDTH, HEIGHT)) if overviews else 0)
        for k in range(ba.GetOverviewCount()):  # the COG copies the overviews the writer built
            np.testing.assert_array_equal(bb.GetOverview(k).ReadAsArray(), ba.GetOverview(k).ReadAsArray())


@pytest.mark.parametrize(("overviews", "cog"), [(True, False), (False, True), (True, True)])
def test_cancel_while_finishing_leaves_the_old_file_and_nothing_else(tmp_path: Path, overviews: bool, cog: bool) -> None:
    out = tmp_path / "restored.tif"
    out.write_bytes(b"previous run")
    with pytest.raises(CancelledError, match="restored.tif"):
        _write(out, _data(), overviews=overviews, cog=cog, is_canceled=lambda: True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["restored.tif"]
    assert out.read_bytes() == b"previous run"


def test_stale_cog_source_of_a_killed_writer_is_removed(tmp_path: Path) -> None:
    out = tmp_path / "restored.tif"
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    dead = int(proc.stdout)  # a process that has exited
    stale = tmp_path / f".restored.tif.partial-{dead}.src.tif"  # named like cog_source_path_for(out) in that process
    assert cog_source_path_for(out).name.endswith(".src.tif")
    stale.write_bytes(b"half a tiff")
    assert remove_stale_partials(out) == [stale]
    assert not stale.exists()


def test_thirteen_bands_finish_without_gdal_errors(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """GDAL 3.6's threaded decoding printed an error per block (from worker threads, to stderr) while
    reading back a 13-band file for its overviews; QGIS would log each one."""
    data = _data(count=13)
    capfd.readouterr()
    out = _write(tmp_path / "s2.tif", data, cog=True)
    assert "ERROR" not in capfd.readouterr().err
    np.testing.assert_array_equal(gdal.Open(str(out)).ReadAsArray(), data)
