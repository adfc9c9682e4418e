"""Measure mmcanet's rule-based cloud/shadow detector against a real reference mask.

Reference: ../shared/data/cloud-reference/ukis_sentinel2.npz (dlr-eoc/ukis-csmask test file, Apache-2.0):
``img`` (512, 512, 6) float32 Sentinel-2 L1C TOA reflectance, bands B2, B3, B4, B8, B11, B12;
``msk`` (512, 512, 1) uint8 reference classes as ukis-csmask's own tests read them:
0 = cloud shadow, 1 / 2 / 3 = clear (3 = land, 1 = water), 4 = cloud.

Also reports agreement with the cloud masks shipped with the SEN12MS-CR triplets (those masks are
themselves a detector's output, so this is agreement, not accuracy).

Usage (from the repository root):
    .venv/bin/python bench/cloud_detector_accuracy.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from mmcanet.clouds.detect import detect_clouds, detect_clouds_from_bands

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
UKIS_BANDS = ("B2", "B3", "B4", "B8", "B11", "B12")


def scores(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Accuracy, IoU, precision, recall of bool masks (positive class = True)."""
    tp = float(np.sum(pred & ref))
    fp = float(np.sum(pred & ~ref))
    fn = float(np.sum(~pred & ref))
    tn = float(np.sum(~pred & ~ref))
    return {
        "accuracy": (tp + tn) / max(tp + tn + fp + fn, 1.0),
        "iou": tp / max(tp + fp + fn, 1.0),
        "precision": tp / max(tp + fp, 1.0),
        "recall": tp / max(tp + fn, 1.0),
        "ref_fraction": float(ref.mean()),
        "pred_fraction": float(pred.mean()),
    }


def _fmt(name: str, s: dict[str, float]) -> str:
    return (
        f"| {name} | {s['accuracy']:.3f} | {s['iou']:.3f} | {s['precision']:.3f} | {s['recall']:.3f} "
        f"| {s['ref_fraction']:.3f} | {s['pred_fraction']:.3f} |"
    )


def run_ukis(path: Path) -> dict[str, dict[str, float]]:
    """Score the detector on the UKIS reference image; returns {'cloud': ..., 'shadow': ..., 'clear': ...}."""
    d = np.load(path)
    img = d["img"].astype(np.float32)
    msk = d["msk"][..., 0]
    bands = {b: img[..., i] for i, b in enumerate(UKIS_BANDS)}
    t0 = time.perf_counter()
    masks = detect_clouds_from_bands(bands)
    dt = time.perf_counter() - t0
    raw = detect_clouds_from_bands(bands, dilation=0)
    ref_cloud = msk == 4
    ref_shadow = msk == 0
    out = {
        "cloud": scores(masks.cloud, ref_cloud),
        "shadow": scores(masks.shadow, ref_shadow),
        "cloud+shadow": scores(masks.cloud | masks.shadow, ref_cloud | ref_shadow),
        "cloud, no dilation": scores(raw.cloud, ref_cloud),
    }
    print(f"UKIS reference {img.shape[0]}x{img.shape[1]}, 6 bands, detector time {dt * 1000:.0f} ms")
    return out


def run_triplets(folder: Path) -> dict[str, float]:
    """Agreement with the cloud masks shipped with the SEN12MS-CR triplets (all pixels pooled)."""
    from osgeo import gdal

    preds, refs = [], []
    for mpath in sorted(folder.glob("*_cloudmask.tif")):
        sid = mpath.name[: -len("_cloudmask.tif")]
        s2 = gdal.Open(str(folder / f"{sid}_s2_cloudy.tif")).ReadAsArray().astype(np.float32) / 10000.0
        ref = gdal.Open(str(mpath)).ReadAsArray() > 0
        pred = detect_clouds(s2).cloud
        print(f"  triplet {sid}: ref cloud {ref.mean():.3f} pred {pred.mean():.3f}")
        preds.append(pred.ravel())
        refs.append(ref.ravel())
    return scores(np.concatenate(preds), np.concatenate(refs))


def main() -> int:
    ukis = DATA / "cloud-reference" / "ukis_sentinel2.npz"
    if not ukis.exists():
        print(f"skipped: {ukis} not found (needs ../shared/data)")
        return 0
    res = run_ukis(ukis)
    header = "| class | accuracy | IoU | precision | recall | ref fraction | predicted fraction |\n|---|---|---|---|---|---|---|"
    print(header)
    for k, v in res.items():
        print(_fmt(k, v))
    trip = DATA / "sen12mscr-triplets"
    if trip.exists():
        print("Agreement with the SEN12MS-CR triplets' shipped cloud masks (another detector's output):")
        agreement = run_triplets(trip)
        print(header)
        print(_fmt("cloud (13-band, with B10)", agreement))
    return 0


if __name__ == "__main__":
    sys.exit(main())
