"""The trust layer: rank correlation, reliability, calibration, and the predicted-error output of a restore."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import rasters
import torch
from mmcanet import modelfile, models
from mmcanet.cli import main
from mmcanet.errors import ModelFileError
from mmcanet.inference import RestoreOptions, restore_scene, restore_scene_with_model
from mmcanet.normalization import Normalization
from mmcanet.trust import (
    calibrate_samples,
    fit_error_scale,
    ranks,
    reliability_holds,
    reliability_table,
    spearman,
)
from osgeo import gdal
from toy_models import Card, KnownError

TINY = {"widths": [8, 8, 8, 8], "heads": 2, "window": 4}

# ---- numbers on constructed inputs -----------------------------------------------------------------


def test_ranks_average_ties_and_spearman_of_monotone_and_reversed() -> None:
    assert ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [2.5, 0.0, 2.5, 1.0]
    x = np.random.default_rng(0).random(1000)
    assert spearman(x, np.exp(5 * x)) == pytest.approx(1.0)  # any monotone map: rank correlation 1
    assert spearman(x, -x**3) == pytest.approx(-1.0)
    assert np.isnan(spearman(x, np.ones_like(x)))  # a constant side has no ranking
    # a known value: pairs (1,1) (2,3) (3,2) (4,4): d^2 = 0+1+1+0, rho = 1 - 6*2 / (4 * 15) = 0.8
    assert spearman(np.array([1.0, 2, 3, 4]), np.array([1.0, 3, 2, 4])) == pytest.approx(0.8)
    assert spearman(np.array([1.0, np.nan, 2, 3]), np.array([1.0, 5, 2, 3])) == pytest.approx(1.0)  # NaN left out


def test_reliability_table_bins_by_predicted_error() -> None:
    pred = np.repeat([0.01, 0.02, 0.04, 0.08], 100)
    actual = pred * np.repeat([1.0, 1.2, 0.8, 1.5], 100)
    table = reliability_table(pred, actual, bins=4)
    assert [b.n for b in table] == [100] * 4
    assert [b.mean_predicted for b in table] == pytest.approx([0.01, 0.02, 0.04, 0.08])
    assert [b.ratio for b in table] == pytest.approx([1.0, 1.2, 0.8, 1.5])
    assert [b.holds() for b in table] == [True, True, True, False]
    assert not reliability_holds(table)


def test_calibration_scale_recovers_a_known_miscalibration() -> None:
    rng = np.random.default_rng(1)
    true_b = rng.uniform(0.005, 0.1, 200_000)  # the expected absolute error per pixel
    actual = rng.laplace(0.0, true_b)  # Laplace errors: E|e| = b
    actual = np.abs(actual)
    head = true_b / 2.5  # a head that ranks right but is 2.5x too confident
    scale = fit_error_scale(head, actual)
    assert scale == pytest.approx(2.5, rel=0.03)
    assert not reliability_holds(reliability_table(head, actual))
    assert reliability_holds(reliability_table(scale * head, actual))


def test_calibrate_samples_measures_scale_kept_error_and_spearman() -> None:
    """A model whose predicted error is half the true one: the fit doubles it; clear pixels give kept_error."""

    class HalfRight(torch.nn.Module):
        def forward_with_error(self, s2: torch.Tensor, s1: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
            return s2 + 0.02 + 0.1 * s1[:, :1], (0.02 + 0.1 * s1[:, :1]) / 2

    rng = np.random.default_rng(2)
    samples = []
    for i in range(3):
        cloudy = rng.uniform(0.1, 0.3, (13, 24, 24)).astype(np.float32)
        s1 = rng.uniform(0, 1, (2, 24, 24)).astype(np.float32)
        mask = np.zeros((1, 24, 24), np.float32)
        mask[:, :12] = 1
        clear = cloudy.copy()
        clear[:, 12:] -= 0.004  # clear-sky difference 0.004 on the clear half
        samples.append({"id": f"s{i}", "s2_cloudy": cloudy, "s2_clear": clear, "s1": s1, "mask": mask,
                        "has_sar": 1.0, "valid": np.ones((1, 24, 24), np.float32)})
    # restored = cloudy + e with e = 0.02 + 0.1 VV; actual |restored - clear| = e (+0.004 on the clear half)
    cal = calibrate_samples(HalfRight(), [samples], Normalization(), torch.device("cpu"))
    assert cal.error_scale == pytest.approx(2.0, rel=0.1)
    assert cal.kept_error == pytest.approx(0.004, abs=1e-5)
    assert len(cal.kept_error_bands) == 13
    assert cal.median_spearman > 0.9
    assert reliability_holds(cal.table)
    entry = cal.card_entry("test")
    assert entry["error_scale"] == pytest.approx(cal.error_scale, abs=1e-5) and entry["reliability_holds"] is True


# ---- the restore output --------------------------------------------------------------------------------


def _scene(tmp_path: Path, h: int = 40, w: int = 50) -> tuple[Path, Path, Path, np.ndarray]:
    arr = rasters.s2_array(h, w)
    arr[:, :4, :] = 0  # optical nodata rows
    s2 = rasters.write_s2(tmp_path / "s2.tif", h, w, array=arr)
    sar = rasters.s1_array(h, w)
    s1 = rasters.write_s1(tmp_path / "s1.tif", h, w, array=sar)
    cloud = np.zeros((h, w), np.uint8)
    cloud[:, :25] = 1  # left half cloudy
    mask = rasters.write_mask(tmp_path / "mask.tif", cloud)
    return s1, s2, mask, sar


def test_uncertainty_output_is_the_calibrated_head_error_and_kept_error(tmp_path: Path) -> None:
    s1, s2, mask, sar = _scene(tmp_path)
    card = Card(config={"error_head": True}, trust={"error_scale": 2.0, "kept_error": 0.007})
    opts = RestoreOptions(sar=s1, optical=s2, output=tmp_path / "o.tif", cloud_mask=mask, feather=0, keep_clear=True,
                          uncertainty_output=tmp_path / "u.tif")
    res = restore_scene_with_model(KnownError(0.3, 0.01), card, opts)
    assert res.uncertainty_output == tmp_path / "u.tif"
    ds = gdal.Open(str(res.uncertainty_output))
    band = ds.GetRasterBand(1)
    assert ds.RasterCount == 1 and band.DataType == gdal.GDT_Float32
    assert band.GetDescription() == "predicted_abs_error" and band.GetNoDataValue() == -1.0
    out = gdal.Open(str(res.output))
    assert ds.GetGeoTransform() == out.GetGeoTransform() and ds.GetProjection() == out.GetProjection()
    err = band.ReadAsArray()
    vv = Normalization().s1_to_unit(sar)[0]
    assert (err[:4] == -1.0).all()  # nodata where the input is nodata
    np.testing.assert_allclose(err[4:, :25], 2.0 * 0.01 * (1 + vv[4:, :25]), rtol=1e-5)  # restored: scale x head
    np.testing.assert_allclose(err[4:, 25:], 0.007, rtol=1e-6)  # kept from the input: the clear-sky difference
    assert ds.GetMetadata()["MMCANET_ERROR_CALIBRATED"] == "yes"


def test_uncertainty_needs_an_error_head_and_writes_nothing_without(tmp_path: Path) -> None:
    s1, s2, mask, _ = _scene(tmp_path)
    torch.manual_seed(0)
    old = modelfile.save_model(tmp_path / "old.safetensors", models.build_model("mmcanet", "single", **TINY),
                               modelfile.ModelCard(name="old-model", config=TINY, tile_size=32, overlap=8))
    before = sorted(p.name for p in tmp_path.iterdir())
    opts = RestoreOptions(sar=s1, optical=s2, output=tmp_path / "o.tif", model=old, device="cpu",
                          uncertainty_output=tmp_path / "u.tif")
    with pytest.raises(ModelFileError, match=r"old-model.*old\.safetensors.*no error head.*configs/error_head\.toml"):
        restore_scene(opts)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    # without the uncertainty output the same model restores as before
    assert restore_scene(RestoreOptions(sar=s1, optical=s2, output=tmp_path / "o.tif", model=old, device="cpu")).output.exists()


def test_cli_uncertainty_and_the_deprecated_confidence_name(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s1, s2, mask, _ = _scene(tmp_path)
    torch.manual_seed(0)
    cfg = {**TINY, "error_head": True}
    path = modelfile.save_model(tmp_path / "head.safetensors", models.build_model("mmcanet", "single", **cfg),
                                modelfile.ModelCard(name="with-head", config=cfg, tile_size=32, overlap=8))
    common = ["restore", "--sar", str(s1), "--optical", str(s2), "--cloud-mask", str(mask), "--model", str(path),
              "--device", "cpu"]
    assert main([*common, "--output", str(tmp_path / "a.tif"), "--uncertainty-output", str(tmp_path / "u.tif"),
                 "--change-output", str(tmp_path / "c.tif")]) == 0
    err = rasters.read(tmp_path / "u.tif")[0]
    assert (err[:4] == -1).all() and np.isfinite(err).all() and (err[4:] > 0).all()
    assert gdal.Open(str(tmp_path / "c.tif")).GetRasterBand(1).GetDescription() == "mean_abs_change_reflectance"
    with caplog.at_level(logging.WARNING, logger="mmcanet.restore"):
        assert main([*common, "--output", str(tmp_path / "b.tif"), "--confidence-output", str(tmp_path / "c2.tif")]) == 0
    assert "deprecated" in caplog.text and "--change-output" in caplog.text
    np.testing.assert_array_equal(rasters.read(tmp_path / "c2.tif"), rasters.read(tmp_path / "c.tif"))
