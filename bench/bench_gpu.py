"""Time a full Sentinel-2 tile (10980 x 10980 px) on a GPU: fp32 vs bf16/fp16, batch sizes, GPU busy, peak memory.

Two modes:

* ``scene`` (needs GDAL): writes a synthetic scene of ``--size`` px (13-band uint16 S2 with smooth
  fields and bright cloud blobs, 2-band dB S1; tiled DEFLATE GeoTIFFs with a UTM CRS) once into
  ``--work``, then runs the real engine (``restore_scene_with_model``: reading, warping, detection,
  model, blending, writing) for every precision x batch size. Reports wall time, the engine's
  per-phase timings, the mean absolute output difference to the fp32 run (DN), GPU busy fraction
  and peak GPU memory.
* ``model`` (no GDAL; for a GPU machine without it): the engine's device-side work alone through the
  engine's own :class:`~mmcanet.inference.batches.BatchRunner` (uint16 DN -> model units, pinned upload,
  autocast forward, download), for as many tiles as a ``--size`` scene has, on random DN.

GPU busy fraction: ``nvidia-smi --query-gpu=utilization.gpu`` sampled every 0.2 s during each run
(the share of time a kernel was running), when nvidia-smi exists. Peak GPU memory:
``torch.cuda.max_memory_allocated``. Peak host memory: ``ru_maxrss`` of the process.

Examples (CPU check, a few minutes on a 2-core machine):
  .venv/bin/python bench/bench_gpu.py --size 1024 --device cpu --precisions fp32 --batch-sizes 4
On a GPU (full tile):
  python bench/bench_gpu.py --size 10980 --device cuda --precisions fp32,bf16,fp16 --batch-sizes 4,16,32
  python bench/bench_gpu.py --mode model --size 10980 --device cuda --precisions fp32,bf16 --batch-sizes 8,32
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "core"))


class GpuBusy:
    """Samples ``nvidia-smi`` GPU utilisation in a thread; ``fraction`` is the mean (None without nvidia-smi)."""

    def __init__(self, index: int, period: float = 0.2) -> None:
        self.index, self.period = index, period
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuBusy:
        if shutil.which("nvidia-smi"):
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        cmd = ["nvidia-smi", f"--id={self.index}", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
               f"--loop-ms={int(self.period * 1000)}"]
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                with contextlib.suppress(ValueError):
                    self.samples.append(float(line.strip()) / 100.0)
                if self._stop.is_set():
                    proc.terminate()
                    break

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def fraction(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


@contextlib.contextmanager
def gpu_peak(device: Any) -> Iterator[dict[str, float]]:
    """Yields a dict that receives ``peak_gpu_mb`` (max allocated during the block) on CUDA."""
    import torch

    out: dict[str, float] = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    yield out
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20


def write_scene(size: int, work: Path, seed: int = 0) -> tuple[Path, Path]:
    """Synthetic S1 + S2 GeoTIFFs of ``size`` x ``size`` px (cached in ``work``), written in row blocks."""
    from osgeo import gdal, osr

    work.mkdir(parents=True, exist_ok=True)
    s2_path, s1_path = work / f"s2_{size}.tif", work / f"s1_{size}.tif"
    if s2_path.exists() and s1_path.exists():
        return s1_path, s2_path
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32631)
    gt = (600000.0, 10.0, 0.0, 5000000.0, 0.0, -10.0)
    opts = ["TILED=YES", "COMPRESS=DEFLATE", "PREDICTOR=2", "BIGTIFF=IF_SAFER"]
    drv = gdal.GetDriverByName("GTiff")
    names = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"]
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, size, (max(4, size * size // 400_000), 2))
    radius = rng.uniform(20, 200, len(centres))
    tmp = {}
    for path, bands, dtype in ((s2_path, 13, gdal.GDT_UInt16), (s1_path, 2, gdal.GDT_Float32)):
        tmp[path] = path.with_suffix(".tmp.tif")
        ds = drv.Create(str(tmp[path]), size, size, bands, dtype, opts if bands == 13 else
                        [o.replace("PREDICTOR=2", "PREDICTOR=3") for o in opts])
        ds.SetGeoTransform(gt)
        ds.SetProjection(srs.ExportToWkt())
        for b in range(bands):
            ds.GetRasterBand(b + 1).SetDescription(names[b] if bands == 13 else ("VV", "VH")[b])
        if bands == 13:
            ds.GetRasterBand(1).SetNoDataValue(0)
        step = 512
        x = np.arange(size, dtype=np.float32)
        for r0 in range(0, size, step):
            y = np.arange(r0, min(size, r0 + step), dtype=np.float32)[:, None]
            field = np.sin(x[None, :] / 97.0) * np.cos(y / 131.0)
            if bands == 13:
                cloud = np.zeros((len(y), size), np.float32)
                for (cy, cx), rad in zip(centres, radius, strict=True):
                    if abs(cy - (r0 + step / 2)) < rad + step:
                        cloud = np.maximum(cloud, np.clip(1 - np.hypot(y - cy, x[None, :] - cx) / rad, 0, 1))
                for b in range(13):
                    dn = 800 + 400 * b / 13 + 600 * field + 7000 * cloud
                    ds.GetRasterBand(b + 1).WriteArray(np.clip(dn, 1, 10000).astype(np.uint16), 0, r0)
            else:
                for b in range(2):
                    ds.GetRasterBand(b + 1).WriteArray((-12 - 6 * b + 3 * field).astype(np.float32), 0, r0)
        ds = None
    for path, t in tmp.items():
        os.replace(t, path)
    return s1_path, s2_path


def _read(path: Path) -> np.ndarray:
    from osgeo import gdal

    return gdal.Open(str(path)).ReadAsArray()


def run_scene(args: argparse.Namespace, model: Any, card: Any, device: Any) -> list[dict[str, Any]]:
    from mmcanet.inference import RestoreOptions, restore_scene_with_model

    s1, s2 = write_scene(args.size, Path(args.work))
    rows = []
    reference: dict[int, Path] = {}
    for batch in args.batch_sizes:
        for precision in args.precisions:
            out = Path(args.work) / f"out_{args.size}_{precision}_b{batch}.tif"
            opts = RestoreOptions(sar=s1, optical=s2, output=out, batch_size=batch, precision=precision,
                                  tile_size=args.tile_size, overlap=args.overlap)
            with GpuBusy(device.index or 0) as busy, gpu_peak(device) as peak:
                res = restore_scene_with_model(model, card, opts, device=device)
            row: dict[str, Any] = {"mode": "scene", "precision": precision, "batch": batch, "wall_s": round(res.seconds, 2),
                                   "tiles": res.tiles, "tiles_run": res.tiles_run,
                                   "timings_s": {k: round(v, 2) for k, v in res.timings.items()},
                                   "gpu_busy": busy.fraction, **peak}
            if precision == "fp32":
                reference[batch] = out
            elif batch in reference:
                diff = np.abs(_read(out).astype(np.int32) - _read(reference[batch]).astype(np.int32))
                row["mean_abs_diff_dn_vs_fp32"] = float(diff.mean())
                row["max_abs_diff_dn_vs_fp32"] = int(diff.max())
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def run_model(args: argparse.Namespace, model: Any, card: Any, device: Any) -> list[dict[str, Any]]:
    """The engine's device-side work for every tile of a ``size`` scene (no GDAL)."""
    import torch
    from mmcanet.devices import resolve_precision
    from mmcanet.inference.batches import BatchRunner
    from mmcanet.inference.tuning import EngineTuning
    from mmcanet.reporting import Reporter

    tile = args.tile_size or card.tile_size
    overlap = card.overlap if args.overlap is None else args.overlap
    per_axis = 1 if args.size <= tile else math.ceil((args.size - overlap) / (tile - overlap))
    n_tiles = per_axis * per_axis
    rng = np.random.default_rng(0)
    dn = rng.integers(1, 10000, (len(card.s2_bands), tile, tile), dtype=np.uint16)
    db = rng.uniform(-25, 0, (2, tile, tile)).astype(np.float32)
    rows = []
    for batch in args.batch_sizes:
        for precision in args.precisions:
            runner = BatchRunner(model, card, device, list(range(len(card.s2_bands))), (tile, tile), batch,
                                 Reporter(lambda m: None), EngineTuning())
            dtype = resolve_precision(precision, device)
            runner.autocast_dtype = None if dtype == torch.float32 else dtype
            runner.ensure_slots(batch)
            done = 0
            with GpuBusy(device.index or 0) as busy, gpu_peak(device) as peak:
                t0 = time.perf_counter()
                while done < n_tiles:
                    n = min(runner.batch_size, n_tiles - done)
                    for k in range(n):
                        runner.fill_slot(k, dn, db)
                    runner.run(n, list(range(n)), [None] * n)
                    done += n
                wall = time.perf_counter() - t0
            row = {"mode": "model", "precision": precision, "batch": batch, "tiles": n_tiles, "wall_s": round(wall, 2),
                   "forward_s": round(runner.seconds, 2), "tiles_per_s": round(n_tiles / wall, 1),
                   "gpu_busy": busy.fraction, **peak}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=["scene", "model"], default="scene")
    p.add_argument("--size", type=int, default=10980, help="scene edge in px (default: a full S2 tile)")
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    p.add_argument("--precisions", default="fp32,bf16", help="comma list of fp32, bf16, fp16")
    p.add_argument("--batch-sizes", default="4,16", help="comma list")
    p.add_argument("--model", help="model file (default: the bundled model)")
    p.add_argument("--tile-size", type=int)
    p.add_argument("--overlap", type=int)
    p.add_argument("--work", default=str(REPO / "bench" / ".gpu-work"), help="scene and outputs folder")
    p.add_argument("--json", help="also write every row to this JSON file")
    args = p.parse_args(argv)
    args.precisions = [x.strip() for x in args.precisions.split(",") if x.strip()]
    args.batch_sizes = [int(x) for x in args.batch_sizes.split(",") if x.strip()]
    if "fp32" in args.precisions:  # the reference of the output differences runs first
        args.precisions.remove("fp32")
        args.precisions.insert(0, "fp32")

    import torch
    from mmcanet.devices import configure_threads, resolve_device
    from mmcanet.modelfile import load_model

    device = resolve_device(args.device, print)
    configure_threads(device)
    model, card = load_model(args.model, device)
    print(f"# machine: {platform.node()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; torch {torch.__version__}"
          f"{'; ' + torch.cuda.get_device_name(device) if device.type == 'cuda' else ''}; model {card.name} "
          f"v{card.version}; {args.size}x{args.size} px; mode {args.mode}", flush=True)
    rows = (run_scene if args.mode == "scene" else run_model)(args, model, card, device)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"# peak host RSS {peak_rss:.0f} MB", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": {k: v for k, v in vars(args).items()}, "rows": rows,
                                               "peak_rss_mb": peak_rss}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
