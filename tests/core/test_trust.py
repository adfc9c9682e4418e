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
from mmcanet.models.error_features import FEATURE_NAMES, FeatureErrorModel, error_features
from mmcanet.normalization import Normalization
from mmcanet.trust import (
    calibrate_samples,
    fit_error_scale,
    fit_log_linear,
    ranks,
    reliability_holds,
    reliability_table,
    spearman,
)
from mmcanet.trust_fit import ImageCues, fit_cues
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
    with pytest.raises(ModelFileError, match=r"old-model.*old\.safetensors.*no trust layer.*scripts/fit_trust\.py"):
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


# ---- the fitted feature predictor (models/error_features.py, trust_fit.py) ----------------------------


def test_fit_log_linear_recovers_a_known_laplace_scale() -> None:
    """Errors drawn from Laplace(0, b) with log b = -4 + 0.8 x1 - 0.3 x2: the fit finds those numbers."""
    rng = np.random.default_rng(3)
    feats, errs = [], []
    for _ in range(4):
        x = rng.normal(0.0, 1.0, (3, 20_000))  # x3 is noise: its coefficient must come out ~0
        b = np.exp(-4.0 + 0.8 * x[0] - 0.3 * x[1])
        feats.append(x)
        errs.append(np.abs(rng.laplace(0.0, b)))
    coef, intercept, mean, std = fit_log_linear(feats, errs, ridge=0.0)
    raw = coef / std  # back to the unstandardised features
    assert raw == pytest.approx([0.8, -0.3, 0.0], abs=0.03)
    assert intercept - float(raw @ mean) == pytest.approx(-4.0, abs=0.03)
    with pytest.raises(ValueError, match="no pixels"):
        fit_log_linear([], [])


def test_error_features_measure_cloud_depth_brightness_and_missing_sar() -> None:
    h = w = 64
    cloud = torch.zeros(1, 1, h, w)
    cloud[..., 8:56, 8:56] = 1.0  # a 48 px cloud
    cloudy = torch.full((1, 13, h, w), 0.1)
    restored = torch.full((1, 13, h, w), 0.2)
    s1 = torch.zeros(1, 2, h, w)
    f = error_features(cloudy, restored, cloud, s1, ["cloud_7", "cloud_31", "cloud_tile", "log_bright", "log_change", "no_sar"])
    c7, c31, tile, bright, change, no_sar = (f[0, i] for i in range(6))
    assert c7[32, 32] == pytest.approx(1.0) and c7[0, 0] == pytest.approx(0.0)  # deep inside / far outside
    assert c7[32, 8] == pytest.approx(4 / 7)  # on the cloud's first column: 4 of the 7 columns are cloud
    assert c31[32, 32] > c31[32, 12] > c31[32, 4] > 0  # depth inside the cloud, nearness outside
    assert float(tile[0, 0]) == pytest.approx(48 * 48 / (64 * 64))
    assert float(bright[5, 5]) == pytest.approx(np.log(0.2 + 1e-3), rel=1e-5)
    assert float(change[5, 5]) == pytest.approx(np.log(0.1 + 1e-3), rel=1e-4)
    assert (no_sar == 1).all()
    assert (error_features(cloudy, restored, cloud, s1 + 0.5, ["no_sar"]) == 0).all()
    # the network's opacity estimate when given (it sees haze a mask misses), else the mask stands in
    haze = torch.full((1, 1, h, w), 0.25)
    opa = error_features(cloudy, restored, cloud, s1, ["opacity", "log_opacity"], opacity=haze)[0]
    assert (opa[0] == 0.25).all() and float(opa[1, 0, 0]) == pytest.approx(np.log(0.25 + 1e-3), rel=1e-5)
    torch.testing.assert_close(error_features(cloudy, restored, cloud, s1, ["opacity"])[0, 0], cloud[0, 0])
    # the cumulative-sum box equals average pooling (count_include_pad=False) at the borders too
    x = torch.rand(1, 1, 30, 23, dtype=torch.float64)
    ref = torch.nn.functional.avg_pool2d(x, 7, stride=1, padding=3, count_include_pad=False)
    got = error_features(x.repeat(1, 13, 1, 1), x.repeat(1, 13, 1, 1), x, torch.zeros(1, 2, 30, 23), ["cloud_7"])
    torch.testing.assert_close(got[0, 0], ref[0, 0].float())
    with pytest.raises(ValueError, match="unknown trust feature"):
        error_features(cloudy, restored, cloud, s1, ["nope"])


def _synthetic_cues(seed: int, names: list[str]) -> tuple[ImageCues, np.ndarray]:
    """A scene whose actual error grows with depth inside the cloud and with the surface's brightness."""
    rng = np.random.default_rng(seed)
    h = w = 96
    yy, xx = np.mgrid[:h, :w]
    r = rng.uniform(20, 40)
    cloud = (((yy - rng.uniform(30, 66)) ** 2 + (xx - rng.uniform(30, 66)) ** 2) < r * r).astype(np.float32)
    surface = np.kron(rng.uniform(0.05, 0.4, (h // 12, w // 12)), np.ones((12, 12))).astype(np.float32)  # fields
    cloudy = np.repeat(surface[None], 13, 0)
    cloudy[:, cloud > 0] = 0.6
    restored = np.repeat(surface[None], 13, 0)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))[None]  # noqa: E731
    f = error_features(t(cloudy), t(restored), t(cloud[None]), torch.zeros(1, 2, h, w), names)[0].numpy()
    depth = f[names.index("cloud_31")]
    b = 0.02 * np.exp(2.0 * depth) * surface  # expected absolute error: deeper in cloud and brighter = worse
    actual = np.abs(rng.laplace(0.0, b)).ravel()
    cues = ImageCues(f"img{seed}", f.reshape(len(names), -1), actual, np.full(13, 0.01 * (cloud == 0).sum()),
                     int((cloud == 0).sum()))
    return cues, b.ravel()


def test_fitted_predictor_ranks_a_synthetic_scene_and_is_calibrated() -> None:
    names = ["cloud", "cloud_31", "log_bright", "log_change"]
    train = [_synthetic_cues(i, names)[0] for i in range(6)]
    val, truth = zip(*(_synthetic_cues(100 + i, names) for i in range(3)), strict=True)
    fit = fit_cues(train, list(val), names, fit_pixels=3000, folds=3)
    # the best any predictor can do is the true expected error: single Laplace draws cap the rank correlation
    oracle = [spearman(b, c.actual) for c, b in zip(val, truth, strict=True)]
    assert min(oracle) > 0.25
    for c, best in zip(val, oracle, strict=True):
        assert fit.spearman[c.id] > best - 0.05
    assert fit.median_cv_spearman > min(oracle) - 0.1
    assert reliability_holds(fit.table)
    assert fit.kept_error == pytest.approx(0.01)
    entry = fit.card_entry("synthetic")
    assert entry["predictor"]["features"] == names and entry["reliability_holds"] is True
    # the stored numbers predict what the fit measured: the engine's path equals the fit's
    model = FeatureErrorModel.from_card(entry["predictor"])
    c = val[0]
    got = model
    feats = torch.from_numpy(c.features.reshape(len(names), 96, 96))[None]
    logb = (((feats - got.mean) / got.std) * got.coef).sum(1) + got.intercept
    assert spearman(np.exp(logb.numpy().ravel()), c.actual) == pytest.approx(fit.spearman[c.id], abs=1e-3)  # card numbers are rounded


def test_predictor_card_round_trips_loads_and_drives_the_uncertainty_output(tmp_path: Path) -> None:
    torch.manual_seed(0)
    names = list(FEATURE_NAMES)
    predictor = FeatureErrorModel(names, [0.1] * len(names), -4.0, [0.0] * len(names), [1.0] * len(names)).to_card()
    assert FeatureErrorModel.from_card(predictor).to_card() == predictor
    card = modelfile.ModelCard(name="fitted", config=TINY, tile_size=32, overlap=8,
                               trust={"predictor": predictor, "error_scale": 1.5, "kept_error": 0.02})
    net = models.build_model("mmcanet", "single", **TINY)
    path = modelfile.save_model(tmp_path / "fitted.safetensors", net, card)
    back = modelfile.read_card(path)
    assert back.trust["predictor"] == predictor and back.has_error_head
    model, _ = modelfile.load_model(path)
    assert model.error_predictor is not None and model.error_head is None
    assert set(model.state_dict()) == set(net.state_dict())  # the predictor adds no weights
    s2, s1 = torch.rand(1, 13, 32, 32), torch.rand(1, 2, 32, 32)
    mask = torch.zeros(1, 1, 32, 32)
    with torch.inference_mode():
        restored, err = model.forward_with_error(s2, s1, mask)
        torch.testing.assert_close(restored, model(s2, s1, mask))  # judging never changes the restoration
        same, opacity = model.restore_with_opacity(s2, s1, mask)
        torch.testing.assert_close(same, restored)
        expected = model.error_predictor(s2, restored, mask, s1, opacity)  # the net's own opacity, not the mask
    torch.testing.assert_close(err, expected)
    # through the engine: the written layer is error_scale x the predictor's error, in reflectance
    s1p, s2p, maskp, _ = _scene(tmp_path)
    res = restore_scene(RestoreOptions(sar=s1p, optical=s2p, output=tmp_path / "o.tif", cloud_mask=maskp, model=path,
                                       device="cpu", feather=0, uncertainty_output=tmp_path / "u.tif"))
    err_map = rasters.read(res.uncertainty_output)[0]
    assert (err_map[:4] == -1).all() and (err_map[4:] > 0).all() and np.isfinite(err_map).all()
    assert err_map[4:].std() > 0  # per-pixel, not one number
    # a card whose predictor names a feature this version does not know: refused on load, with the file named
    bad = {**predictor, "features": ["no_such_feature", *names[1:]]}
    card.trust = {"predictor": bad}
    badpath = modelfile.save_model(tmp_path / "bad.safetensors", net, card)
    with pytest.raises(ModelFileError, match=r"bad\.safetensors.*unknown feature.*fit_trust\.py"):
        modelfile.load_model(badpath)
    card.trust = {"predictor": {**predictor, "std": [0.0] * len(names)}}
    zero = modelfile.save_model(tmp_path / "zero.safetensors", net, card)
    with pytest.raises(ModelFileError, match=r"std must be > 0"):
        modelfile.read_card(zero)


def test_fit_trust_command_on_real_triplets_writes_a_loadable_trust_layer(tmp_path: Path, shared_data: Path) -> None:
    """scripts/fit_trust.py end to end on real SEN12MS-CR triplets with a small (untrained) restorer."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fit_trust", Path(__file__).resolve().parents[2] / "scripts" / "fit_trust.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    torch.manual_seed(0)
    net = models.build_model("mmcanet", "single", **TINY)
    src = modelfile.save_model(tmp_path / "m.safetensors", net, modelfile.ModelCard(name="tiny", config=TINY))
    triplets = shared_data / "sen12mscr-triplets"
    config = tmp_path / "c.toml"
    config.write_text(
        f'[[data]]\npath = "{triplets}"\ninclude = ["1302", "4065"]\n'
        f'[[data]]\npath = "{triplets}"\nkind = "simulated"\ninclude = ["1302"]\n'  # simulated clouds: not fitted on
        f'[[val]]\npath = "{triplets}"\ninclude = ["4438", "6317"]\n', encoding="utf-8")
    out = tmp_path / "with_trust.safetensors"
    assert script.main([str(src), str(config), "--output", str(out), "--quiet"]) == 0
    card = modelfile.read_card(out)
    trust = card.trust
    assert trust["fitted_on"] == ["1302", "4065"] and trust["images"] == ["4438", "6317"]
    assert trust["predictor"]["features"] == list(FEATURE_NAMES)
    assert set(trust["spearman"]) == {"4438", "6317"} and all(-1 <= v <= 1 for v in trust["spearman"].values())
    assert 0 < trust["kept_error"] < 0.5 and trust["gamma"] != 0
    assert modelfile.read_card(src).trust == {}  # the input file is untouched
    model, _ = modelfile.load_model(out)
    assert model.error_predictor is not None
    for k, v in net.state_dict().items():  # the weights are the same
        torch.testing.assert_close(model.state_dict()[k], v)
    # no validation images: refused with the reason, nothing written
    config.write_text(f'[[data]]\npath = "{triplets}"\ninclude = ["1302"]\n', encoding="utf-8")
    assert script.main([str(src), str(config), "--output", str(tmp_path / "none.safetensors"), "--quiet"]) == 1
    assert not (tmp_path / "none.safetensors").exists()


def test_calibration_exponent_comes_from_inside_the_images_and_never_inverts_the_ranking() -> None:
    """Harder images predicted lower (pooled: wrong way round), but inside each image the ranking is right."""
    from mmcanet.trust_fit import GAMMA_RANGE, _calibrate

    rng = np.random.default_rng(5)
    log_p, actual = [], []
    for level in (0.01, 0.02, 0.04, 0.08):
        lp = rng.normal(0.0, 1.0, 20_000) - 100 * level  # the prediction's level falls as the image gets harder
        b = level * np.exp(0.5 * (lp - lp.mean()))  # inside an image the error follows b ** 0.5
        log_p.append(lp)
        actual.append(np.abs(rng.laplace(0.0, b)))
    gamma, a = _calibrate(log_p, actual)
    assert gamma == pytest.approx(0.5, abs=0.03)
    g_pooled, *_ = fit_log_linear([lp[None] for lp in log_p], actual, ridge=0.0)
    assert g_pooled[0] < 0  # what a pooled fit would have done: invert every image's ranking
    # a prediction that ranks every image backwards gets the floor, not a negative exponent
    assert _calibrate([-lp for lp in log_p], actual)[0] == GAMMA_RANGE[0]
    # the level: mean actual / b' ** ... equals one on average over the images (Laplace NLL optimum)
    ratio = np.mean([np.mean(e / np.exp(a + gamma * lp)) for lp, e in zip(log_p, actual, strict=True)])
    assert ratio == pytest.approx(1.0, rel=1e-6)
