"""Micro-benchmarks behind two I/O choices of the engine (docs/ENGINE.md, "Pipeline and design decisions").

1. SAR warp: a float SAR raster warped onto the optical grid through a warped VRT, read strip by strip,
   (a) declaring NaN as source/destination nodata (GDAL's masked bilinear kernel) versus
   (b) no declared nodata and ``INIT_DEST=NaN`` (what ``alignment.align_to`` does for NaN-only SAR), and
   (c) rasterio's ``WarpedVRT`` with the options of (b) (checked to give the same pixels), the candidate
   for moving the alignment onto rasterio (#12).
2. Output: writing a 13-band uint16 scene block row by block row as DEFLATE (ZLEVEL=1, predictor 2,
   NUM_THREADS=ALL_CPUS) GeoTIFF, pixel-interleaved (GDAL's default) versus band-interleaved.
3. ``--readers``: the training / evaluation readers (``mmcanet.sample_io``, rasterio since #12) against
   the osgeo.gdal reader they replaced (kept below as the reference), on every real sample file in
   ``../shared/data`` (S2, S1, BigEarthNet's 20 / 60 m bands resampled to 10 m); checks the pixels are
   identical, then times both, alternating (no scene needed):

  .venv/bin/python bench/bench_io.py --readers --repeat 5 [--before-core /path/to/old/checkout/core]

   With ``--before-core``, whole samples are timed too (the real triplet, pair and BigEarthNet folders
   through ``mmcanet.datasets``, detector masks included), each core tree in its own subprocess, alternating.

The scenes are the ones ``bench/bench_engine.py`` builds (mosaics of real SEN12MS-CR patches in
``--cache``; run that first, or pass ``--build``). Each variant runs ``--repeat`` times, alternating,
and the best time is reported (the machines are shared and noisy: compare within one run).

  .venv/bin/python bench/bench_io.py --size 8192
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from osgeo import gdal

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _warp_seconds(s1: gdal.Dataset, s2: gdal.Dataset, fast: bool, strip: int = 256) -> float:
    gt, size = s2.GetGeoTransform(), (s2.RasterXSize, s2.RasterYSize)
    box = (gt[0], gt[3] + gt[5] * size[1], gt[0] + gt[1] * size[0], gt[3])
    common = {"format": "VRT", "outputBounds": box, "width": size[0], "height": size[1],
              "dstSRS": s2.GetProjection(), "resampleAlg": "bilinear", "outputType": gdal.GDT_Float32}
    if fast:
        opts = gdal.WarpOptions(**common, warpOptions=["INIT_DEST=NaN"])
    else:
        opts = gdal.WarpOptions(**common, srcNodata=math.nan, dstNodata=math.nan)
    vrt = gdal.Warp("", s1, options=opts)
    t0 = time.perf_counter()
    for row in range(0, size[1], strip):
        vrt.ReadAsArray(0, row, size[0], min(strip, size[1] - row))
    return time.perf_counter() - t0


def _read_strips(read: Callable[[int, int], np.ndarray], height: int, strip: int = 256) -> np.ndarray:
    return np.concatenate([read(row, min(strip, height - row)) for row in range(0, height, strip)], axis=1)


def _warp_pixels(s1_path: Path, s2: gdal.Dataset, use_rasterio: bool) -> tuple[float, np.ndarray]:
    """Variant (b) through osgeo.gdal or (c) through rasterio's WarpedVRT: seconds to read all strips, pixels."""
    gt, w, h = s2.GetGeoTransform(), s2.RasterXSize, s2.RasterYSize
    if not use_rasterio:
        s1 = gdal.OpenEx(str(s1_path), gdal.OF_RASTER, open_options=["NUM_THREADS=ALL_CPUS"])
        box = (gt[0], gt[3] + gt[5] * h, gt[0] + gt[1] * w, gt[3])
        opts = gdal.WarpOptions(format="VRT", outputBounds=box, width=w, height=h, dstSRS=s2.GetProjection(),
                                resampleAlg="bilinear", outputType=gdal.GDT_Float32, warpOptions=["INIT_DEST=NaN"])
        vrt = gdal.Warp("", s1, options=opts)
        t0 = time.perf_counter()
        pixels = _read_strips(lambda r, n: vrt.ReadAsArray(0, r, w, n), h)
        return time.perf_counter() - t0, pixels
    from affine import Affine
    from mmcanet.rasterio_support import import_rasterio

    rasterio = import_rasterio()
    from rasterio.vrt import WarpedVRT

    with rasterio.open(str(s1_path), NUM_THREADS="ALL_CPUS") as src, WarpedVRT(
            src, crs=s2.GetProjection(), transform=Affine.from_gdal(*gt), width=w, height=h,
            resampling=rasterio.enums.Resampling.bilinear, dtype="float32", init_dest_nodata=False,
            warp_extras={"INIT_DEST": "NaN"}) as vrt:
        t0 = time.perf_counter()
        pixels = _read_strips(lambda r, n: vrt.read(window=rasterio.windows.Window(0, r, w, n)), h)
        return time.perf_counter() - t0, pixels


def _write_seconds(src: gdal.Dataset, path: Path, interleave: str, rows: int = 256) -> tuple[float, int]:
    w, h, n = src.RasterXSize, src.RasterYSize, src.RasterCount
    opts = ["TILED=YES", "COMPRESS=DEFLATE", "PREDICTOR=2", "ZLEVEL=1", "NUM_THREADS=ALL_CPUS", "BIGTIFF=IF_SAFER",
            f"INTERLEAVE={interleave}"]
    block_rows = [src.ReadAsArray(0, r, w, min(rows, h - r)) for r in range(0, min(h, 4 * rows), rows)]
    t0 = time.perf_counter()
    ds = gdal.GetDriverByName("GTiff").Create(str(path), w, h, n, gdal.GDT_UInt16, opts)
    for k, row in enumerate(range(0, h, rows)):
        data = block_rows[k % len(block_rows)][:, : min(rows, h - row)]
        for b in range(n):
            ds.GetRasterBand(b + 1).WriteArray(data[b], 0, row)
        ds.FlushCache()
    ds = None
    elapsed = time.perf_counter() - t0
    size = path.stat().st_size
    path.unlink()
    return elapsed, size


def _gdal_read_bands(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """The osgeo.gdal sample reader before #12 (band by band, bilinear buffer resampling), for reference."""
    ds = gdal.Open(str(path))
    out = []
    for i in range(ds.RasterCount):
        band = ds.GetRasterBand(i + 1)
        a = band.ReadAsArray() if size is None else band.ReadAsArray(
            buf_xsize=size[1], buf_ysize=size[0], resample_alg=gdal.GRIORA_Bilinear)
        a = a.astype(np.float32)
        bad = ~np.isfinite(a)
        nd = band.GetNoDataValue()
        if nd is not None and np.isfinite(nd):
            bad |= a == np.float32(nd)
        a[bad] = np.nan
        out.append(a)
    return np.stack(out)


def _reader_jobs(data: Path) -> list[tuple[Path, tuple[int, int] | None]]:
    jobs: list[tuple[Path, tuple[int, int] | None]] = [(p, None) for p in sorted(data.glob("*/*.tif"))]
    for b02 in sorted(data.glob("bigearthnet-s1s2/**/*_B02.tif")):
        ref = gdal.Open(str(b02))
        size = (ref.RasterYSize, ref.RasterXSize)
        jobs += [(p, size) for p in sorted(b02.parent.glob("*.tif"))]
    return jobs


_SAMPLES_SCRIPT = """
import sys, time
from mmcanet.datasets import BigEarthNetPairs, ClearS1S2Pairs, TripletFolder
data = sys.argv[1]
readers = [TripletFolder(data + "/sen12mscr-triplets"), ClearS1S2Pairs(data + "/s1s2-pairs"),
           BigEarthNetPairs(data + "/bigearthnet-s1s2")]
n = sum(len(r) for r in readers)
t0 = time.perf_counter()
for r in readers:
    for i in range(len(r)):
        r[i]
print(time.perf_counter() - t0, n)
"""


def _samples_seconds(core: Path, data: Path) -> tuple[float, int]:
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(core)}
    out = subprocess.run([sys.executable, "-c", _SAMPLES_SCRIPT, str(data)], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    return float(out[0]), int(out[1])


def bench_readers(data: Path, repeat: int, before_core: Path | None = None) -> None:
    """Section 3: the sample readers, rasterio (mmcanet.sample_io) vs the previous osgeo.gdal code."""
    from mmcanet.sample_io import _read_bands

    jobs = _reader_jobs(data)
    if not jobs:
        sys.exit(f"bench_io --readers: no rasters under {data}")
    for path, size in jobs:  # same pixels first (NaN where invalid in both)
        np.testing.assert_array_equal(_read_bands(path, size)[0], _gdal_read_bands(path, size), err_msg=str(path))
    times: dict[str, list[float]] = {"osgeo.gdal (before)": [], "rasterio (mmcanet.sample_io)": []}
    for _ in range(repeat):
        for name, fn in (("osgeo.gdal (before)", _gdal_read_bands), ("rasterio (mmcanet.sample_io)", _read_bands)):
            t0 = time.perf_counter()
            for path, size in jobs:
                fn(path, size)
            times[name].append(time.perf_counter() - t0)
    before, after = min(times["osgeo.gdal (before)"]), min(times["rasterio (mmcanet.sample_io)"])
    print(f"machine: {os.uname().nodename}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; "
          f"GDAL {gdal.__version__}; {len(jobs)} real sample files from {data}; best of {repeat}; pixels identical\n")
    print("| sample reader | s |\n|---|---|")
    for k, v in times.items():
        print(f"| {k} | {min(v):.3f} |")
    print(f"\nrasterio / gdal time ratio: {after / before:.2f}")
    if before_core is None:
        return
    here = Path(__file__).resolve().parents[1] / "core"
    samples: dict[str, list[float]] = {f"before ({before_core})": [], f"after ({here})": []}
    n = 0
    for _ in range(repeat):
        for name, core in zip(samples, (before_core, here), strict=True):
            t, n = _samples_seconds(core, data)
            samples[name].append(t)
    print(f"\n| whole samples ({n}: triplets, s1s2 pairs, BigEarthNet) | s |\n|---|---|")
    for k, v in samples.items():
        print(f"| {k} | {min(v):.3f} |")
    b, a = (min(v) for v in samples.values())
    print(f"\nafter / before time ratio: {a / b:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=8192, help="scene edge (px) of bench_engine's cached scenes")
    p.add_argument("--cache", default="/tmp/mmcanet-bench")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--build", action="store_true", help="build the scenes first (as bench_engine.py does)")
    p.add_argument("--readers", action="store_true", help="only section 3: the sample readers on real data")
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--before-core", type=Path, help="with --readers: a core/ folder of the code before, for whole samples")
    args = p.parse_args()
    if args.readers:
        bench_readers(Path(args.data), args.repeat, args.before_core)
        return
    cache = Path(args.cache)
    if args.build:
        from bench_engine import build_scene

        build_scene(args.size, cache, materialize=True)
    s1_path, s2_path = cache / f"s1_{args.size}.tif", cache / f"s2_{args.size}.tif"
    if not s1_path.is_file() or not s2_path.is_file():
        sys.exit(f"bench_io: {s1_path} / {s2_path} missing; run bench/bench_engine.py --sizes {args.size} or pass --build")
    gdal.SetCacheMax(256 * 1024 * 1024)
    s1 = gdal.OpenEx(str(s1_path), gdal.OF_RASTER, open_options=["NUM_THREADS=ALL_CPUS"])
    s2 = gdal.Open(str(s2_path))
    warp: dict[str, list[float]] = {"NaN declared as nodata": [], "INIT_DEST=NaN, no nodata": [],
                                    "rasterio WarpedVRT, INIT_DEST=NaN, no nodata": []}
    same = np.array_equal(_warp_pixels(s1_path, s2, False)[1], _warp_pixels(s1_path, s2, True)[1], equal_nan=True)
    write: dict[str, list[float]] = {"PIXEL": [], "BAND": []}
    sizes: dict[str, int] = {}
    for _ in range(args.repeat):
        warp["NaN declared as nodata"].append(_warp_seconds(s1, s2, fast=False))
        warp["INIT_DEST=NaN, no nodata"].append(_warp_seconds(s1, s2, fast=True))
        warp["rasterio WarpedVRT, INIT_DEST=NaN, no nodata"].append(_warp_pixels(s1_path, s2, True)[0])
        for il in write:
            t, size = _write_seconds(s2, cache / f"bench_io_{il}.tif", il)
            write[il].append(t)
            sizes[il] = size
    print(f"machine: {os.uname().nodename}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; "
          f"GDAL {gdal.__version__}; scene {args.size}^2; best of {args.repeat}\n")
    print("| SAR warp (2 bands, bilinear, read in 256-row strips) | s |\n|---|---|")
    for k, v in warp.items():
        print(f"| {k} | {min(v):.2f} |")
    print(f"\nrasterio WarpedVRT gives the same pixels as the gdal.Warp VRT: {same}")
    print("\n| output, 13 x uint16, DEFLATE ZLEVEL=1 + predictor | s | MB |\n|---|---|---|")
    for k, v in write.items():
        print(f"| INTERLEAVE={k} | {min(v):.2f} | {sizes[k] / 1e6:.0f} |")


if __name__ == "__main__":
    main()
