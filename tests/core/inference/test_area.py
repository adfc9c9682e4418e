"""Area-of-interest restores: the window arithmetic, and a windowed run against a whole-scene run.

An AOI run must read and write only the optical pixels the extent touches, be georeferenced on the
optical grid (same pixel edges as the whole scene), and give the same pixels as a whole-scene run
inside the window when the model is pixelwise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasters
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from mmcanet.errors import InputError
from mmcanet.inference import RestoreOptions, restore_scene_with_model
from mmcanet.options import problems
from mmcanet.windows import Window, window_bounds, window_from_bounds
from osgeo import gdal, osr
from torch import nn
from toy_models import Card

GT = rasters.default_geotransform()  # 10 m, UTM 31N, origin (600000, 5000000)
H, W = 48, 64


class SarEcho(nn.Module):
    """Every output band = the normalised VV it was given (pixelwise: tiling cannot change it)."""

    def forward(self, s2: torch.Tensor, s1: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return s1[:, :1].expand_as(s2).clone()


# ---- window arithmetic -----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(c0=st.integers(0, W - 1), r0=st.integers(0, H - 1), w=st.integers(1, W), h=st.integers(1, H))
def test_bounds_of_a_window_give_back_that_window(c0: int, r0: int, w: int, h: int) -> None:
    window = Window(c0, r0, min(w, W - c0), min(h, H - r0))
    assert window_from_bounds(window_bounds(window, GT), GT, W, H) == window


@settings(max_examples=100, deadline=None)
@given(x=st.floats(-200, 800), y=st.floats(-600, 200), dx=st.floats(0.5, 900), dy=st.floats(0.5, 900))
def test_window_covers_the_bounds_snapped_outward_and_clipped(x: float, y: float, dx: float, dy: float) -> None:
    bounds = (GT[0] + x, GT[3] - y - dy, GT[0] + x + dx, GT[3] - y)
    window = window_from_bounds(bounds, GT, W, H)
    image = (GT[0], GT[3] - H * 10, GT[0] + W * 10, GT[3])
    overlap = (max(bounds[0], image[0]), max(bounds[1], image[1]), min(bounds[2], image[2]), min(bounds[3], image[3]))
    if overlap[0] >= overlap[2] - 1e-4 or overlap[1] >= overlap[3] - 1e-4:
        return  # (near) no overlap: None or a sliver, both acceptable at this tolerance
    assert window is not None
    got = window_bounds(window, GT)
    # covers the overlap, and by less than one pixel more on each side
    assert got[0] <= overlap[0] + 1e-6 and got[1] <= overlap[1] + 1e-6
    assert got[2] >= overlap[2] - 1e-6 and got[3] >= overlap[3] - 1e-6
    assert overlap[0] - got[0] < 10 and overlap[1] - got[1] < 10
    assert got[2] - overlap[2] < 10 and got[3] - overlap[3] < 10


def test_window_outside_the_raster_is_none() -> None:
    assert window_from_bounds((GT[0] - 500, GT[3] - 100, GT[0] - 10, GT[3]), GT, W, H) is None
    # touching the edge only is not an overlap
    assert window_from_bounds((GT[0] - 500, GT[3] - 100, GT[0], GT[3]), GT, W, H) is None


def test_extent_rules_are_checked_without_files() -> None:
    opts = RestoreOptions(sar="", optical="", output="", extent=(10.0, 5.0, 0.0, 6.0))
    assert any("extent" in p and "empty" in p for p in problems(opts))
    opts = RestoreOptions(sar="", optical="", output="", extent=(0.0, 0.0, float("nan"), 1.0))  # type: ignore[arg-type]
    assert any("finite" in p for p in problems(opts))


# ---- windowed restores -----------------------------------------------------------------------------


@pytest.fixture
def pair(tmp_path: Path) -> dict[str, Path]:
    return {"s1": rasters.write_s1(tmp_path / "s1.tif", H, W, seed=3),
            "s2": rasters.write_s2(tmp_path / "s2.tif", H, W, seed=4)}


def _restore(pair: dict[str, Path], out: Path, **kw: object) -> object:
    # harmonise 0: the fill harmonisation looks ~200 px around each pixel, like a model with context would
    opts = RestoreOptions(sar=pair["s1"], optical=pair["s2"], output=out, keep_clear=False, harmonise=0, sar_structure=0, **kw)  # type: ignore[arg-type]
    return restore_scene_with_model(SarEcho(), Card(), opts)


def test_aoi_run_is_the_whole_run_cut_to_the_window(pair: dict[str, Path], tmp_path: Path) -> None:
    _restore(pair, tmp_path / "whole.tif")
    # 13.3 px .. 41.7 px across, 5.5 .. 30.2 px down: snapped outward to columns 13..41, rows 5..30
    extent = (GT[0] + 133, GT[3] - 302, GT[0] + 417, GT[3] - 55)
    result = _restore(pair, tmp_path / "aoi.tif", extent=extent)
    window = Window(13, 5, 29, 26)
    ds = gdal.Open(str(tmp_path / "aoi.tif"))
    assert (ds.RasterXSize, ds.RasterYSize) == (window.width, window.height)
    assert ds.GetGeoTransform() == pytest.approx((GT[0] + 130, 10, 0, GT[3] - 50, 0, -10))
    whole_srs = osr.SpatialReference(gdal.Open(str(tmp_path / "whole.tif")).GetProjection())
    assert osr.SpatialReference(ds.GetProjection()).IsSame(whole_srs)
    assert result.width == window.width and result.height == window.height  # type: ignore[attr-defined]
    ds = None
    whole = rasters.read(tmp_path / "whole.tif")
    aoi = rasters.read(tmp_path / "aoi.tif")
    np.testing.assert_array_equal(aoi, whole[(slice(None), *window.slices())])


def test_aoi_in_another_crs_is_transformed_to_the_optical_crs(pair: dict[str, Path], tmp_path: Path) -> None:
    window = Window(20, 10, 16, 12)
    bounds = window_bounds(window, GT)
    # the window's bounds in WGS 84 (lon/lat): transformed back they cover the window (+ at most a pixel)
    utm, wgs = osr.SpatialReference(), osr.SpatialReference()
    utm.ImportFromEPSG(rasters.UTM31N)
    wgs.ImportFromEPSG(4326)
    for srs in (utm, wgs):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    shrink = 1.0  # metres inside the window, so edges do not land on neighbouring pixels after the round trip
    inner = (bounds[0] + shrink, bounds[1] + shrink, bounds[2] - shrink, bounds[3] - shrink)
    lonlat = osr.CoordinateTransformation(utm, wgs).TransformBounds(*inner, 21)
    _restore(pair, tmp_path / "aoi.tif", extent=tuple(lonlat), extent_crs="EPSG:4326")
    ds = gdal.Open(str(tmp_path / "aoi.tif"))
    got = window_from_bounds(window_bounds(Window(0, 0, ds.RasterXSize, ds.RasterYSize), ds.GetGeoTransform()),
                             GT, W, H)
    assert got is not None
    assert got.col_off <= window.col_off and got.row_off <= window.row_off
    assert got.col_end >= window.col_end and got.row_end >= window.row_end
    assert got.width <= window.width + 2 and got.height <= window.height + 2


def test_aoi_outside_the_image_is_refused_before_anything_is_written(pair: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out" / "aoi.tif"
    out.parent.mkdir()
    far = (GT[0] + 10_000, GT[3] - 20_000, GT[0] + 11_000, GT[3] - 19_000)
    with pytest.raises(InputError, match="does not overlap optical image .*s2.tif.*bounds are"):
        _restore(pair, out, extent=far)
    assert list(out.parent.iterdir()) == []


def test_aoi_on_an_image_without_georeferencing_is_refused(tmp_path: Path) -> None:
    s1 = rasters.write_s1(tmp_path / "s1.tif", H, W, epsg=None)
    s2 = rasters.write_s2(tmp_path / "s2.tif", H, W, epsg=None)
    with pytest.raises(InputError, match="not georeferenced"):
        _restore({"s1": s1, "s2": s2}, tmp_path / "o.tif", extent=(0.0, 0.0, 10.0, 10.0))


@pytest.fixture
def tiny_model_file(tmp_path: Path) -> Path:
    from mmcanet import modelfile

    card = modelfile.ModelCard(name="tiny", config={"widths": [4, 8], "heads": 1, "window": 4, "stages": 1},
                               tile_size=32, overlap=8)
    torch.manual_seed(0)
    return modelfile.save_model(tmp_path / "tiny.safetensors", modelfile.build_from_card(card), card)


def test_cli_extent(pair: dict[str, Path], tmp_path: Path, tiny_model_file: Path) -> None:
    from mmcanet.cli import main

    out = tmp_path / "aoi.tif"
    extent = [str(v) for v in window_bounds(Window(8, 4, 24, 20), GT)]
    assert main(["restore", "--sar", str(pair["s1"]), "--optical", str(pair["s2"]), "--output", str(out),
                 "--model", str(tiny_model_file), "--device", "cpu", "--extent", *extent]) == 0
    ds = gdal.Open(str(out))
    assert (ds.RasterXSize, ds.RasterYSize) == (24, 20)
    assert ds.GetGeoTransform() == pytest.approx((GT[0] + 80, 10, 0, GT[3] - 40, 0, -10))


def test_detect_on_an_area_of_interest_writes_only_that_window(pair: dict[str, Path], tmp_path: Path) -> None:
    from mmcanet.clouds.scene import detect_scene

    window = Window(16, 8, 30, 20)
    detect_scene(pair["s2"], tmp_path / "mask.tif", extent=window_bounds(window, GT))
    ds = gdal.Open(str(tmp_path / "mask.tif"))
    assert (ds.RasterXSize, ds.RasterYSize) == (window.width, window.height)
    assert ds.GetGeoTransform() == pytest.approx((GT[0] + 160, 10, 0, GT[3] - 80, 0, -10))
    with pytest.raises(InputError, match="does not overlap"):
        detect_scene(pair["s2"], tmp_path / "far.tif", extent=(0.0, 0.0, 10.0, 10.0))
    assert not (tmp_path / "far.tif").exists()
