"""Stronger haze correction on clear Level-1C pixels: a second pass, or the first pass's correction amplified.

The network's correction of the pixels the detector calls clear (haze it misses, the other date's look)
may be too timid after training on few images. This compares, through `mmcanet restore --no-keep-clear`:

* ``pass 1``: what the engine writes (the default);
* ``clear 2nd pass``: the engine run again on its own output, taken outside the cloud mask only;
* ``amplified s/k``: pass 1 plus ``k`` times the local mean (Gaussian, sigma ``s`` px, clear pixels only)
  of its correction ``pass 1 - input``, outside the cloud mask.

Run: .venv/bin/python bench/haze_passes.py [--images validation|trained|simulated]
Results and the decision: docs/QUALITY.md section 6.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from mmcanet.metrics import compute_metrics
from mmcanet.normalization import Normalization
from osgeo import gdal
from scipy.ndimage import gaussian_filter

sys.path.insert(0, str(Path(__file__).resolve().parent))
import validate_engine  # noqa: E402

KEYS = ("psnr", "ssim", "mae", "sam")


def amplified(first: np.ndarray, cloudy: np.ndarray, mask: np.ndarray, sigma: float, k: float) -> np.ndarray:
    """``first + k * (local clear-pixel mean of first - cloudy)`` outside ``mask``, clipped to [0, 1]."""
    clear = 1.0 - mask
    den = np.maximum(gaussian_filter(clear, sigma), 1e-3)
    corr = np.stack([gaussian_filter((first[b] - cloudy[b]) * clear, sigma) for b in range(first.shape[0])]) / den
    return np.clip(first + clear * k * corr, 0.0, 1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", choices=("validation", "trained", "simulated"), default="validation")
    args = ap.parse_args()
    norm = Normalization()
    read = lambda p: norm.s2_to_unit(gdal.Open(str(p)).ReadAsArray())  # noqa: E731
    exe = str(Path(sys.executable).parent / "mmcanet")
    scores: dict[str, list[dict[str, float]]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        for tid, s1, cloudy_path, clear_path in validate_engine._image_set(args.images, Path(tmp)):
            one, two, mpath = (Path(tmp) / f"{tid}_{n}.tif" for n in ("1", "2", "mask"))
            base = [exe, "restore", "--sar", str(s1), "--no-keep-clear"]
            subprocess.run([*base, "--optical", str(cloudy_path), "--output", str(one), "--mask-output", str(mpath)],
                           check=True, capture_output=True)
            subprocess.run([*base, "--optical", str(one), "--output", str(two)], check=True, capture_output=True)
            ref, cloudy, first, second = read(clear_path), read(cloudy_path), read(one), read(two)
            mask = (gdal.Open(str(mpath)).ReadAsArray() > 0).astype(np.float32)
            variants = {"pass 1 (default)": first, "clear 2nd pass": mask * first + (1 - mask) * second}
            for sigma in (4.0, 16.0):
                for k in (0.5, 1.0):
                    variants[f"amplified {sigma:g}/{k:g}"] = amplified(first, cloudy, mask, sigma, k)
            for name, img in variants.items():
                m = compute_metrics(img, ref)
                scores[name].append(m)
                print(f"| {tid} | {name} | " + " | ".join(f"{m[q]:.3f}" for q in KEYS) + " |", flush=True)
    print("\n| variant | PSNR dB | SSIM | MAE | SAM deg |\n|---|---|---|---|---|")
    for name, rows in scores.items():
        print(f"| {name} | " + " | ".join(f"{np.mean([r[q] for r in rows]):.3f}" for q in KEYS) + " |")


if __name__ == "__main__":
    main()
