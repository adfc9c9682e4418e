"""Compare cloud/shadow detectors: accuracy, restoration quality with each mask, time per 10980^2 tile.

Detectors (mmcanet.clouds.backends): rules (built in), ukis (ukis-csmask 1.0.0 + onnxruntime),
s2cloudless (1.7.3); those not installed are reported as such. Measure in a separate venv:
    /usr/bin/python3 -m venv --system-site-packages /work/venv-detectors
    /work/venv-detectors/bin/pip install -c constraints.txt -r requirements-dev.txt \
        ukis-csmask==1.0.0 onnxruntime==1.32.0 s2cloudless==1.7.3
    PYTHONPATH=$PWD/core nice -n 5 /work/venv-detectors/bin/python bench/compare_detectors.py

(a) accuracy vs ../shared/data/cloud-reference/ukis_sentinel2.npz: that file comes from ukis-csmask's
    own tests, so it favours ukis; it has 6 bands only, so s2cloudless cannot run on it.
(b) end to end: each detector's cloud|shadow mask is given to the engine (RestoreOptions.cloud_mask,
    as `mmcanet restore --cloud-mask`) with the bundled model on the validation triplets; metrics vs
    the cloud-free reference (mmcanet.metrics).
(c) time of one detector call on a 2048^2 mosaic of 64 real 256^2 cloudy patches, EXTRAPOLATED
    linearly to 10980^2 (x 28.7).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from mmcanet.clouds.backends import (
    PACKAGES,
    RulesDetector,
    S2CloudlessDetector,
    UkisDetector,
    missing_packages,
)
from mmcanet.metrics import compute_metrics
from osgeo import gdal

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TRIP = DATA / "sen12mscr-triplets"
GEO = DATA / "sen12mscr-triplets-georef"
VALIDATION = [(TRIP, t) for t in ("4438", "5349", "6317")] + [
    (GEO, t) for t in ("ROIs1970_fall_139_p839", "ROIs2017_winter_112_p797")
]


def detectors() -> dict[str, object]:
    """Variants measured (name -> callable s2 -> CloudMasks), installed ones only."""
    out: dict[str, object] = {"rules": RulesDetector()}
    if not missing_packages("ukis"):
        out["ukis (30 m)"] = UkisDetector(scale=3)
        out["ukis (10 m)"] = UkisDetector(scale=1)
    if not missing_packages("s2cloudless"):
        out["s2cloudless"] = S2CloudlessDetector(shadows=False)
        out["s2cloudless + rule shadows"] = S2CloudlessDetector(shadows=True)
    for n in PACKAGES:
        if missing_packages(n):
            print(f"{n}: not installed ({', '.join(missing_packages(n))})")
    return out


def iou(p: np.ndarray, r: np.ndarray) -> tuple[float, float, float]:
    """IoU, precision, recall."""
    tp = float((p & r).sum())
    return tp / max(float((p | r).sum()), 1), tp / max(float(p.sum()), 1), tp / max(float(r.sum()), 1)


def accuracy(dets: dict[str, object]) -> None:
    """(a) cloud / shadow / either vs the ukis-csmask reference mask."""
    d = np.load(DATA / "cloud-reference" / "ukis_sentinel2.npz")
    img, ref = d["img"], d["msk"][..., 0]
    s2 = np.zeros((13, *img.shape[:2]), np.float32)  # L1C order; bands the file lacks stay 0
    for i, b in enumerate((1, 2, 3, 7, 11, 12)):
        s2[b] = img[..., i]
    print("\n(a) vs ukis_sentinel2.npz (512^2, 6 bands; ukis-csmask's own test file: favours ukis)")
    print("| detector | cloud IoU / P / R | shadow IoU / P / R | cloud+shadow IoU |\n|---|---|---|---|")
    for name, det in dets.items():
        if name.startswith("s2cloudless"):
            print(f"| {name} | n/a (needs B1 B5 B9 B10) | | |")
            continue
        m = det(s2)  # type: ignore[operator]
        c, s = iou(m.cloud, ref == 4), iou(m.shadow, ref == 0)
        both = iou(m.cloud | m.shadow, (ref == 4) | (ref == 0))
        print(f"| {name} | {c[0]:.3f} / {c[1]:.3f} / {c[2]:.3f} | {s[0]:.3f} / {s[1]:.3f} / {s[2]:.3f} | {both[0]:.3f} |")


def _read(p: Path) -> np.ndarray:
    return gdal.Open(str(p)).ReadAsArray().astype(np.float32)


def _write_mask(mask: np.ndarray, like: Path, out: Path) -> None:
    src = gdal.Open(str(like))
    ds = gdal.GetDriverByName("GTiff").Create(str(out), src.RasterXSize, src.RasterYSize, 1, gdal.GDT_Byte)
    if src.GetProjection():
        ds.SetProjection(src.GetProjection())
        ds.SetGeoTransform(src.GetGeoTransform())
    ds.GetRasterBand(1).WriteArray(mask.astype(np.uint8))
    ds = None


def end_to_end(dets: dict[str, object]) -> None:
    """(b) restore each validation triplet with each detector's mask; mean and per-image metrics."""
    import torch
    from mmcanet.inference import RestoreOptions, load_model_for, restore_scene

    torch.set_num_threads(2)
    model = load_model_for(None, torch.device("cpu"))
    rows: dict[str, list[dict[str, float]]] = {}
    cover: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for folder, tid in VALIDATION:
            s1, s2p = folder / f"{tid}_s1.tif", folder / f"{tid}_s2_cloudy.tif"
            cloudy, target = _read(s2p) / 10000.0, _read(folder / f"{tid}_s2_cloudfree.tif") / 10000.0
            variants = {name: (lambda d=det, x=cloudy: d(x)) for name, det in dets.items()}  # type: ignore[operator]
            shipped = folder / f"{tid}_cloudmask.tif"
            rows.setdefault("identity (cloudy input)", []).append(compute_metrics(np.clip(cloudy, 0, 1), target))
            items = list(variants.items()) + ([("shipped SEN12MS-CR mask", None)] if shipped.exists() else [])
            for name, fn in items:
                if fn is None:
                    mask = _read(shipped) > 0
                else:
                    m = fn()
                    mask = np.asarray(m.cloud) | np.asarray(m.shadow)
                mpath, out = Path(tmp) / f"{tid}_mask.tif", Path(tmp) / f"{tid}_out.tif"
                _write_mask(mask, s2p, mpath)
                restore_scene(RestoreOptions(sar=s1, optical=s2p, output=out, cloud_mask=mpath), model=model,
                              log=lambda _m: None)
                met = compute_metrics(np.clip(_read(out) / 10000.0, 0, 1), target)
                rows.setdefault(name, []).append(met)
                cover.setdefault(name, []).append(float(mask.mean()))
                print(f"  {tid:26s} {name:28s} mask {mask.mean():.3f}  PSNR {met['psnr']:.2f} SSIM {met['ssim']:.3f} "
                      f"MAE {met['mae']:.4f} SAM {met['sam']:.2f}", flush=True)
    print("\n(b) restoration with each mask (bundled model, engine defaults, keep-clear), mean over images")
    print("| mask | images | mean masked | PSNR dB | SSIM | MAE | SAM deg |\n|---|---|---|---|---|---|---|")
    for name, ms in rows.items():
        mean = {k: float(np.mean([m[k] for m in ms])) for k in ("psnr", "ssim", "mae", "sam")}
        cv = f"{np.mean(cover[name]):.3f}" if name in cover else "-"
        print(f"| {name} | {len(ms)} | {cv} | {mean['psnr']:.2f} | {mean['ssim']:.3f} | {mean['mae']:.4f} | {mean['sam']:.2f} |")


def timing(dets: dict[str, object]) -> None:
    """(c) one call on a 2048^2 mosaic of real cloudy patches, extrapolated to 10980^2."""
    paths = sorted(TRIP.glob("*_s2_cloudy.tif")) + sorted((DATA / "s2-cloudy-clear-pairs").glob("*_s2_cloudy.tif"))
    paths += sorted(GEO.glob("*_s2_cloudy.tif"))
    mosaic = np.zeros((13, 2048, 2048), np.float32)
    for k in range(64):
        r, c = divmod(k, 8)
        mosaic[:, r * 256 : (r + 1) * 256, c * 256 : (c + 1) * 256] = _read(paths[k % len(paths)]) / 10000.0
    factor = (10980 / 2048) ** 2
    print(f"\n(c) time on a 2048^2 mosaic of 64 real 256^2 cloudy patches; 10980^2 EXTRAPOLATED (x {factor:.1f})")
    print("| detector | 2048^2 measured s | 10980^2 extrapolated min |\n|---|---|---|")
    for name, det in dets.items():
        if name in ("ukis (10 m)", "s2cloudless"):
            continue  # same cost class as their siblings; 10 m ukis is ~9x the 30 m run
        t0 = time.perf_counter()
        det(mosaic)  # type: ignore[operator]
        dt = time.perf_counter() - t0
        print(f"| {name} | {dt:.1f} | {dt * factor / 60:.1f} |", flush=True)


def main() -> int:
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found (needs ../shared/data)")
        return 0
    dets = detectors()
    parts = sys.argv[1:] or ["accuracy", "e2e", "timing"]
    if "accuracy" in parts:
        accuracy(dets)
    if "e2e" in parts:
        end_to_end(dets)
    if "timing" in parts:
        timing(dets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
