"""Raster I/O: clear errors naming the file, safe temp-file writing, GDAL exception mode left untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasters
from mmcanet.alignment import align_to, same_grid
from mmcanet.errors import InputError
from mmcanet.output_files import temp_path_for
from mmcanet.raster_read import check_readable, open_raster, read_window
from mmcanet.raster_write import RasterWriter
from mmcanet.windows import Window
from osgeo import gdal


def test_open_describes_raster(make_s2) -> None:  # noqa: ANN001
    ds, info = open_raster(make_s2(height=30, width=40), "optical image")
    assert (info.width, info.height, info.count) == (40, 30, 13)
    assert info.dtype == np.uint16 and info.georeferenced
    assert info.descriptions[8] == "B8A" and info.nodata[0] == 0
    win = read_window(ds, Window(5, 6, 7, 8), "x", bands=[2, 1])
    assert win.shape == (2, 8, 7) and win.dtype == np.uint16


@pytest.mark.parametrize("content", [None, b"", b"not a tiff at all" * 10])
def test_open_errors_name_the_file(tmp_path: Path, content: bytes | None) -> None:
    p = tmp_path / "broken.tif"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(InputError, match="optical image '.*broken.tif'"):
        open_raster(p, "optical image")


def test_truncated_file_fails_check_readable(make_s2, tmp_path: Path) -> None:  # noqa: ANN001
    src = make_s2(height=300, width=300)
    data = src.read_bytes()
    bad = tmp_path / "truncated.tif"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated.tif"):
        ds, _ = open_raster(bad, "optical image")
        check_readable(ds, f"optical image '{bad}'")


def test_errors_work_with_gdal_exceptions_enabled_and_mode_is_restored(tmp_path: Path) -> None:
    before = gdal.GetUseExceptions()
    gdal.UseExceptions()
    try:
        with pytest.raises(InputError, match="missing.tif"):
            open_raster(tmp_path / "missing.tif", "SAR image")
        (tmp_path / "junk.tif").write_bytes(b"junk" * 100)
        with pytest.raises(InputError, match="junk.tif"):
            open_raster(tmp_path / "junk.tif", "SAR image")
        assert gdal.GetUseExceptions() == 1
    finally:
        if not before:
            gdal.DontUseExceptions()
    assert gdal.GetUseExceptions() == before


def _writer(path: Path, height: int = 70, width: int = 50, count: int = 3, **kw) -> RasterWriter:  # noqa: ANN003
    return RasterWriter(
        path, width=width, height=height, count=count, dtype=np.uint16,
        geotransform=rasters.default_geotransform(), crs_wkt=_utm_wkt(), nodata=0,
        descriptions=("a", "b", "c"), tags={"K": "V"}, block=32, **kw,
    )


def _utm_wkt() -> str:
    from osgeo import osr

    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32631)
    return srs.ExportToWkt()


def test_writer_rows_in_odd_chunks_then_rename(tmp_path: Path) -> None:
    out = tmp_path / "out.tif"
    data = np.random.default_rng(0).integers(1, 60000, (3, 70, 50)).astype(np.uint16)
    w = _writer(out)
    assert w.tmp_path.exists() and not out.exists()
    row = 0
    for n in (7, 30, 1, 32):  # crosses 32-row block boundaries unevenly
        w.write_rows(row, data[:, row : row + n])
        row += n
    assert w.commit() == out.absolute()
    assert not w.tmp_path.exists()
    np.testing.assert_array_equal(rasters.read(out), data)
    ds = gdal.Open(str(out))
    assert ds.GetMetadataItem("K") == "V" and ds.GetRasterBand(2).GetDescription() == "b"
    assert ds.GetRasterBand(1).GetNoDataValue() == 0
    assert ds.GetMetadataItem("COMPRESSION", "IMAGE_STRUCTURE") == "DEFLATE"
    assert ds.GetRasterBand(1).GetBlockSize() == [32, 32]
    ds = None


def test_writer_discard_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out.tif"
    with pytest.raises(RuntimeError), _writer(out) as w:
        w.write_rows(0, np.ones((3, 10, 50), np.uint16))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_incomplete(tmp_path: Path) -> None:
    w = _writer(tmp_path / "out.tif")
    w.write_rows(0, np.ones((3, 10, 50), np.uint16))
    with pytest.raises(Exception, match="only 10 of 70 rows"):
        w.commit()
    w.discard()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["missing_dir", "is_dir", "under_file"])
def test_output_not_writable(tmp_path: Path, where: str) -> None:
    (tmp_path / "file.txt").write_text("x")
    path = {"missing_dir": tmp_path / "nope" / "out.tif", "is_dir": tmp_path,
            "under_file": tmp_path / "file.txt" / "out.tif"}[where]
    with pytest.raises(InputError, match="output '"):
        _writer(path)


def test_temp_path_is_in_same_folder(tmp_path: Path) -> None:
    t = temp_path_for(tmp_path / "a.tif")
    assert t.parent == tmp_path and t.name.startswith(".a.tif.partial")


def test_align_same_grid_is_not_warped(make_s2, make_s1) -> None:  # noqa: ANN001
    _, oi = open_raster(make_s2(), "optical")
    sds, si = open_raster(make_s1(), "sar")
    assert same_grid(si, oi)
    a = align_to(sds, si, oi, what="sar", ref_what="optical")
    assert not a.warped and a.coverage == 1.0



def test_threaded_decoding_only_where_gdal_has_it_without_the_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    """GDAL 3.6.x's multi-threaded GeoTIFF decoding can crash the process: it is used from 3.7.1 on only."""
    from mmcanet import raster_read

    version = int(gdal.VersionInfo("VERSION_NUM"))
    assert raster_read.threaded_decoding_is_safe() == (version >= 3070100)
    for num, safe in (("3060200", False), ("3070000", False), ("3070100", True), ("3080400", True)):
        monkeypatch.setattr(raster_read.gdal, "VersionInfo", lambda _key, n=num: n)
        assert raster_read.threaded_decoding_is_safe() is safe
