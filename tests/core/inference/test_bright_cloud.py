"""Overcast brighter than the training clouds: the network is handed the cloud it learned from (mmcanet.bright_cloud)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from mmcanet.bands import S2_BANDS_L1C, S2_BANDS_L2A
from mmcanet.bright_cloud import FROM_REFLECTANCE, FULL_REFLECTANCE, LEVEL_RANGE, tame_bright_cloud
from mmcanet.clouds.simulate import CLOUD_BRIGHTNESS
from mmcanet.inference import RestoreOptions, restore_scene
from mmcanet.metrics import compute_metrics
from mmcanet.normalization import Normalization
from osgeo import gdal

VIS = [S2_BANDS_L1C.index(b) for b in ("B2", "B3", "B4")]
TABLE_LEVEL = float(CLOUD_BRIGHTNESS[VIS].mean())


def _flat(level: float, n: int = 4) -> torch.Tensor:
    """(1, 13, n, n) with every band at ``level`` reflectance."""
    return torch.full((1, 13, n, n), level)


def test_cloud_far_brighter_than_the_simulators_becomes_its_cloud_spectrum() -> None:
    x = _flat(0.8)
    x[:, 10] = 0.25  # high ice cloud: bright cirrus band
    y = tame_bright_cloud(x, torch.ones(1, 1, 4, 4), S2_BANDS_L1C)
    expected = torch.from_numpy(CLOUD_BRIGHTNESS) * LEVEL_RANGE[1]  # 0.8 / table level > 1.1: clamped
    assert torch.allclose(y[0, :, 0, 0], expected, atol=1e-6)
    assert torch.equal(x[:, 10], torch.full((1, 4, 4), 0.25)), "the input tensor is not modified"


def test_only_masked_bright_pixels_change_and_the_ramp_is_linear() -> None:
    x = _flat(0.8)
    x[..., 1, :] = 0.3  # thin cloud / haze level: never touched
    mid = (FROM_REFLECTANCE + FULL_REFLECTANCE) / 2
    x[..., 2, :] = mid
    mask = torch.ones(1, 1, 4, 4)
    mask[..., :, 3] = 0  # the last column is clear
    y = tame_bright_cloud(x, mask, S2_BANDS_L1C)
    assert torch.equal(y[..., 3], x[..., 3])
    assert torch.equal(y[..., 1, :], x[..., 1, :])
    target = torch.from_numpy(CLOUD_BRIGHTNESS) * min(max(mid / TABLE_LEVEL, LEVEL_RANGE[0]), LEVEL_RANGE[1])
    assert torch.allclose(y[0, :, 2, 0], mid + 0.5 * (target - mid), atol=1e-6)


def test_clouds_within_the_training_range_and_unknown_band_sets_are_returned_as_given() -> None:
    x = _flat(FROM_REFLECTANCE - 0.01)
    assert tame_bright_cloud(x, torch.ones(1, 1, 4, 4), S2_BANDS_L1C) is x
    bright = _flat(0.8)
    assert tame_bright_cloud(bright, torch.zeros(1, 1, 4, 4), S2_BANDS_L1C) is bright
    no_visible = bright[:, :3]
    assert tame_bright_cloud(no_visible, torch.ones(1, 1, 4, 4), ["B1", "B8", "B11"]) is no_visible
    l2a = _flat(0.8)[:, :12]
    assert not torch.equal(tame_bright_cloud(l2a, torch.ones(1, 1, 4, 4), S2_BANDS_L2A), l2a)


def test_model_units_other_than_reflectance_are_converted() -> None:
    x = _flat(0.8 / 2)  # a model whose unit is 2 x reflectance (s2_max_dn = 20000)
    y = tame_bright_cloud(x, torch.ones(1, 1, 4, 4), S2_BANDS_L1C, reflectance_per_unit=2.0)
    assert torch.allclose(y[0, :, 0, 0], torch.from_numpy(CLOUD_BRIGHTNESS) * LEVEL_RANGE[1] / 2, atol=1e-6)


def test_real_overcast_over_real_sar_is_filled_not_blacked_out(shared_data: Path, tmp_path: Path) -> None:
    """A fully clouded SEN12MS-CR-TS date (ice cloud, B2 0.73, B10 0.22) over triplet 6317's SAR.

    Nothing of the ground shows, so the fill is all there is. Before 0.3.3 the network extrapolated from the
    cloud's colour: B3, B4, B8 and B12 came out at 0 and the image scored 17.0 dB / SAM 71 deg against 6317's
    cloud-free image; handed the cloud it learned from, it fills from the SAR (29.8 dB / SAM 10).
    """
    triplet = shared_data / "sen12mscr-triplets"
    overcast = next((shared_data / "sen12mscr-ts-timeseries").glob("*_ImgNo_25_*.tif"))
    cloudy = tmp_path / "overcast.tif"  # its pixels on 6317's (non-georeferenced) grid, band names kept
    src = gdal.Open(str(overcast))
    ds = gdal.GetDriverByName("GTiff").Create(str(cloudy), 256, 256, 13, gdal.GDT_UInt16)
    for b in range(1, 14):
        ds.GetRasterBand(b).WriteArray(src.GetRasterBand(b).ReadAsArray(0, 0, 256, 256))
        ds.GetRasterBand(b).SetDescription(src.GetRasterBand(b).GetDescription())
    ds = None
    ref_path = triplet / "6317_s2_cloudfree.tif"
    restored = tmp_path / "restored.tif"
    restore_scene(RestoreOptions(sar=triplet / "6317_s1.tif", optical=cloudy, output=restored, device="cpu", threads=1))
    unit = Normalization().s2_to_unit
    out = unit(gdal.Open(str(restored)).ReadAsArray())
    m = compute_metrics(out, unit(gdal.Open(str(ref_path)).ReadAsArray()))
    assert min(float(np.median(out[b])) for b in range(13) if b != 10) > 0.03, "a band came out black"
    assert m["psnr"] > 24.0 and m["sam"] < 20.0, m
