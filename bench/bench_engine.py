"""Benchmark the full-scene engine: peak memory vs scene size, throughput, overhead over the model.

Scenes are mosaics of real 256 x 256 SEN12MS-CR patches from ../shared/data (cloudy S2 patches cycled
over the grid; S1 patches on a grid shifted by a fraction of a pixel, so the SAR is really warped onto
the optical grid). They are built as VRTs and, by default, written once to tiled DEFLATE GeoTIFFs in
``--cache`` (like real inputs: every block is decompressed when read). Each scene size runs in its own
subprocess, so the peak RSS (``ru_maxrss``) is that of one restoration.

Measured per size, in the same run:
  * wall time of ``restore_scene`` and throughput (Mpx/s of scene);
  * ``model``: time inside the model forward (same tiles, same batches) as timed by the engine;
  * ``pure``: a separate loop of forwards on random tiles of the same shape, scaled to the tile count;
  * overhead = (wall - model) / model (everything that is not the forward: reading, warping,
    detection, blending, compositing, compression, writing);
  * I/O + alignment + blending = (wall - model - detect) / model: the same without the rule-based
    cloud detector (an inference step of its own, skipped when a cloud mask is given).

Examples:
  .venv/bin/python bench/bench_engine.py --sizes 512,2048,8192
  .venv/bin/python bench/bench_engine.py --sizes 10980 --keep-clear
  .venv/bin/python bench/bench_engine.py --sizes 512,2048 --model resources/mmcanet_default.safetensors
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
PATCH = 256
UTM31N_WKT_EPSG = 32631


def _patches() -> tuple[list[Path], list[Path]]:
    s2 = sorted((SHARED / "s2-cloudy-clear-pairs").glob("*_s2_cloudy.tif"))
    s2 += [SHARED / "sen12mscr-georef" / "ROIs1868_summer_19_p30_s2_cloudy.tif"]
    s1 = sorted((SHARED / "sen12mscr-georef").glob("*_s1.tif")) + sorted((SHARED / "sen12mscr-triplets").glob("*_s1.tif"))
    s2 = [p for p in s2 if p.is_file()]
    s1 = [p for p in s1 if p.is_file()]
    if not s2 or not s1:
        sys.exit(f"bench_engine: real patches not found under {SHARED} (../shared/data from the repo root)")
    return s1, s2


def _mosaic_vrt(path: Path, sources: list[Path], size: int, bands: int, dtype: str, origin: tuple[float, float],
                descriptions: list[str], nodata: str | None) -> Path:
    """A VRT of ``size x size`` px tiling the 256 x 256 ``sources`` in a cycle (UTM 31N, 10 m)."""
    from osgeo import osr

    srs = osr.SpatialReference()
    srs.ImportFromEPSG(UTM31N_WKT_EPSG)
    n = -(-size // PATCH)
    cells = [(i, j) for i in range(n) for j in range(n)]
    lines = [f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}">',
             f"  <SRS>{srs.ExportToWkt().replace('&', '&amp;').replace('<', '&lt;')}</SRS>",
             f"  <GeoTransform>{origin[0]}, 10.0, 0.0, {origin[1]}, 0.0, -10.0</GeoTransform>"]
    for b in range(1, bands + 1):
        lines.append(f'  <VRTRasterBand dataType="{dtype}" band="{b}">')
        lines.append(f"    <Description>{descriptions[b - 1]}</Description>")
        if nodata is not None:
            lines.append(f"    <NoDataValue>{nodata}</NoDataValue>")
        for k, (i, j) in enumerate(cells):
            src = sources[(k * 7 + i) % len(sources)]
            w, h = min(PATCH, size - j * PATCH), min(PATCH, size - i * PATCH)
            lines.append(
                f'    <SimpleSource><SourceFilename relativeToVRT="0">{src}</SourceFilename>'
                f"<SourceBand>{b}</SourceBand>"
                f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
                f'<DstRect xOff="{j * PATCH}" yOff="{i * PATCH}" xSize="{w}" ySize="{h}"/></SimpleSource>'
            )
        lines.append("  </VRTRasterBand>")
    lines.append("</VRTDataset>")
    path.write_text("\n".join(lines))
    return path


def build_scene(size: int, cache: Path, materialize: bool) -> tuple[Path, Path]:
    """S1 and S2 scene files of ``size x size`` px (cached)."""
    from osgeo import gdal

    s1_src, s2_src = _patches()
    cache.mkdir(parents=True, exist_ok=True)
    s2_names = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"]
    origin = (600000.0, 5000000.0)
    s2_vrt = _mosaic_vrt(cache / f"s2_{size}.vrt", s2_src, size, 13, "UInt16", origin, s2_names, "0")
    # SAR: a grid shifted by (-3.7 m, +6.1 m) and one patch larger, so it covers the optical and is warped
    s1_vrt = _mosaic_vrt(cache / f"s1_{size}.vrt", s1_src, size + PATCH, 2, "Float32",
                         (origin[0] - 3.7, origin[1] + 6.1), ["VV_dB", "VH_dB"], None)
    if not materialize:
        return s1_vrt, s2_vrt
    out = []
    for vrt in (s1_vrt, s2_vrt):
        tif = vrt.with_suffix(".tif")
        if not tif.exists():
            t0 = time.perf_counter()
            pred = "3" if vrt.name.startswith("s1") else "2"
            opts = gdal.TranslateOptions(creationOptions=["TILED=YES", "COMPRESS=DEFLATE", f"PREDICTOR={pred}",
                                                          "BIGTIFF=IF_SAFER", "NUM_THREADS=2"])
            tmp = tif.with_suffix(".tmp.tif")
            gdal.Translate(str(tmp), str(vrt), options=opts)
            os.replace(tmp, tif)
            print(f"# built {tif} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        out.append(tif)
    return out[0], out[1]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _current_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def child(args: argparse.Namespace) -> None:
    """Restore one scene and print one JSON line of measurements."""
    import torch
    from mmcanet.gdal_calls import limit_gdal_cache
    from mmcanet.inference import RestoreOptions, restore_scene
    from mmcanet.modelfile import ModelCard, build_from_card, default_model_path, load_model

    limit_gdal_cache(args.gdal_cache_mb)
    if args.threads:
        torch.set_num_threads(args.threads)
    model_path = Path(args.model) if args.model else default_model_path()
    if model_path.is_file() and not args.random:
        model, card = load_model(model_path, "cpu")
        model_desc = f"{model_path.name} ({card.name} v{card.version})"
    else:
        torch.manual_seed(0)
        card = ModelCard(name="mmcanet-random")
        model = build_from_card(card).eval()
        model_desc = "default configuration, random weights (no bundled model)"
    rss_model = _current_rss_mb()
    out = Path(args.out_dir) / f"restored_{args.size}.tif"
    opts = RestoreOptions(sar=args.sar, optical=args.optical, output=out, keep_clear=args.keep_clear,
                          tile_size=args.tile_size, overlap=args.overlap, batch_size=args.batch_size, device="cpu",
                          threads=args.threads or None)
    t0 = time.perf_counter()
    res = restore_scene(opts, model=(model, card), log=lambda m: print(f"# {m}", file=sys.stderr))
    wall = time.perf_counter() - t0
    peak = _rss_mb()
    # pure forward on random tiles: same tile shape and the same batch composition as the engine
    # (batches never span tile rows: each row is split into full batches + one remainder batch)
    from mmcanet.inference import EngineTuning
    from mmcanet.inference.tiling import plan_tiles

    plan = plan_tiles(res.width, res.height, res.tile_size, res.overlap)
    th, tw = plan.tile_height, plan.tile_width
    cols, rows = len(plan.col_offsets), len(plan.row_offsets)
    per_row = [args.batch_size] * (cols // args.batch_size) + ([cols % args.batch_size] if cols % args.batch_size else [])
    pure = 0.0
    with torch.inference_mode():
        for b in sorted(set(per_row)):
            x2, x1 = torch.rand(b, 13, th, tw), torch.rand(b, 2, th, tw)
            if EngineTuning().channels_last_on_cpu:  # the layout the engine gives the model on the CPU
                x2, x1 = (x.contiguous(memory_format=torch.channels_last) for x in (x2, x1))
            model(x2, x1)  # warm-up
            reps = max(1, args.pure_batches // len(set(per_row)))
            t1 = time.perf_counter()
            for _ in range(reps):
                model(x2, x1)
            pure += (time.perf_counter() - t1) / reps * per_row.count(b) * rows
    pure *= res.tiles_run / res.tiles  # tiles skipped by keep_clear cost nothing in either
    mpx = res.width * res.height / 1e6
    print(json.dumps({
        "size": args.size, "mpx": mpx, "tiles": res.tiles, "tiles_run": res.tiles_run, "wall_s": wall,
        "mpx_per_s": mpx / wall, "model_s": res.timings["model"], "pure_s": pure,
        "overhead_vs_model": (wall - res.timings["model"]) / res.timings["model"],
        "overhead_vs_pure": (wall - pure) / pure,
        "io_overhead_vs_model": (wall - res.timings["model"] - res.timings["detect"]) / res.timings["model"],
        "timings": res.timings, "peak_rss_mb": peak,
        "rss_after_model_load_mb": rss_model, "model": model_desc, "threads": torch.get_num_threads(),
        "sar_warped": res.sar_warped, "cloud_fraction": res.cloud_fraction,
    }))
    if not args.keep_output:
        out.unlink(missing_ok=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="512,2048,8192", help="scene edges in px, comma separated (10980 = a full S2 tile)")
    p.add_argument("--model", help="model file (default: the bundled model, else random weights)")
    p.add_argument("--random", action="store_true", help="force the default configuration with random weights")
    p.add_argument("--tile-size", type=int, default=None)
    p.add_argument("--overlap", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: engine default)")
    p.add_argument("--keep-clear", action="store_true", help="keep clear pixels (skips clear tiles); default: every tile runs")
    p.add_argument("--vrt", action="store_true", help="read the VRT mosaics directly instead of materialised GeoTIFFs")
    p.add_argument("--gdal-cache-mb", type=int, default=256)
    p.add_argument("--pure-batches", type=int, default=8, help="batches timed for the pure-forward estimate")
    p.add_argument("--cache", default="/tmp/mmcanet-bench", help="where scenes and outputs are written")
    p.add_argument("--keep-output", action="store_true")
    p.add_argument("--json", help="also write the results here")
    # child mode
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--sar", help=argparse.SUPPRESS)
    p.add_argument("--optical", help=argparse.SUPPRESS)
    p.add_argument("--out-dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return

    cache = Path(args.cache)
    results = []
    for size in [int(s) for s in args.sizes.split(",") if s.strip()]:
        sar, optical = build_scene(size, cache, materialize=not args.vrt)
        cmd = [sys.executable, __file__, "--child", "--size", str(size), "--sar", str(sar), "--optical", str(optical),
               "--out-dir", str(cache), "--batch-size", str(args.batch_size), "--gdal-cache-mb", str(args.gdal_cache_mb),
               "--pure-batches", str(args.pure_batches), "--threads", str(args.threads)]
        cmd += ["--model", args.model] if args.model else []
        cmd += ["--random"] if args.random else []
        cmd += ["--keep-clear"] if args.keep_clear else []
        cmd += ["--keep-output"] if args.keep_output else []
        cmd += ["--tile-size", str(args.tile_size)] if args.tile_size else []
        cmd += ["--overlap", str(args.overlap)] if args.overlap is not None else []
        proc = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(r)
        print(json.dumps(r), file=sys.stderr)

    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; python {platform.python_version()}")
    print(f"model: {results[0]['model']}; torch threads {results[0]['threads']}; inputs: "
          f"{'VRT mosaics' if args.vrt else 'tiled DEFLATE GeoTIFFs'}; keep_clear={args.keep_clear}\n")
    print("| scene | tiles | wall s | Mpx/s | model s | pure s | overhead vs model | vs pure | "
          "I/O + alignment + blending vs model | peak RSS MB | read | detect | blend | write |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        t = r["timings"]
        print(f"| {r['size']}^2 | {r['tiles_run']}/{r['tiles']} | {r['wall_s']:.1f} | {r['mpx_per_s']:.3f} | "
              f"{r['model_s']:.1f} | {r['pure_s']:.1f} | {100 * r['overhead_vs_model']:.1f}% | "
              f"{100 * r['overhead_vs_pure']:.1f}% | {100 * r['io_overhead_vs_model']:.1f}% | "
              f"{r['peak_rss_mb']:.0f} | {t['read']:.1f} | {t['detect']:.1f} | "
              f"{t['blend']:.1f} | {t['write']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
