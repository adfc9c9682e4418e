"""`mmcanet simulate --input CLEAR.tif --output CLOUDY.tif`: add simulated clouds to a clear S2 GeoTIFF."""

from __future__ import annotations

import argparse
import logging
from typing import Any

import numpy as np

logger = logging.getLogger("mmcanet.simulate")

MAX_PIXELS = 8192 * 8192
"""Largest image simulated in one piece (the cloud field is drawn for the whole image in memory)."""


def register(sub: Any) -> None:
    """Add the `simulate` subcommand."""
    p = sub.add_parser(
        "simulate",
        help="add simulated clouds (and shadows) to a clear Sentinel-2 GeoTIFF",
        description=(
            "Reads a clear Sentinel-2 GeoTIFF (13-band L1C or 12-band L2A, DN = reflectance x 10000; band "
            "order from the band descriptions when they name the bands) and writes the same grid (CRS, "
            "geotransform, band names) with fractal clouds, optionally the opacity (0-1) as a second file."
        ),
    )
    p.add_argument("--input", required=True, help="clear S2 GeoTIFF")
    p.add_argument("--output", required=True, help="cloudy GeoTIFF to write (same data type as the input)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same clouds)")
    p.add_argument("--thickness", choices=["mixed", "thin", "thick"], default="mixed")
    p.add_argument("--coverage", type=float, default=None, help="cloud fraction 0-1 (default: random)")
    p.add_argument("--no-shadows", action="store_true", help="do not add cloud shadows")
    p.add_argument("--opacity-output", default=None, help="also write the cloud opacity (float32, 0-1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Read, simulate, write (temporary file + rename)."""
    from ..clouds.simulate import simulate_clouds
    from ..errors import InputError
    from ..outputs import check_outputs
    from ..raster_io import check_writable, open_raster, read_window
    from ..windows import Window
    from .detect import reflectance_divisor, s2_band_indices

    ds, info = open_raster(args.input, "clear image")
    order, names = s2_band_indices(info, "clear image")
    if info.width * info.height > MAX_PIXELS:
        raise InputError(
            f"clear image '{args.input}' is {info.width}x{info.height} px; simulate works on patches up to "
            f"{MAX_PIXELS} px (crop it first, e.g. gdal_translate -srcwin)"
        )
    check_writable(args.output, "output")
    if args.opacity_output:
        check_writable(args.opacity_output, "opacity output")
    check_outputs({"output": args.output, "opacity output": args.opacity_output}, {"clear image": args.input})
    raw = read_window(ds, Window(0, 0, info.width, info.height), f"clear image '{args.input}'").astype(np.float32)
    nodata = info.nodata[0]
    invalid = ~np.isfinite(raw).all(axis=0)
    if nodata is not None:
        invalid |= (raw == np.float32(nodata)).all(axis=0)
    divisor = np.float32(reflectance_divisor(raw, info.dtype))
    refl = np.clip(np.nan_to_num(raw[order], nan=0.0) / divisor, 0.0, 1.0)
    sim = simulate_clouds(
        refl, args.seed, thickness=args.thickness, coverage=args.coverage, shadows=not args.no_shadows
    )
    out = np.empty_like(raw)
    out[order] = sim.cloudy * divisor
    if info.dtype.kind in "ui":
        out = np.rint(out)
    out[:, invalid] = raw[:, invalid]
    tags = {
        "MMCANET_SIMULATED_CLOUDS": f"seed={args.seed} thickness={args.thickness} coverage={args.coverage} "
        f"shadows={not args.no_shadows}",
        "MMCANET_CLOUD_FRACTION": f"{float((sim.opacity > 0).mean()):.4f}",
    }
    _write(args.output, out.astype(info.dtype), info, info.descriptions or names, tags, nodata)
    if args.opacity_output:
        _write(args.opacity_output, sim.opacity[None].astype(np.float32), info, ("cloud opacity",), tags, None)
    logger.info("wrote %s (cloud fraction %.3f)", args.output, float((sim.opacity > 0).mean()))
    print(args.output)
    return 0


def _write(path: str, data: np.ndarray, info: Any, descriptions: Any, tags: dict[str, str], nodata: float | None) -> None:
    from ..raster_io import RasterWriter

    with RasterWriter(
        path, width=info.width, height=info.height, count=data.shape[0], dtype=data.dtype,
        geotransform=info.geotransform if info.georeferenced else None, crs_wkt=info.crs_wkt, nodata=nodata,
        descriptions=tuple(descriptions), tags=tags, what="output",
    ) as w:
        w.write_rows(0, data)
        w.commit()
