"""Micro-benchmarks behind two I/O choices of the engine (docs/ENGINE.md, "Pipeline and design decisions").

1. SAR warp: a float SAR raster warped onto the optical grid through a warped VRT, read strip by strip,
   (a) declaring NaN as source/destination nodata (GDAL's masked bilinear kernel) versus
   (b) no declared nodata and ``INIT_DEST=NaN`` (what ``alignment.align_to`` does for NaN-only SAR).
2. Output: writing a 13-band uint16 scene block row by block row as DEFLATE (ZLEVEL=1, predictor 2,
   NUM_THREADS=ALL_CPUS) GeoTIFF, pixel-interleaved (GDAL's default) versus band-interleaved.

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
from pathlib import Path

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=8192, help="scene edge (px) of bench_engine's cached scenes")
    p.add_argument("--cache", default="/tmp/mmcanet-bench")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--build", action="store_true", help="build the scenes first (as bench_engine.py does)")
    args = p.parse_args()
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
    warp: dict[str, list[float]] = {"NaN declared as nodata": [], "INIT_DEST=NaN, no nodata": []}
    write: dict[str, list[float]] = {"PIXEL": [], "BAND": []}
    sizes: dict[str, int] = {}
    for _ in range(args.repeat):
        warp["NaN declared as nodata"].append(_warp_seconds(s1, s2, fast=False))
        warp["INIT_DEST=NaN, no nodata"].append(_warp_seconds(s1, s2, fast=True))
        for il in write:
            t, size = _write_seconds(s2, cache / f"bench_io_{il}.tif", il)
            write[il].append(t)
            sizes[il] = size
    print(f"machine: {os.uname().nodename}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; "
          f"GDAL {gdal.__version__}; scene {args.size}^2; best of {args.repeat}\n")
    print("| SAR warp (2 bands, bilinear, read in 256-row strips) | s |\n|---|---|")
    for k, v in warp.items():
        print(f"| {k} | {min(v):.2f} |")
    print("\n| output, 13 x uint16, DEFLATE ZLEVEL=1 + predictor | s | MB |\n|---|---|---|")
    for k, v in write.items():
        print(f"| INTERLEAVE={k} | {min(v):.2f} | {sizes[k] / 1e6:.0f} |")


if __name__ == "__main__":
    main()
