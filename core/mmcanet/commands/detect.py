"""`mmcanet detect --input S2.tif --output MASK.tif`: rule-based cloud / shadow mask of a Sentinel-2 GeoTIFF."""

from __future__ import annotations

import argparse
import logging
from typing import Any

import numpy as np

logger = logging.getLogger("mmcanet.detect")

STRIP_ROWS = 1024
"""Rows processed at once; memory stays at one strip (13 x (1024 + 2 margin) x width floats)."""
MARGIN = 64
"""Context rows read above and below each strip (>= shadow search 40 + local window 15 + dilation)."""
CLEAR, CLOUD, SHADOW, NODATA = 0, 1, 2, 255


def register(sub: Any) -> None:
    """Add the `detect` subcommand."""
    p = sub.add_parser(
        "detect",
        help="rule-based cloud and cloud-shadow mask of a Sentinel-2 Level-1C GeoTIFF",
        description=(
            "Reads a Sentinel-2 GeoTIFF (13-band L1C or 12-band L2A; DN = reflectance x 10000, or float "
            "reflectance 0-1) and writes a uint8 mask on the same grid: 0 clear, 1 cloud, 2 cloud shadow, "
            "255 no data (or, with --binary, 1 = cloud or shadow). Accuracy: docs/DATA.md."
        ),
    )
    p.add_argument("--input", required=True, help="Sentinel-2 raster, .SAFE folder, MTD_MSI*.xml or folder of band files")
    p.add_argument("--output", required=True, help="mask GeoTIFF to write")
    p.add_argument("--binary", action="store_true", help="write 1 for cloud or shadow, 0 clear (255 no data)")
    p.add_argument("--no-shadows", action="store_true", help="do not mark cloud shadows")
    p.add_argument("--dilation", type=int, default=1, help="cloud mask dilation in pixels (default 1)")
    p.set_defaults(func=run)


def s2_band_indices(info: Any, what: str) -> tuple[list[int], tuple[str, ...]]:
    """0-based file bands in model order (13 L1C or 12 L2A) and their names, from descriptions or count.

    Raises:
        InputError: when the raster has neither 13 nor 12 bands.
    """
    from ..bands import S2_BANDS_L1C, S2_BANDS_L2A, normalise_band_name
    from ..errors import InputError

    if info.count not in (12, 13):
        raise InputError(
            f"{what} '{info.path}' has {info.count} band(s); expected a Sentinel-2 image with 13 bands "
            f"(Level-1C: {' '.join(S2_BANDS_L1C)}) or 12 bands (Level-2A, no B10)"
        )
    default = S2_BANDS_L1C if info.count == 13 else S2_BANDS_L2A
    names = [normalise_band_name(d) for d in info.descriptions]
    if sorted(names) == sorted(default):
        return [names.index(b) for b in default], default
    return list(range(info.count)), default


def reflectance_divisor(sample: np.ndarray, dtype: np.dtype) -> float:
    """10000 for DN input, 1 for float input that is already reflectance (99th percentile <= 2)."""
    if np.dtype(dtype).kind == "f":
        v = sample[np.isfinite(sample)]
        if v.size and float(np.percentile(v, 99)) <= 2.0:
            return 1.0
    return 10000.0


def run(args: argparse.Namespace) -> int:
    """Detect strip by strip (with context margins) and write the mask (temporary file + rename)."""
    from ..clouds.detect import detect_clouds
    from ..outputs import check_outputs
    from ..raster_io import RasterWriter, check_writable, read_window
    from ..stacking import open_input
    from ..windows import Window

    what = f"input '{args.input}'"
    ds, info = open_input(args.input, "input")  # a SAFE product or band folder is stacked on the fly
    order, _ = s2_band_indices(info, "input")
    check_writable(args.output, "output")
    check_outputs({"output": args.output}, {"input": args.input})
    probe_h = min(info.height, 256)
    probe = read_window(ds, Window(0, 0, min(info.width, 256), probe_h), what).astype(np.float32)
    divisor = reflectance_divisor(probe, info.dtype)
    nodata = info.nodata[0]
    counts = np.zeros(4, dtype=np.int64)
    desc = "cloud or shadow (1), clear (0)" if args.binary else "0 clear, 1 cloud, 2 cloud shadow"
    with RasterWriter(
        args.output, width=info.width, height=info.height, count=1, dtype=np.uint8,
        geotransform=info.geotransform if info.georeferenced else None, crs_wkt=info.crs_wkt, nodata=NODATA,
        descriptions=(f"cloud mask: {desc}, 255 no data",),
        tags={"MMCANET_CLOUD_MASK": desc, "MMCANET_SOURCE": str(args.input)}, what="output",
    ) as writer:
        for row in range(0, info.height, STRIP_ROWS):
            h = min(STRIP_ROWS, info.height - row)
            top = max(0, row - MARGIN)
            bottom = min(info.height, row + h + MARGIN)
            raw = read_window(ds, Window(0, top, info.width, bottom - top), what).astype(np.float32)
            invalid = ~np.isfinite(raw).all(axis=0) | (np.nan_to_num(raw) == 0).all(axis=0)
            if nodata is not None:
                invalid |= (raw == np.float32(nodata)).all(axis=0)
            refl = np.nan_to_num(raw[order], nan=0.0) / np.float32(divisor)
            m = detect_clouds(refl, dilation=args.dilation)
            out = np.zeros(m.cloud.shape, dtype=np.uint8)
            if not args.no_shadows:
                out[m.shadow] = CLOUD if args.binary else SHADOW
            out[m.cloud] = CLOUD
            out[invalid] = NODATA
            out = out[row - top : row - top + h]
            writer.write_rows(row, out[None])
            for k, v in ((0, CLEAR), (1, CLOUD), (2, SHADOW), (3, NODATA)):
                counts[k] += int((out == v).sum())
        writer.commit()
    valid = max(1, int(counts[:3].sum()))
    logger.info(
        "wrote %s: cloud %.1f %%, shadow %.1f %% of valid pixels",
        args.output, 100.0 * counts[1] / valid, 100.0 * counts[2] / valid,
    )
    print(args.output)
    return 0
