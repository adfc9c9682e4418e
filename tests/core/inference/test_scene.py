"""Full-scene engine: exact stitching, no seams, alignment, nodata, keep-clear, bad input, cancel, CLI.

Models here are tiny local nn.Modules (identity, a 2-layer conv, constants) so every test runs in a
second or two on a shared 2-core CPU; one test runs the real architecture with a tiny configuration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasters
import torch
from mmcanet.bands import B10_FILL_DN, S2_BANDS_L1C
from mmcanet.errors import CancelledError, InputError, MMCANetError
from mmcanet.inference import EngineTuning, RestoreOptions, restore_scene, restore_scene_with_model
from osgeo import gdal
from torch import nn
from toy_models import Card as ToyCard
from toy_models import Constant, Identity, Recorder, SarEcho, SmallConv

# ---------------------------------------------------------------------------------------------------
# tiny models and card
# ---------------------------------------------------------------------------------------------------


@dataclass
class Card(ToyCard):
    name: str = "test-model"


PLUMBING = {"keep_clear": True, "smooth_coarse_bands": False, "tame_bright_cloud": False, "harmonise": 0, "sar_structure": 0}
"""Settings of these plumbing tests unless a test says otherwise: the rules here are about keeping clear
pixels and exact values, which the smoothing of coarse bands under cloud and the fill harmonisation
(each tested on its own) would change."""


def run(model: nn.Module, s1: Path, s2: Path, out: Path, card: Card | None = None,
        tuning: EngineTuning | None = None, **kw) -> object:  # noqa: ANN003
    kw = {**PLUMBING, **kw}
    return restore_scene_with_model(model, card or Card(), RestoreOptions(sar=s1, optical=s2, output=out, **kw),
                                    tuning=tuning)


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------------------------------------------
# stitching
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap"),
    [(77, 101, 32, 8), (20, 13, 32, 8), (5, 7, 16, 4), (33, 17, 16, 0), (64, 64, 32, 16)],
)
def test_identity_model_reproduces_input_exactly(make_s2, make_s1, tmp_path: Path, height, width, tile, overlap) -> None:  # noqa: ANN001
    s2, s1 = make_s2(height=height, width=width), make_s1(height=height, width=width)
    res = run(Identity(), s1, s2, tmp_path / "out.tif", keep_clear=False, tile_size=tile, overlap=overlap)
    np.testing.assert_array_equal(rasters.read(res.output), rasters.read(s2))
    assert res.tiles == res.tiles_run >= 1


class ZeroPaddedMean(nn.Module):
    """3 x 3 mean of the optical input with zero padding: alone at an image edge it would darken it."""

    def forward(self, s2: torch.Tensor, s1: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(s2, 3, stride=1, padding=1, count_include_pad=True)


@pytest.mark.parametrize(("height", "width", "tile"), [(40, 56, 32), (5, 7, 16)])
def test_tiles_reach_the_model_framed_by_mirrored_pixels_so_edges_keep_their_level(
    make_s2, make_s1, tmp_path: Path, height: int, width: int, tile: int  # noqa: ANN001
) -> None:
    """A constant scene stays constant up to its edges and corners (without the frame the model's zero
    padding would give 6/9 of it along the edges and 4/9 in the corners), and the frame is cut off again."""
    value = 1234
    s2 = make_s2(height=height, width=width, array=np.full((13, height, width), value, np.uint16))
    res = run(ZeroPaddedMean(), make_s1(height=height, width=width), s2, tmp_path / "out.tif", keep_clear=False,
              tile_size=tile, overlap=4)
    out = rasters.read(res.output)
    assert out.shape == (13, height, width)
    np.testing.assert_array_equal(out, np.full((13, height, width), value))
    seen = Recorder()
    run(seen, make_s1("s1b.tif", height=height, width=width), s2, tmp_path / "seen.tif", keep_clear=False,
        tile_size=tile, overlap=4)
    frame = min(8, min(height, width, tile) - 1)
    assert tuple(seen.seen[0][0].shape[-2:]) == (min(tile, height) + 2 * frame, min(tile, width) + 2 * frame)


def test_read_and_composite_in_column_chunks_is_exact(make_s2, make_s1, tmp_path: Path) -> None:  # noqa: ANN001
    tuning = EngineTuning(composite_columns=16, read_columns=48)  # 101 px wide: 7 chunks, the last one odd
    s2, s1 = make_s2(height=40, width=101), make_s1(height=40, width=101)
    res = run(Identity(), s1, s2, tmp_path / "out.tif", tuning=tuning, keep_clear=False, mask_output=tmp_path / "m.tif")
    np.testing.assert_array_equal(rasters.read(res.output), rasters.read(s2))
    assert rasters.read(res.mask_output).shape == (1, 40, 101)


def test_prefetching_reader_gives_the_same_output(make_s2, make_s1, tmp_path: Path) -> None:  # noqa: ANN001
    """The background reader used on GPUs: same bytes as reading in the calling thread."""
    s2, s1 = make_s2(height=90, width=70), make_s1(height=90, width=70)
    plain = run(SmallConv(), s1, s2, tmp_path / "plain.tif", tile_size=32, overlap=8)
    pre = run(SmallConv(), s1, s2, tmp_path / "pre.tif", tuning=EngineTuning(prefetch_on_cpu=True), tile_size=32, overlap=8)
    assert pre.timings["read_background"] > 0 and plain.timings["read_background"] == 0
    np.testing.assert_array_equal(rasters.read(pre.output), rasters.read(plain.output))


def test_two_tilings_agree_no_seams(make_s2, make_s1, tmp_path: Path) -> None:  # noqa: ANN001
    """A conv model restored with two different tilings gives nearly the untiled image; hard tiles would not."""
    h, w = 150, 130
    s2, s1 = make_s2(height=h, width=w), make_s1(height=h, width=w)
    model = SmallConv()
    outs = {}
    for name, tile, ov in (("whole", 256, 0), ("a", 48, 16), ("b", 64, 24), ("hard", 48, 0)):
        res = run(model, s1, s2, tmp_path / f"{name}.tif", keep_clear=False, tile_size=tile, overlap=ov)
        outs[name] = rasters.read(res.output).astype(np.float64)
        assert res.tiles == 1 if name == "whole" else res.tiles > 4
    ref = outs["whole"]
    for name in ("a", "b"):
        diff = np.abs(outs[name] - ref)
        assert diff.mean() < 0.5 and diff.max() <= 10, (name, diff.mean(), diff.max())  # DN on a 0-10000 scale
    assert np.abs(outs["a"] - outs["b"]).max() <= 10
    assert np.abs(outs["hard"] - ref).max() > 100  # the test can see seams: unblended tiles show them


# ---------------------------------------------------------------------------------------------------
# alignment
# ---------------------------------------------------------------------------------------------------


def _linear_sar(gt: tuple[float, ...], height: int, width: int, to_utm=None) -> np.ndarray:  # noqa: ANN001
    """VV, VH (dB) as linear functions of UTM easting/northing, sampled at pixel centres of grid ``gt``."""
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    x = gt[0] + cols * gt[1]
    y = gt[3] + rows * gt[5]
    if to_utm is not None:
        x, y = to_utm(x, y)
    vv = -20 + (x - 600000) / 100.0 + (5000000 - y) / 200.0  # -20 .. about -8 dB over the test area
    vh = vv - 7
    return np.stack([vv, vh]).astype(np.float32)


def _opt_grid_vv(height: int, width: int) -> np.ndarray:
    return _linear_sar(rasters.default_geotransform(), height, width)[0]


def test_sar_on_coarser_shifted_grid_is_aligned(make_s2, tmp_path: Path) -> None:  # noqa: ANN001
    h, w = 60, 70
    s2 = make_s2(height=h, width=w)
    gt = (600000.0 - 37.0, 20.0, 0.0, 5000000.0 + 23.0, 0.0, -20.0)  # 20 m pixels, shifted, covers the optical
    sar = rasters.write_s1(tmp_path / "s1.tif", 40, 40, array=_linear_sar(gt, 40, 40), geotransform=gt)
    res = run(SarEcho(), sar, s2, tmp_path / "out.tif", keep_clear=False)
    assert res.sar_warped and res.sar_coverage == pytest.approx(1.0)
    out = rasters.read(res.output)[0].astype(np.float64) / 10000  # VV normalised to [0, 1] over [-25, 0] dB
    expected = (_opt_grid_vv(h, w) + 25) / 25
    np.testing.assert_allclose(out[2:-2, 2:-2], expected[2:-2, 2:-2], atol=2e-4)  # bilinear is exact on a plane


def test_sar_in_geographic_crs_is_reprojected(make_s2, tmp_path: Path) -> None:  # noqa: ANN001
    from osgeo import osr

    h, w = 50, 60
    s2 = make_s2(height=h, width=w)
    utm, geo = osr.SpatialReference(), osr.SpatialReference()
    utm.ImportFromEPSG(32631)
    geo.ImportFromEPSG(4326)
    for s in (utm, geo):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    to_geo = osr.CoordinateTransformation(utm, geo)
    to_utm = osr.CoordinateTransformation(geo, utm)
    lon0, lat0, _ = to_geo.TransformPoint(600000.0 - 100, 5000000.0 + 100)
    lon1, lat1, _ = to_geo.TransformPoint(600000.0 + w * 10 + 100, 5000000.0 - h * 10 - 100)
    sw, sh = 80, 70
    gt = (lon0, (lon1 - lon0) / sw, 0.0, lat0, 0.0, (lat1 - lat0) / sh)

    def conv(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pts = np.array(to_utm.TransformPoints(np.stack([x.ravel(), y.ravel()], 1)))
        return pts[:, 0].reshape(x.shape), pts[:, 1].reshape(x.shape)

    sar = rasters.write_s1(tmp_path / "s1.tif", sh, sw, array=_linear_sar(gt, sh, sw, conv), geotransform=gt, epsg=4326)
    res = run(SarEcho(), sar, s2, tmp_path / "out.tif", keep_clear=False)
    assert res.sar_warped
    out = rasters.read(res.output)[0].astype(np.float64) / 10000
    np.testing.assert_allclose(out[2:-2, 2:-2], ((_opt_grid_vv(h, w) + 25) / 25)[2:-2, 2:-2], atol=2e-3)


def test_optical_in_geographic_crs_works(tmp_path: Path) -> None:
    gt = (4.0, 0.0001, 0.0, 45.0, 0.0, -0.0001)  # ~10 m pixels in EPSG:4326
    s2 = rasters.write_s2(tmp_path / "s2.tif", 40, 50, epsg=4326, geotransform=gt)
    s1 = rasters.write_s1(tmp_path / "s1.tif", 40, 50, epsg=4326, geotransform=gt)
    res = run(Identity(), s1, s2, tmp_path / "out.tif", keep_clear=False)
    ds = gdal.Open(str(res.output))
    assert ds.GetGeoTransform() == pytest.approx(gt) and "4326" in ds.GetProjection()
    np.testing.assert_array_equal(rasters.read(res.output), rasters.read(s2))


def test_partial_overlap_restores_outside_the_sar_from_the_optical_alone(make_s2, tmp_path: Path) -> None:  # noqa: ANN001
    h, w = 40, 60
    s2 = make_s2(height=h, width=w)
    gt = (600000.0 + 300.0, 10.0, 0.0, 5000000.0, 0.0, -10.0)  # SAR starts at column 30
    sar = rasters.write_s1(tmp_path / "s1.tif", h, 60, geotransform=gt)
    logs: list[str] = []
    res = restore_scene_with_model(
        Identity(), Card(), RestoreOptions(sar=sar, optical=s2, output=tmp_path / "o.tif", keep_clear=False, smooth_coarse_bands=False,
                                          tame_bright_cloud=False, harmonise=0, sar_structure=0),
        log=logs.append
    )
    out, src = rasters.read(res.output), rasters.read(s2)
    np.testing.assert_array_equal(out, src)  # outside the SAR too: restored from the optical, never blanked
    assert res.sar_coverage == pytest.approx(0.5, abs=0.02) and any("50%" in m for m in logs)
    assert res.sar_missing_fraction == pytest.approx(0.5, abs=0.02) and res.nodata_fraction == 0
    assert any("restored from the optical image alone" in m for m in res.warnings)
    tags = gdal.Open(str(res.output)).GetMetadata()
    assert float(tags["MMCANET_SAR_MISSING_FRACTION"]) == pytest.approx(0.5, abs=0.02)


def test_no_georeferencing_same_size_warns(make_s2, make_s1, tmp_path: Path) -> None:  # noqa: ANN001
    s2 = make_s2(height=30, width=30, epsg=None)
    s1 = make_s1(height=30, width=30, epsg=None)
    res = run(Identity(), s1, s2, tmp_path / "o.tif", keep_clear=False)
    assert any("no georeferencing" in w for w in res.warnings)
    np.testing.assert_array_equal(rasters.read(res.output), rasters.read(s2))


# ---------------------------------------------------------------------------------------------------
# bad input: clear message naming the input, nothing written
# ---------------------------------------------------------------------------------------------------


def _bad_cases(tmp: Path) -> dict[str, tuple[dict, str]]:
    good_s2 = rasters.write_s2(tmp / "s2.tif", 30, 30)
    good_s1 = rasters.write_s1(tmp / "s1.tif", 30, 30)
    rgb = rasters.write_raster(tmp / "rgb.tif", np.ones((3, 30, 30), np.uint8), geotransform=rasters.default_geotransform())
    corrupt = tmp / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00" + b"garbage" * 50)
    far = rasters.write_s1(tmp / "far.tif", 30, 30, geotransform=rasters.default_geotransform(origin=(700000.0, 5100000.0)))
    small = rasters.write_s1(tmp / "small_nogeo.tif", 20, 20, epsg=None)
    mask3 = rasters.write_raster(tmp / "mask3.tif", np.zeros((3, 30, 30), np.uint8), geotransform=rasters.default_geotransform())
    (tmp / "adir").mkdir()
    grd_dn = np.random.default_rng(0).integers(80, 600, size=(2, 30, 30)).astype(np.uint16)  # GRD amplitude DN
    grd = rasters.write_raster(tmp / "grd.tif", grd_dn, geotransform=rasters.default_geotransform())
    base = {"sar": good_s1, "optical": good_s2, "output": tmp / "out" / "o.tif"}
    (tmp / "out").mkdir()
    return {
        "optical 3-band RGB": ({"optical": rgb}, "optical image '.*rgb.tif' has 3 band"),
        "SAR given a 13-band image": ({"sar": good_s2}, "SAR image '.*s2.tif' has 13 band.*Sentinel-2"),
        "missing optical": ({"optical": tmp / "nope.tif"}, "optical image '.*nope.tif': file not found"),
        "missing SAR": ({"sar": tmp / "nope1.tif"}, "SAR image '.*nope1.tif': file not found"),
        "corrupt SAR": ({"sar": corrupt}, "SAR image '.*corrupt.tif'"),
        "not overlapping": ({"sar": far}, "SAR image '.*far.tif' and optical image '.*s2.tif' do not overlap"),
        "no georef, other size": ({"sar": small}, "SAR image '.*small_nogeo.tif' has no georeferencing"),
        "output folder missing": ({"output": tmp / "missing" / "o.tif"}, "output '.*missing/o.tif': folder"),
        "output is a folder": ({"output": tmp / "adir"}, "output '.*adir': is a folder"),
        "output is an input": ({"output": good_s2}, "choose another output name"),
        "3-band cloud mask": ({"cloud_mask": mask3}, "cloud mask '.*mask3.tif' has 3 bands"),
        "bad sar units": ({"sar_units": "watts"}, "SAR units 'watts'"),
        "uncalibrated GRD numbers": ({"sar": grd}, "SAR image '.*grd.tif'.*uint16 values .*uncalibrated Sentinel-1 GRD"),
        "uncalibrated, units forced": ({"sar": grd, "sar_units": "db"}, "neither backscatter in dB"),
        "tile size too small": ({"tile_size": 4}, "tile size 4"),
        "overlap too large": ({"tile_size": 32, "overlap": 20}, "overlap 20"),
        "bad strategy": ({"strategy": "magic"}, "strategy 'magic'"),
    } | {"__base__": (base, "")}


def test_bad_input_matrix(tmp_path: Path) -> None:
    cases = _bad_cases(tmp_path)
    base = cases.pop("__base__")[0]
    before = files(tmp_path)
    for name, (change, pattern) in cases.items():
        opts = RestoreOptions(**(base | change))
        with pytest.raises(InputError, match=pattern):
            restore_scene_with_model(Identity(), Card(), opts)
        assert files(tmp_path) == before, name
        assert files(tmp_path / "out") == [], name


def test_model_band_mismatch(make_s2, make_s1, tmp_path: Path) -> None:  # noqa: ANN001
    card = Card(s2_bands=(*S2_BANDS_L1C[:-1], "B13"))
    with pytest.raises(InputError, match="model 'test-model' expects bands .* has no B13"):
        run(Identity(), make_s1(), make_s2(), tmp_path / "o.tif", card=card)
    assert not (tmp_path / "o.tif").exists()


def test_cancel_leaves_no_file(make_s2, make_s1, tmp_path: Path) -> None:  # noqa: ANN001
    s2, s1 = make_s2(height=70, width=70), make_s1(height=70, width=70)
    before = files(tmp_path)
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(CancelledError):
        restore_scene_with_model(
            Identity(), Card(), RestoreOptions(sar=s1, optical=s2, output=tmp_path / "o.tif", mask_output=tmp_path / "m.tif"),
            is_canceled=cancel,
        )
    assert files(tmp_path) == before


def test_model_error_leaves_no_file(make_s2, make_s1, tmp_path: Path) -> None:  # noqa: ANN001
    class Broken(nn.Module):
        def forward(self, s2: torch.Tensor, s1: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
            return s2[:, :3]

    s2, s1 = make_s2(), make_s1()
    before = files(tmp_path)
    with pytest.raises(MMCANetError, match="returned"):
        run(Broken(), s1, s2, tmp_path / "o.tif", keep_clear=False)
    assert files(tmp_path) == before


# ---------------------------------------------------------------------------------------------------
# nodata, keep-clear, units, L2A, outputs
# ---------------------------------------------------------------------------------------------------


def test_optical_nodata_gives_nodata_a_sar_gap_does_not(tmp_path: Path) -> None:
    h, w = 40, 50
    arr = rasters.s2_array(h, w)
    arr[:, :5, :] = 0  # optical nodata rows
    s2 = rasters.write_s2(tmp_path / "s2.tif", h, w, array=arr)
    sar_arr = rasters.s1_array(h, w)
    sar_arr[0, 20:25, 10:20] = np.nan  # SAR gap
    s1 = rasters.write_s1(tmp_path / "s1.tif", h, w, array=sar_arr)
    res = run(Constant(0.3), s1, s2, tmp_path / "o.tif", keep_clear=False,
              mask_output=tmp_path / "m.tif", change_output=tmp_path / "c.tif")
    out = rasters.read(res.output)
    assert (out[:, :5] == 0).all() and (out[:, 5:] == 3000).all()  # the SAR gap is restored, not blanked
    mask, change = rasters.read(res.mask_output)[0], rasters.read(res.change_output)[0]
    assert (mask[:5] == 255).all() and (mask[5:] != 255).all() and set(np.unique(mask)) <= {0, 1, 255}
    assert np.isfinite(change).all() and (change[:5] == -1).all() and (change[5:] >= 0).all()
    assert res.nodata_fraction == pytest.approx(5 * w / (h * w))
    assert res.sar_missing_fraction == pytest.approx(50 / ((h - 5) * w))


def test_warped_sar_gap_is_restored_from_the_optical_alone(tmp_path: Path) -> None:
    """A NaN gap in SAR on another grid: no nodata anywhere (the gap is restored without SAR)."""
    h, w = 40, 50
    s2 = rasters.write_s2(tmp_path / "s2.tif", h, w)
    gt = (600000.0 - 50.0 - 4.0, 10.0, 0.0, 5000000.0 + 50.0 + 3.0, 0.0, -10.0)  # 5 px margin, sub-pixel shift
    sar_arr = rasters.s1_array(h + 10, w + 10)
    sar_arr[:, 20:26, 15:25] = np.nan  # covers optical rows ~15-20, columns ~10-19
    s1 = rasters.write_s1(tmp_path / "s1.tif", h + 10, w + 10, array=sar_arr, geotransform=gt)
    res = run(Constant(0.3), s1, s2, tmp_path / "o.tif", keep_clear=False)
    assert res.sar_warped
    assert (rasters.read(res.output) == 3000).all()
    assert 32 / (h * w) <= res.sar_missing_fraction <= 96 / (h * w)  # the gap plus at most its bilinear ring


def test_keep_clear_with_given_mask(tmp_path: Path) -> None:
    h, w = 40, 60
    s2 = rasters.write_s2(tmp_path / "s2.tif", h, w)
    s1 = rasters.write_s1(tmp_path / "s1.tif", h, w)
    m = np.zeros((h, w), np.uint8)
    m[10:30, 20:40] = 1
    mask = rasters.write_raster(tmp_path / "mask.tif", m, geotransform=rasters.default_geotransform())
    rec = Recorder()
    res = restore_scene_with_model(
        Constant(0.5), Card(), RestoreOptions(sar=s1, optical=s2, output=tmp_path / "o.tif", cloud_mask=mask, feather=2, keep_clear=True,
                                              sar_structure=0)  # the fill exactly as the model gave it
    )
    out, src = rasters.read(res.output), rasters.read(s2)
    assert (out[:, 10:30, 20:40] == 5000).all()  # cloud: restored
    far = np.ones((h, w), bool)
    far[6:34, 16:44] = False  # beyond the feathered edge (2 * radius px)
    np.testing.assert_array_equal(out[:, far], src[:, far])  # clear: kept exactly
    edge = out[:, 10:30, 17].astype(float)  # inside the feather ramp: between input and restored
    assert ((edge > np.minimum(src[:, 10:30, 17], 5000) - 1) & (edge < np.maximum(src[:, 10:30, 17], 5000) + 1)).all()
    assert res.cloud_mask_source == "given"
    assert res.cloud_fraction == pytest.approx(400 / (h * w))
    # the model receives the mask
    restore_scene_with_model(rec, Card(), RestoreOptions(sar=s1, optical=s2, output=tmp_path / "r.tif", cloud_mask=mask))
    assert rec.seen and rec.seen[0][2] is not None and rec.seen[0][2].shape[1] == 1


@pytest.mark.parametrize(("rows", "warned"), [(20, False), (31, True)])
def test_mostly_clouded_scene_warns_and_every_output_carries_the_cloud_share(
    tmp_path: Path, rows: int, warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from osgeo import gdal

    caplog.set_level(logging.INFO, logger="mmcanet")

    h, w = 60, 40
    s2 = rasters.write_s2(tmp_path / "s2.tif", h, w)
    s1 = rasters.write_s1(tmp_path / "s1.tif", h, w)
    m = np.zeros((h, w), np.uint8)
    m[:rows] = 1  # 20 / 60 rows: a third; 31 / 60: just over half
    mask = rasters.write_raster(tmp_path / "mask.tif", m, geotransform=rasters.default_geotransform())
    res = run(Constant(0.5), s1, s2, tmp_path / "o.tif", cloud_mask=mask, mask_output=tmp_path / "m.tif")
    share = rows / h
    assert res.cloud_fraction == pytest.approx(share)
    for path in (res.output, res.mask_output):
        assert float(gdal.Open(str(path)).GetMetadataItem("MMCANET_CLOUD_FRACTION")) == pytest.approx(share, abs=1e-6)
    assert f"{share:.0%} under cloud or shadow, filled" in caplog.text  # the run's last line says it too
    notices = [m for m in res.warnings if "under cloud or cloud shadow" in m]
    assert bool(notices) is warned
    if warned:
        assert f"{share:.0%}" in notices[0] and "not observed" in notices[0]


def test_keep_clear_skips_clear_tiles(tmp_path: Path) -> None:
    h, w = 64, 128
    s2 = rasters.write_s2(tmp_path / "s2.tif", h, w)
    s1 = rasters.write_s1(tmp_path / "s1.tif", h, w)
    m = np.zeros((h, w), np.uint8)
    m[5:10, 5:10] = 1
    mask = rasters.write_raster(tmp_path / "mask.tif", m, geotransform=rasters.default_geotransform())
    res = run(Constant(0.5), s1, s2, tmp_path / "o.tif", cloud_mask=mask)
    assert 0 < res.tiles_run < res.tiles


def test_linear_sar_detected_and_converted(tmp_path: Path) -> None:
    h, w = 30, 40
    s2 = rasters.write_s2(tmp_path / "s2.tif", h, w)
    db = rasters.write_s1(tmp_path / "db.tif", h, w)
    lin = rasters.write_s1(tmp_path / "lin.tif", h, w, linear=True)
    a = run(SarEcho(), db, s2, tmp_path / "a.tif", keep_clear=False)
    b = run(SarEcho(), lin, s2, tmp_path / "b.tif", keep_clear=False)
    c = run(SarEcho(), lin, s2, tmp_path / "c.tif", keep_clear=False, sar_units="db")
    assert (a.sar_units, b.sar_units, c.sar_units) == ("db", "linear", "db")
    assert np.abs(rasters.read(a.output).astype(int) - rasters.read(b.output)).max() <= 1
    assert np.abs(rasters.read(a.output).astype(int) - rasters.read(c.output)).max() > 100


def test_l2a_twelve_bands_in_twelve_out(tmp_path: Path) -> None:
    s2 = rasters.write_s2(tmp_path / "s2.tif", 30, 40, level="L2A")
    s1 = rasters.write_s1(tmp_path / "s1.tif", 30, 40)
    rec = Recorder()
    res = run(rec, s1, s2, tmp_path / "o.tif", keep_clear=False)
    out = rasters.read(res.output)
    assert out.shape[0] == 12
    np.testing.assert_array_equal(out, rasters.read(s2))
    seen = rec.seen[0][0]
    assert seen.shape[1] == 13 and torch.allclose(seen[:, 10], torch.tensor(B10_FILL_DN / 10000))
    assert any("Level-2A" in w for w in res.warnings)
    ds = gdal.Open(str(res.output))
    assert [ds.GetRasterBand(i + 1).GetDescription() for i in range(12)] == [b for b in S2_BANDS_L1C if b != "B10"]


def test_output_metadata_and_progress(make_s2, make_s1, tmp_path: Path) -> None:  # noqa: ANN001
    seen: list[float] = []
    res = restore_scene_with_model(
        Identity(), Card(), RestoreOptions(sar=make_s1(), optical=make_s2(), output=tmp_path / "o.tif"), progress=seen.append
    )
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen) and len(seen) > 3
    ds = gdal.Open(str(res.output))
    md = ds.GetMetadata()
    assert md["MMCANET_MODEL"] == "test-model" and md["MMCANET_STRATEGY"] == "single" and "MMCANET_VERSION" in md
    assert ds.GetMetadataItem("COMPRESSION", "IMAGE_STRUCTURE") == "DEFLATE"
    assert ds.GetRasterBand(9).GetDescription() == "B8A" and ds.GetRasterBand(1).GetNoDataValue() == 0
    assert ds.GetRasterBand(1).DataType == gdal.GDT_UInt16
    assert ds.GetGeoTransform() == rasters.default_geotransform()
    assert not math.isnan(res.cloud_fraction)


def test_outputs_get_overviews_and_a_cog_on_request(make_s2, make_s1, tmp_path: Path) -> None:  # noqa: ANN001
    """A 1024 px wide scene (the overview rule's threshold) kept cheap with 16 rows."""
    s2, s1 = make_s2(height=16, width=1024), make_s1(height=16, width=1024)
    names = ("output", "mask_output", "change_output")
    plain = run(Identity(), s1, s2, tmp_path / "o.tif", mask_output=tmp_path / "m.tif", change_output=tmp_path / "c.tif")
    cog = run(Identity(), s1, s2, tmp_path / "o_cog.tif", mask_output=tmp_path / "m_cog.tif",
              change_output=tmp_path / "c_cog.tif", cog=True)
    off = run(Identity(), s1, s2, tmp_path / "o_off.tif", overviews=False)
    assert not [n for n in files(tmp_path) if ".partial-" in n]
    for name in names:
        a, b = gdal.Open(str(getattr(plain, name))), gdal.Open(str(getattr(cog, name)))
        assert [a.GetRasterBand(1).GetOverview(i).XSize for i in range(a.GetRasterBand(1).GetOverviewCount())] == [512, 256]
        assert b.GetMetadata("IMAGE_STRUCTURE")["LAYOUT"] == "COG" and b.GetRasterBand(1).GetOverviewCount() == 2
        np.testing.assert_array_equal(b.ReadAsArray(), a.ReadAsArray())
        assert b.GetMetadata() == a.GetMetadata()
        assert b.GetRasterBand(1).GetDescription() == a.GetRasterBand(1).GetDescription()
        assert b.GetRasterBand(1).GetNoDataValue() == a.GetRasterBand(1).GetNoDataValue()
    mask = gdal.Open(str(plain.mask_output))
    assert set(np.unique(mask.GetRasterBand(1).GetOverview(0).ReadAsArray())) <= {0, 1, 255}  # classes, not means
    assert gdal.Open(str(off.output)).GetRasterBand(1).GetOverviewCount() == 0


# ---------------------------------------------------------------------------------------------------
# devices
# ---------------------------------------------------------------------------------------------------


def test_engine_import_is_light() -> None:
    """QGIS imports the engine for its defaults; torch must load only when a scene is restored."""
    import subprocess
    import sys

    code = "import sys, mmcanet.inference, mmcanet.options, mmcanet.commands.restore; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_resolve_device() -> None:
    from mmcanet.devices import resolve_device

    logs: list[str] = []
    assert resolve_device("cpu", logs.append).type == "cpu"
    dev = resolve_device("auto", logs.append)
    assert logs[-1].startswith(f"device: {dev.type}")
    with pytest.raises(InputError, match="unknown"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        assert "CUDA is not available" in logs[-1]
        with pytest.raises(InputError, match="device 'cuda'"):
            resolve_device("cuda")


# ---------------------------------------------------------------------------------------------------
# real architecture, model file and CLI
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def tiny_model_file(tmp_path: Path) -> Path:
    from mmcanet import modelfile

    card = modelfile.ModelCard(name="tiny", config={"widths": [8, 8, 8, 8], "heads": 2, "window": 4},
                               tile_size=32, overlap=8)
    torch.manual_seed(0)
    model = modelfile.build_from_card(card)
    return modelfile.save_model(tmp_path / "tiny.safetensors", model, card)


def test_real_architecture_through_restore_scene(make_s2, make_s1, tiny_model_file: Path, tmp_path: Path) -> None:  # noqa: ANN001
    s2, s1 = make_s2(height=40, width=50), make_s1(height=40, width=50)
    res = restore_scene(RestoreOptions(sar=s1, optical=s2, output=tmp_path / "o.tif", model=tiny_model_file, device="cpu"))
    out = rasters.read(res.output)
    assert out.shape == (13, 40, 50) and res.model_name == "tiny" and res.tiles_run >= 1
    res2 = restore_scene(RestoreOptions(sar=s1, optical=s2, output=tmp_path / "o2.tif", model=tiny_model_file,
                                        device="cpu", strategy="iterative"))
    assert res2.strategy == "iterative"


def test_cli_single_and_list(make_s2, make_s1, tiny_model_file: Path, tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    from mmcanet.cli import main

    s2, s1 = make_s2(height=30, width=30), make_s1(height=30, width=30)
    rc = main(["restore", "--sar", str(s1), "--optical", str(s2), "--output", str(tmp_path / "cli.tif"),
               "--model", str(tiny_model_file), "--device", "cpu", "--no-keep-clear", "--tile-size", "16", "--overlap", "4"])
    assert rc == 0 and (tmp_path / "cli.tif").exists()
    lst = tmp_path / "scenes.csv"
    lst.write_text("sar,optical,output\n# comment\ns1.tif,s2.tif,l1.tif\n\ns1.tif\ts2.tif\tl2.tif\n")
    rc = main(["restore", "--list", str(lst), "--model", str(tiny_model_file), "--device", "cpu"])
    assert rc == 0 and (tmp_path / "l1.tif").exists() and (tmp_path / "l2.tif").exists()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    (tmp_path / "l1.tif").unlink()
    (tmp_path / "l2.tif").unlink()
    assert main(["restore", "--list", str(lst), "--model", str(tiny_model_file), "--device", "cpu"]) == 0
    assert not (tmp_path / "l1.tif").exists() and (tmp_path / "l2.tif").exists()  # rank 1 of 2: second line only
    assert main(["restore", "--sar", str(s1), "--optical", str(tmp_path / "missing.tif"), "--output",
                 str(tmp_path / "x.tif"), "--model", str(tiny_model_file)]) == 1
    assert "missing.tif" in capsys.readouterr().err


def test_cli_overview_and_cog_switches(make_s2, make_s1, tiny_model_file: Path, tmp_path: Path) -> None:  # noqa: ANN001
    from mmcanet.cli import main

    s2, s1 = make_s2(height=16, width=1024), make_s1(height=16, width=1024)  # wide enough for overviews
    common = ["restore", "--sar", str(s1), "--optical", str(s2), "--model", str(tiny_model_file), "--device", "cpu"]
    for name, flags in (("default", []), ("off", ["--no-overviews"]), ("cog", ["--cog"])):
        assert main([*common, "--output", str(tmp_path / f"{name}.tif"), *flags]) == 0
    ds = {n: gdal.Open(str(tmp_path / f"{n}.tif")) for n in ("default", "off", "cog")}  # kept open while read
    assert {n: d.GetRasterBand(1).GetOverviewCount() for n, d in ds.items()} == {"default": 2, "off": 0, "cog": 2}
    assert {n: d.GetMetadata("IMAGE_STRUCTURE").get("LAYOUT") for n, d in ds.items()} == {
        "default": None, "off": None, "cog": "COG"}


def test_shard_balanced() -> None:
    from mmcanet.commands.restore import shard

    items = list(range(10))
    parts = [shard(items, r, 3) for r in range(3)]
    assert sorted(sum(parts, [])) == items and [len(p) for p in parts] == [4, 3, 3]
    with pytest.raises(InputError):
        shard(items, 3, 3)


# ---------------------------------------------------------------------------------------------------
# real data (../shared/data), skipped when absent
# ---------------------------------------------------------------------------------------------------


def test_real_georeferenced_scene(shared_data: Path, tmp_path: Path) -> None:
    d = shared_data / "sen12mscr-georef"
    s1, s2 = d / "ROIs1868_summer_19_p30_s1.tif", d / "ROIs1868_summer_19_p30_s2_cloudy.tif"
    res = restore_scene_with_model(
        SmallConv(), Card(tile_size=128, overlap=32),
        RestoreOptions(sar=s1, optical=s2, output=tmp_path / "o.tif", mask_output=tmp_path / "m.tif", keep_clear=True),
    )
    out, src = rasters.read(res.output), rasters.read(s2)
    assert out.shape == src.shape == (13, 256, 256) and not res.sar_warped
    mask = rasters.read(res.mask_output)[0] == 1
    assert 0 < mask.mean() < 1 and res.cloud_mask_source == "detected"
    near = np.pad(mask, 5)
    near = np.max([near[dy : dy + 256, dx : dx + 256] for dy in range(11) for dx in range(11)], axis=0)
    np.testing.assert_array_equal(out[:, ~near], src[:, ~near])  # beyond the feathered edge: input kept
    assert (out[:, mask] != src[:, mask]).any()
    ds_in, ds_out = gdal.Open(str(s2)), gdal.Open(str(res.output))
    assert ds_out.GetGeoTransform() == ds_in.GetGeoTransform() and ds_out.GetProjection() == ds_in.GetProjection()


def test_real_triplet_without_georeferencing(shared_data: Path, tmp_path: Path) -> None:
    d = shared_data / "sen12mscr-triplets"
    res = restore_scene_with_model(
        Identity(), Card(tile_size=128, overlap=32),
        RestoreOptions(sar=d / "1302_s1.tif", optical=d / "1302_s2_cloudy.tif", output=tmp_path / "o.tif",
                       cloud_mask=d / "1302_cloudmask.tif"),
    )
    assert any("no georeferencing" in w for w in res.warnings) and res.cloud_mask_source == "given"
    out, src = rasters.read(res.output), rasters.read(d / "1302_s2_cloudy.tif")
    valid = out.any(axis=0)
    np.testing.assert_array_equal(out[:, valid], np.clip(src[:, valid], 0, 10000))


# ---------------------------------------------------------------------------------------------------
# defaults of #17: every pixel restored; coarse bands smoothed under cloud; clear_weight with keep_clear
# ---------------------------------------------------------------------------------------------------


def _masked_scene(tmp_path: Path) -> tuple[Path, Path, Path]:
    h, w = 48, 64
    s2 = rasters.write_s2(tmp_path / "s2.tif", h, w)
    s1 = rasters.write_s1(tmp_path / "s1.tif", h, w)
    m = np.zeros((h, w), np.uint8)
    m[12:36, 16:48] = 1
    return s1, s2, rasters.write_raster(tmp_path / "mask.tif", m, geotransform=rasters.default_geotransform())


def test_default_restores_every_pixel(tmp_path: Path) -> None:
    s1, s2, mask = _masked_scene(tmp_path)
    res = restore_scene_with_model(Constant(0.5), Card(), RestoreOptions(sar=s1, optical=s2, output=tmp_path / "o.tif",
                                                                         cloud_mask=mask, sar_structure=0))
    assert (rasters.read(res.output) == 5000).all()


def test_clear_weight_blends_clear_pixels(tmp_path: Path) -> None:
    s1, s2, mask = _masked_scene(tmp_path)
    res = restore_scene_with_model(Constant(0.5), Card(), RestoreOptions(
        sar=s1, optical=s2, output=tmp_path / "o.tif", cloud_mask=mask, keep_clear=True, clear_weight=0.25, feather=0,
        sar_structure=0))
    out, src = rasters.read(res.output).astype(np.float64), rasters.read(s2).astype(np.float64)
    assert (out[:, 12:36, 16:48] == 5000).all()
    clear = np.ones(out.shape[1:], bool)
    clear[12:36, 16:48] = False
    np.testing.assert_allclose(out[:, clear], 0.25 * 5000 + 0.75 * src[:, clear], atol=1.0)
    with pytest.raises(InputError, match="clear weight"):
        restore_scene_with_model(Constant(0.5), Card(), RestoreOptions(
            sar=s1, optical=s2, output=tmp_path / "p.tif", keep_clear=True, clear_weight=1.5))


def test_model_sees_coarse_bands_smoothed_only_under_cloud(tmp_path: Path) -> None:
    """An identity model returns what it saw: the restored file shows the network input, blended."""
    s1, s2, mask = _masked_scene(tmp_path)
    seen = {}
    for smooth in (False, True):
        res = restore_scene_with_model(Identity(), Card(), RestoreOptions(
            sar=s1, optical=s2, output=tmp_path / f"{smooth}.tif", cloud_mask=mask, smooth_coarse_bands=smooth,
            tame_bright_cloud=False, harmonise=0, sar_structure=0))
        seen[smooth] = rasters.read(res.output).astype(np.int64)
    raw, smoothed = seen[False], seen[True]
    np.testing.assert_array_equal(raw, rasters.read(s2))
    fine = [S2_BANDS_L1C.index(b) for b in ("B2", "B3", "B4", "B8")]
    coarse = [S2_BANDS_L1C.index(b) for b in ("B1", "B5", "B11")]
    np.testing.assert_array_equal(raw[fine], smoothed[fine])
    np.testing.assert_array_equal(raw[:, :2], smoothed[:, :2])  # 10 px from the cloud: untouched
    assert np.abs(raw[coarse, 20:28, 26:38] - smoothed[coarse, 20:28, 26:38]).mean() > 5  # DN


def test_model_sees_bright_cloud_as_the_simulators_only_under_the_mask(tmp_path: Path) -> None:
    """Identity model: masked pixels brighter than 0.6 reach it as the cloud table's spectrum, nothing else changes."""
    from mmcanet.clouds.simulate import CLOUD_BRIGHTNESS

    s1, s2, mask = _masked_scene(tmp_path)
    seen = {}
    for tame in (False, True):
        res = restore_scene_with_model(Identity(), Card(), RestoreOptions(
            sar=s1, optical=s2, output=tmp_path / f"t{tame}.tif", cloud_mask=mask, smooth_coarse_bands=False,
            tame_bright_cloud=tame, harmonise=0, sar_structure=0))
        seen[tame] = rasters.read(res.output).astype(np.float64) / 10000
    raw, tamed = seen[False], seen[True]
    cloud = rasters.read(mask)[0] > 0
    level = raw[1:4].mean(axis=0)
    full = cloud & (level >= 0.6)
    assert full.any() and (~cloud).any()
    np.testing.assert_array_equal(raw[:, ~cloud], tamed[:, ~cloud])
    np.testing.assert_array_equal(raw[:, cloud & (level <= 0.5)], tamed[:, cloud & (level <= 0.5)])
    # fully replaced: the table's spectral shape (B10 dark, SWIR bright), whatever the input's
    shape = tamed[:, full] / tamed[1:4, full].mean(axis=0)
    expected = CLOUD_BRIGHTNESS / CLOUD_BRIGHTNESS[1:4].mean()
    np.testing.assert_allclose(np.median(shape, axis=1), expected, atol=0.01)


def test_harmonise_scales_only_the_fill_and_keeps_its_spectral_shape(tmp_path: Path) -> None:
    """The engine applies :func:`harmonise_fill` to the masked pixels of each tile, one factor per pixel."""
    s1, s2, mask = _masked_scene(tmp_path)
    out = {}
    for h in (0, 64):
        res = restore_scene_with_model(Identity(), Card(), RestoreOptions(
            sar=s1, optical=s2, output=tmp_path / f"h{h}.tif", cloud_mask=mask, smooth_coarse_bands=False, harmonise=h, sar_structure=0))
        out[h] = rasters.read(res.output).astype(np.float64)
    off, on = out[0], out[64]
    far = np.ones(off.shape[1:], bool)
    far[8:40, 12:52] = False  # the mask and its soft edge (3 px)
    np.testing.assert_array_equal(on[:, far], off[:, far])
    inside = np.zeros_like(far)
    inside[14:34, 18:46] = True
    assert np.abs(on[:, inside] - off[:, inside]).max() > 5  # the fill moved ...
    ratio = on[:, inside] / off[:, inside]
    assert np.ptp(ratio, axis=0).max() < 2e-3 * ratio.mean() + 2 / off[:, inside].min()  # ... by one factor per pixel
    with pytest.raises(InputError, match="harmonise"):
        restore_scene_with_model(Identity(), Card(), RestoreOptions(sar=s1, optical=s2, output=tmp_path / "x.tif", harmonise=-1))


def test_sar_structure_draws_the_sar_fields_into_the_fill_and_nothing_else(tmp_path: Path) -> None:
    """With a flat fill (a constant model), the engine's SAR structure transfer puts the fields the SAR
    shows into the masked pixels, with the optical's own gain per band; pixels away from the mask keep
    exactly what the model gave; a scale out of range is refused before any work."""
    h, w = 96, 128
    rng = np.random.default_rng(5)
    fields = np.kron(rng.normal(0, 1, (h // 4, w // 4)), np.ones((4, 4))).astype(np.float32)
    sar = np.stack([-12 + 3 * fields, -19 + 2 * fields]).astype(np.float32)
    base = np.array(rasters.LAND_DN, np.float32)[:, None, None]
    gain = 0.08 * base
    clear = np.clip(base + gain * fields, 1, 10000).astype(np.uint16)
    cloudy = clear.copy()
    cloudy[:, 30:70, 40:100] = 6000  # thick cloud: nothing of the ground shows
    m = np.zeros((h, w), np.uint8)
    m[30:70, 40:100] = 1
    s1 = rasters.write_s1(tmp_path / "s1.tif", h, w, array=sar)
    s2 = rasters.write_s2(tmp_path / "s2.tif", h, w, array=cloudy)
    mask = rasters.write_raster(tmp_path / "mask.tif", m, geotransform=rasters.default_geotransform())
    out = {}
    for px in (0, 8):
        res = restore_scene_with_model(Constant(0.2), Card(), RestoreOptions(
            sar=s1, optical=s2, output=tmp_path / f"s{px}.tif", cloud_mask=mask, harmonise=0, sar_structure=px,
            tile_size=96, overlap=16))  # the toy card's 32 px tiles hold too few clear pixels to fit on
        out[px] = rasters.read(res.output).astype(np.float64)
    off, on = out[0], out[8]
    assert (off == 2000).all()  # the constant model everywhere (every pixel restored by default)
    far = np.ones((h, w), bool)
    far[27:73, 37:103] = False  # the mask and its soft edge
    np.testing.assert_array_equal(on[:, far], off[:, far])
    inner = (slice(38, 62), slice(48, 92))
    truth = clear.astype(np.float64)
    from mmcanet.clouds.detect import box_mean

    for b in (1, 7, 11):  # B2, B8, B11: each band's own contrast
        # the detail below ~8 px, which is what the transfer predicts (the level stays the model's)
        got = (on[b] - box_mean(on[b], 6))[inner]
        want = (truth[b] - box_mean(truth[b], 6))[inner]
        assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.8
        assert 0.5 < np.polyfit(want.ravel(), got.ravel(), 1)[0] < 1.3
    with pytest.raises(InputError, match="SAR structure"):
        restore_scene_with_model(Constant(0.2), Card(), RestoreOptions(sar=s1, optical=s2, output=tmp_path / "x.tif",
                                                                       sar_structure=-1))
    assert not (tmp_path / "x.tif").exists()
