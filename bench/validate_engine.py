"""Per-image validation table of one or more models through `mmcanet restore`, as users run it.

Run:  .venv/bin/python bench/validate_engine.py [--model A.safetensors --model B.safetensors ...]
      [--label NAME ...] [--args "RESTORE ARGS" ...] [--no-keep-clear] [--clear-weight W]
Default model: the bundled one. Images (``--images validation``, the default): every real SAR triplet held out from training
(configs/bundled.toml's validation set: 4438, 5349, 6317 of ../shared/data/sen12mscr-triplets and both
images of ../shared/data/sen12mscr-triplets-georef; ROIs1970_fall_139 is in the standard SEN12MS-CR test
split). The S2-only pairs of the validation set have no SAR and cannot go through `mmcanet restore`:
score them with `mmcanet evaluate --data ../shared/data/s2-cloudy-clear-pairs`.
Two more sets check that a change to the inference path does not only suit those five:
``--images trained`` (the 5 real triplets the bundled model was trained on) and ``--images simulated``
(simulated clouds over 6 clear S1 + S2 pairs no bundled model saw); ``--images l2a``: simulated clouds over
the 6 BigEarthNet Level-2A pairs (12 bands, atmospherically corrected); ``--images overcast``: real
overcast (the fully clouded dates of the SEN12MS-CR-TS patch) over the SAR and references of the 5
validation triplets, i.e. scenes where nothing of the ground shows and the fill is all there is.

Per image: PSNR (dB), SSIM, MAE, SAM (degrees) of the restored file against the cloud-free reference, on
the 0-1 scale, every band; and "struct": :func:`mmcanet.metrics.structure_correlation` (band-pass
sigma 1-8 correlation with the reference) over the pixels the rule-based detector calls cloud in the
cloudy input, i.e. how much of the real field/road structure the fill under cloud reproduces (NaN
where under 64 px are cloud). The first row per image is the cloudy input itself (identity).
"""

from __future__ import annotations

import argparse
import math
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from mmcanet.clouds.detect import detect_clouds
from mmcanet.metrics import compute_metrics, structure_correlation
from mmcanet.modelfile import default_model_path
from mmcanet.normalization import Normalization
from osgeo import gdal

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
IMAGES = [(DATA / "sen12mscr-triplets", t) for t in ("4438", "5349", "6317")] + [
    (DATA / "sen12mscr-triplets-georef", t) for t in ("ROIs1970_fall_139_p839", "ROIs2017_winter_112_p797")
]
TRAINED = [(DATA / "sen12mscr-triplets", t) for t in ("1302", "4065", "4294", "5278", "6780")]
"""The real triplets the bundled model WAS trained on: a check that a change does not undo what it learned
(biased towards the network's own fill, which has seen these references)."""
PAIRS = DATA / "s1s2-pairs"
"""Clear S1 + S2 pairs of 6 places no bundled model was trained on; ``--images simulated`` puts simulated
clouds over them (`mmcanet simulate --thickness mixed --coverage 0.5`, seed = index): a check on clouds
like the training simulator's, thin haze included, where the network sees part of the ground."""
OVERCAST = DATA / "sen12mscr-ts-timeseries"
OVERCAST_DATES = (2, 8, 25, 27, 29)
"""The dates of the SEN12MS-CR-TS patch that are cloud from edge to edge (5th percentile of B2 >= 0.4,
median 0.52-0.85; 8 is as bright as the training clouds, the others brighter, 25 and 29 high ice cloud
with B10 0.22-0.25). Their ground (central Italy) does not show, so each is a real overcast image of any
place: ``--images overcast`` puts each over the SAR of every validation triplet and scores against that
triplet's cloud-free image."""
BIGEARTHNET = DATA / "bigearthnet-s1s2"
"""6 BigEarthNet-MM S1 + S2 Level-2A pairs (120 px; band files): ``--images l2a`` stacks them and puts
simulated clouds over them, a check on the atmospherically corrected input most analysts download."""


def _l2a_set(tmp: Path) -> list[tuple[str, Path, Path, Path]]:
    """The BigEarthNet Level-2A pairs, band files stacked with `mmcanet stack`, clouded with `mmcanet simulate`."""
    exe = str(Path(sys.executable).parent / "mmcanet")
    out = []
    for i, s2_dir in enumerate(sorted((BIGEARTHNET / "BigEarthNet-S2-Example").iterdir())):
        patch = "_".join(s2_dir.name.split("_")[-2:])
        s1_dir = next((BIGEARTHNET / "BigEarthNet-S1-Example").glob(f"*_{patch}"))
        clear, sar, cloudy = tmp / f"ben_{patch}_s2.tif", tmp / f"ben_{patch}_s1.tif", tmp / f"ben_{patch}_cloudy.tif"
        subprocess.run([exe, "stack", "--optical", str(s2_dir), "--output", str(clear)], check=True, capture_output=True)
        subprocess.run([exe, "stack", "--sar", str(s1_dir), "--output", str(sar)], check=True, capture_output=True)
        subprocess.run([exe, "simulate", "--input", str(clear), "--output", str(cloudy), "--seed", str(i),
                        "--thickness", "mixed", "--coverage", "0.5"], check=True, capture_output=True)
        out.append((f"ben_{patch}", sar, cloudy, clear))
    return out


def _overcast_set(tmp: Path) -> list[tuple[str, Path, Path, Path]]:
    """Each overcast date over each validation triplet: its pixels in a file with the triplet's grid and band names."""
    out = []
    for folder, tid in IMAGES:
        clear = folder / f"{tid}_s2_cloudfree.tif"
        ref = gdal.Open(str(clear))
        for date in OVERCAST_DATES:
            src = gdal.Open(str(next(OVERCAST.glob(f"*_ImgNo_{date}_*.tif"))))
            cloudy = tmp / f"{tid}_overcast{date}.tif"
            ds = gdal.GetDriverByName("GTiff").Create(str(cloudy), ref.RasterXSize, ref.RasterYSize, 13, gdal.GDT_UInt16)
            if ref.GetProjection():
                ds.SetProjection(ref.GetProjection())
                ds.SetGeoTransform(ref.GetGeoTransform())
            for b in range(1, 14):
                ds.GetRasterBand(b).WriteArray(src.GetRasterBand(b).ReadAsArray(0, 0, ref.RasterXSize, ref.RasterYSize))
                ds.GetRasterBand(b).SetDescription(ref.GetRasterBand(b).GetDescription())
            ds = None
            out.append((f"{tid} + overcast {date}", folder / f"{tid}_s1.tif", cloudy, clear))
    return out


def _image_set(name: str, tmp: Path) -> list[tuple[str, Path, Path, Path]]:
    """``(id, S1, cloudy S2, clear S2)`` per image of the named set (simulated cloudy files go to ``tmp``)."""
    if name == "l2a":
        return _l2a_set(tmp)
    if name == "overcast":
        return _overcast_set(tmp)
    if name != "simulated":
        chosen = IMAGES if name == "validation" else TRAINED
        return [(t, f / f"{t}_s1.tif", f / f"{t}_s2_cloudy.tif", f / f"{t}_s2_cloudfree.tif") for f, t in chosen]
    exe = str(Path(sys.executable).parent / "mmcanet")
    out = []
    for i, clear in enumerate(sorted(PAIRS.glob("*_s2.tif"))):
        tid = clear.name[: -len("_s2.tif")]
        cloudy = tmp / f"{tid}_simulated.tif"
        subprocess.run([exe, "simulate", "--input", str(clear), "--output", str(cloudy), "--seed", str(i),
                        "--thickness", "mixed", "--coverage", "0.5"], check=True, capture_output=True)
        out.append((tid, clear.with_name(f"{tid}_s1.tif"), cloudy, clear))
    return out
KEYS = ("psnr", "ssim", "mae", "sam", "struct")


def _row(name: str, image: str, m: dict[str, float]) -> str:
    s = "n/a" if math.isnan(m["struct"]) else f"{m['struct']:.3f}"
    return f"| {image} | {name} | {m['psnr']:.2f} | {m['ssim']:.3f} | {m['mae']:.4f} | {m['sam']:.2f} | {s} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", help="model file (repeat to compare); default: the bundled model")
    ap.add_argument("--label", action="append", help="name per --model in the table (default: file name)")
    ap.add_argument("--args", action="append", dest="model_args",
                    help="extra `mmcanet restore` arguments per --model, in order (e.g. '--harmonise 0'); "
                    "give one per --model or none")
    ap.add_argument("--no-keep-clear", action="store_true", help="restore every pixel (default: keep clear ones)")
    ap.add_argument("--clear-weight", type=float, help="passed to mmcanet restore (default: its default)")
    ap.add_argument("--images", choices=("validation", "trained", "simulated", "l2a", "overcast"), default="validation",
                    help="validation: the 5 held-out real triplets (default); trained: the 5 real triplets the "
                    "bundled model was trained on; simulated: simulated clouds over 6 unseen S1+S2 pairs; l2a: simulated "
                    "clouds over the 6 BigEarthNet Level-2A pairs; overcast: real fully clouded S2 dates over the validation "
                    "triplets' SAR")
    args = ap.parse_args()
    models = args.model or [str(default_model_path())]
    labels = args.label or [Path(m).name for m in models]
    if len(labels) != len(models):
        sys.exit("give one --label per --model")
    per_model = [shlex.split(a) for a in args.model_args] if args.model_args else [[] for _ in models]
    if len(per_model) != len(models):
        sys.exit("give one --args per --model (or none)")
    needed = [f / f"{t}_s1.tif" for f, t in IMAGES + TRAINED] + [PAIRS]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        sys.exit(f"validation images not found (the shared data is needed): {missing[:2]}")
    norm = Normalization()
    read = lambda p: norm.s2_to_unit(gdal.Open(str(p)).ReadAsArray())  # noqa: E731
    flag = "--no-keep-clear" if args.no_keep_clear else "--keep-clear"
    extra = [] if args.clear_weight is None else ["--clear-weight", str(args.clear_weight)]
    flag_text = " ".join([flag, *extra])
    exe = str(Path(sys.executable).parent / "mmcanet")
    print(f"Through `mmcanet restore {flag_text}`; struct = band-pass correlation under detected cloud.\n")
    print("| image | model | PSNR dB | SSIM | MAE | SAM deg | struct |")
    print("|---|---|---|---|---|---|---|")
    scores: dict[str, list[dict[str, float]]] = {lab: [] for lab in ["input (cloudy)", *labels]}
    with tempfile.TemporaryDirectory() as tmp:
        for tid, s1_path, cloudy_path, clear_path in _image_set(args.images, Path(tmp)):
            cloudy, ref = read(cloudy_path), read(clear_path)
            cloud = detect_clouds(cloudy).cloud
            results = {"input (cloudy)": cloudy}
            for model, lab, margs in zip(models, labels, per_model, strict=True):
                out = Path(tmp) / f"{tid}_{len(results)}.tif"
                subprocess.run([exe, "restore", "--sar", str(s1_path), "--optical", str(cloudy_path),
                                "--output", str(out), "--model", model, flag, *extra, *margs],
                               check=True, capture_output=True)
                results[lab] = read(out)
            for lab, pred in results.items():
                m = compute_metrics(pred, ref)
                m["struct"] = structure_correlation(pred, ref, cloud)
                scores[lab].append(m)
                print(_row(lab, tid, m), flush=True)
    for lab, rows in scores.items():
        mean = {k: float(np.nanmean([r[k] for r in rows])) for k in KEYS}
        print(_row(f"**{lab}**", f"**mean of {len(rows)}**", mean))


if __name__ == "__main__":
    main()
