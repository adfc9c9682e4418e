"""Score a model on the held-out real triplets through `mmcanet restore`, as users run it.

Run: .venv/bin/python bench/heldout_through_engine.py [MODEL] (default: the bundled model)
For each held-out triplet of configs/bundled.toml (4438, 5349, 6317 in ../shared/data) prints the
identity baseline, the raw network output, and the engine's output with and without --keep-clear.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from mmcanet.metrics import compute_metrics
from mmcanet.modelfile import default_model_path, load_model
from mmcanet.normalization import Normalization
from osgeo import gdal

ROOT = Path(__file__).resolve().parents[1]
TRIPLETS = ROOT.parent / "shared" / "data" / "sen12mscr-triplets"
HELD_OUT = ("4438", "5349", "6317")


def _fmt(m: dict[str, float]) -> str:
    return f"PSNR {m['psnr']:.2f}  SSIM {m['ssim']:.3f}  MAE {m['mae']:.4f}  SAM {m['sam']:.2f}"


def main() -> None:
    model_path = sys.argv[1] if len(sys.argv) > 1 else str(default_model_path())
    if not TRIPLETS.is_dir():
        sys.exit(f"{TRIPLETS} not found (the shared data is needed)")
    norm = Normalization()
    model, _ = load_model(model_path)
    read = lambda p: norm.s2_to_unit(gdal.Open(str(p)).ReadAsArray())  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        for tid in HELD_OUT:
            s1p, s2p = TRIPLETS / f"{tid}_s1.tif", TRIPLETS / f"{tid}_s2_cloudy.tif"
            cloudy, target = read(s2p), read(TRIPLETS / f"{tid}_s2_cloudfree.tif")
            s1 = norm.s1_to_unit(gdal.Open(str(s1p)).ReadAsArray())
            with torch.no_grad():
                raw = model(torch.from_numpy(cloudy)[None], torch.from_numpy(s1)[None]).clamp(0, 1)[0].numpy()
            print(f"{tid} identity          {_fmt(compute_metrics(cloudy, target))}")
            print(f"{tid} network output    {_fmt(compute_metrics(raw, target))}")
            for flag in ("--keep-clear", "--no-keep-clear"):
                out = Path(tmp) / f"{tid}{flag}.tif"
                subprocess.run([str(ROOT / ".venv" / "bin" / "mmcanet"), "restore", "--sar", str(s1p), "--optical",
                                str(s2p), "--output", str(out), "--model", model_path, flag],
                               check=True, capture_output=True)
                print(f"{tid} restore {flag:16s}{_fmt(compute_metrics(read(out), target))}")
    np.set_printoptions()


if __name__ == "__main__":
    main()
