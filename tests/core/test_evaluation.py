"""Evaluation: model vs identity metrics, metrics.csv, report.md, quick-look PNGs, `mmcanet evaluate`."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from mmcanet.cli import main as cli_main
from mmcanet.datasets import TripletFolder
from mmcanet.errors import CancelledError, InputError
from mmcanet.evaluation import evaluate, evaluate_model, open_evaluation_data, quicklook_row, write_png
from mmcanet.metrics import compute_metrics
from osgeo import gdal

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
TINY = {"widths": [8, 8, 16, 16], "heads": 2, "window": 4}


def _write(path: Path, data: np.ndarray) -> None:
    gtype = gdal.GDT_UInt16 if data.dtype == np.uint16 else gdal.GDT_Float32
    ds = gdal.GetDriverByName("GTiff").Create(str(path), data.shape[2], data.shape[1], data.shape[0], gtype)
    for i in range(data.shape[0]):
        ds.GetRasterBand(i + 1).WriteArray(data[i])
    ds = None


@pytest.fixture()
def triplets(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        clear = rng.integers(300, 2500, (13, 32, 32)).astype(np.uint16)
        cloudy = clear.copy()
        cloudy[:, 4:20, 6:22] = 5000 + 200 * i
        _write(root / f"t{i}_s2_cloudfree.tif", clear)
        _write(root / f"t{i}_s2_cloudy.tif", cloudy)
        _write(root / f"t{i}_s1.tif", rng.normal(-12, 3, (2, 32, 32)).astype(np.float32))
    return root


class Identity(torch.nn.Module):
    """Returns the cloudy input: its scores must equal the identity baseline."""

    def forward(self, s2: torch.Tensor, s1: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        assert s2.shape[1] == 13 and s1.shape[1] == 2
        assert mask is None or mask.shape == (s2.shape[0], 1, *s2.shape[2:])
        return s2 * 1.0


def test_identity_model_scores_equal_baseline(triplets: Path, tmp_path: Path) -> None:
    data, kind = open_evaluation_data(triplets)
    assert kind == "triplets"
    res = evaluate_model(Identity(), data, tmp_path / "out", data_kind=kind, quicklooks=2)
    assert res.n_images == 3 and len(res.rows) == 3
    for r in res.rows:
        for m in ("psnr", "ssim", "mae", "sam"):
            assert r[f"model_{m}"] == pytest.approx(r[f"identity_{m}"], abs=1e-6)
    # the identity baseline is the protocol metric of cloudy vs clear on DN / 10000
    s = TripletFolder(triplets)[1]
    expect = compute_metrics(s["s2_cloudy"].numpy(), s["s2_clear"].numpy())
    assert res.rows[1]["identity_psnr"] == pytest.approx(expect["psnr"], abs=1e-6)
    assert res.mean["identity_psnr"] == pytest.approx(np.mean([r["identity_psnr"] for r in res.rows]))
    assert res.rows[0]["cloud_fraction"] > 0.1  # detector found the bright block
    with open(res.metrics_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == ["t0", "t1", "t2"]
    assert {"model_psnr", "identity_sam", "cloud_fraction"} <= set(rows[0])
    assert len(res.quicklooks) == 2 and all(p.exists() for p in res.quicklooks)
    text = res.report_md.read_text()
    assert "| PSNR (dB) |" in text and "quicklook_000.png" in text and "identity" in text


def test_evaluate_model_file_and_cli(triplets: Path, tmp_path: Path) -> None:
    from mmcanet.modelfile import ModelCard, save_model
    from mmcanet.models import build_model

    torch.manual_seed(0)
    model = build_model("mmcanet", "single", **TINY)
    mpath = save_model(tmp_path / "tiny.safetensors", model, ModelCard(name="tiny", config=TINY))
    res = evaluate(mpath, triplets, tmp_path / "ev", limit=2, quicklooks=1)
    assert res.n_images == 2
    assert all(math.isfinite(r["model_psnr"]) and 0 <= r["model_sam"] <= 90 for r in res.rows)
    # `mmcanet evaluate` writes the same files and exits 0; a bad folder exits 1 with a message
    out = tmp_path / "cli"
    assert cli_main(["evaluate", "--model", str(mpath), "--data", str(triplets), "--out", str(out), "--limit", "1"]) == 0
    assert (out / "metrics.csv").exists() and (out / "report.md").exists()
    assert cli_main(["evaluate", "--model", str(mpath), "--data", str(tmp_path / "nope"), "--out", str(out)]) == 1


def test_errors_and_cancel(triplets: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not an evaluation data folder"):
        open_evaluation_data(tmp_path / "empty")
    data, _ = open_evaluation_data(triplets)
    with pytest.raises(CancelledError):
        evaluate_model(Identity(), data, tmp_path / "c", is_canceled=lambda: True)
    with pytest.raises(InputError, match="no images"):
        evaluate_model(Identity(), data, tmp_path / "c", limit=0)
    seen: list[float] = []
    evaluate_model(Identity(), data, tmp_path / "p", quicklooks=0, progress=seen.append, use_mask=False)
    assert seen == pytest.approx([1 / 3, 2 / 3, 1.0])


def test_png_writer_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (7, 11, 3)).astype(np.uint8)
    p = write_png(tmp_path / "x.png", img)
    ds = gdal.Open(str(p))  # GDAL's own PNG driver reads it back (GDAL is a hard dependency; PIL is not)
    assert ds.GetDriver().ShortName == "PNG"
    back = np.moveaxis(ds.ReadAsArray(), 0, -1)
    np.testing.assert_array_equal(back, img)


def test_quicklook_row_layout_and_shared_stretch() -> None:
    rng = np.random.default_rng(2)
    ref = rng.random((13, 20, 24)).astype(np.float32) * 0.2
    cloudy = ref.copy()
    cloudy[:, :10] = 0.9
    row = quicklook_row(rng.random((2, 20, 24)).astype(np.float32), cloudy, ref, ref)
    assert row.shape == (20, 4 * 24 + 3 * 4, 3) and row.dtype == np.uint8
    restored_panel = row[:, 2 * 28 : 2 * 28 + 24]
    reference_panel = row[:, 3 * 28 : 3 * 28 + 24]
    np.testing.assert_array_equal(restored_panel, reference_panel)  # same stretch for the whole row
    assert (row[:10, 28 : 28 + 24] == 255).all()  # cloud saturates under the reference stretch
    no_sar = quicklook_row(None, cloudy, ref, ref)
    assert (no_sar[:, :24] == 128).all()


def test_real_triplets_identity_baseline(tmp_path: Path) -> None:
    root = SHARED / "sen12mscr-triplets"
    if not root.exists():
        pytest.skip(f"needs real data at {root} (../shared/data is absent)")
    res = evaluate_model(Identity(), open_evaluation_data(root)[0], tmp_path, limit=2, quicklooks=1)
    assert res.n_images == 2
    assert all(r["identity_psnr"] == pytest.approx(r["model_psnr"], abs=1e-6) for r in res.rows)


def test_model_card_heldout_equals_mmcanet_evaluate_on_a_real_triplet(tmp_path: Path) -> None:
    """The card's held-out figures and `mmcanet evaluate` come from one scoring rule: same numbers."""
    from mmcanet.config import config_from_dict
    from mmcanet.modelfile import read_card
    from mmcanet.training import train

    src = SHARED / "sen12mscr-triplets"
    if not src.is_dir():
        pytest.skip(f"needs real data at {src} (../shared/data is absent)")
    one = tmp_path / "one"
    one.mkdir()
    for f in src.glob("4438_*.tif"):
        (one / f.name).symlink_to(f)
    cfg = config_from_dict({
        "data": [str(one)], "val": [str(one)], "model": TINY, "max_steps": 1, "batch_size": 1, "crop": 32,
        "warmup_steps": 1, "device": "cpu", "threads": 1, "workers": 0, "run_dir": str(tmp_path / "run"),
        "output": str(tmp_path / "run" / "m.safetensors"),
    })
    res = train(cfg)
    card = read_card(res.model_path).metrics["heldout"]
    ev = evaluate(res.model_path, one, tmp_path / "ev", quicklooks=0)
    assert card["n_images"] == ev.n_images == 1
    for k in ("psnr", "ssim", "mae", "sam", "rmse"):
        assert card[k] == pytest.approx(ev.mean[f"model_{k}"], abs=1e-4), k
        assert card[f"identity_{k}"] == pytest.approx(ev.mean[f"identity_{k}"], abs=1e-4), k


class IdentityJudgingBrightness(Identity):
    """Identity, whose predicted error is the pixel's mean brightness (bright = cloud = wrong)."""

    def forward_with_error(self, s2: torch.Tensor, s1: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward(s2, s1, mask), s2.mean(1, keepdim=True)


def test_trust_layer_is_scored_with_spearman_and_reliability(triplets: Path, tmp_path: Path) -> None:
    from mmcanet.trust import actual_error, spearman

    data, kind = open_evaluation_data(triplets)
    res = evaluate_model(IdentityJudgingBrightness(), data, tmp_path / "out", data_kind=kind, quicklooks=0,
                         use_mask=False, error_scale=2.0)
    for i, r in enumerate(res.rows):
        s = data[i]
        cloudy, clear = np.asarray(s["s2_cloudy"]), np.asarray(s["s2_clear"])
        predicted = 2.0 * cloudy.mean(0)
        assert r["error_spearman"] == pytest.approx(spearman(predicted, actual_error(cloudy, clear)), abs=0.05)
        assert r["error_spearman"] > 0.5  # the cloud square is both brightest and wrongest
        assert r["error_mean_predicted"] == pytest.approx(float(predicted.mean()), rel=1e-5)
    assert res.mean["error_spearman_median"] == pytest.approx(float(np.median([r["error_spearman"] for r in res.rows])))
    assert sum(b.n for b in res.reliability) == 3 * 32 * 32
    assert res.reliability_png is not None and res.reliability_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = res.report_md.read_text()
    assert "## Trust layer" in text and "reliability.png" in text and "actual / predicted" in text
    with open(res.metrics_csv, newline="") as fh:
        assert "error_spearman" in next(csv.reader(fh))
    plain = evaluate_model(Identity(), data, tmp_path / "plain", data_kind=kind, quicklooks=0)
    assert not plain.reliability and "Trust layer" not in plain.report_md.read_text()
