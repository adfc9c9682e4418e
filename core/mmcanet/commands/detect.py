"""`mmcanet detect --input S2.tif --output MASK.tif`: rule-based cloud / shadow mask of a Sentinel-2 GeoTIFF."""

from __future__ import annotations

import argparse
import logging
from typing import Any

logger = logging.getLogger("mmcanet.detect")


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
    p.add_argument("--extent", type=float, nargs=4, metavar=("XMIN", "YMIN", "XMAX", "YMAX"),
                   help="only this area of interest (in the input's CRS unless --extent-crs); default: the whole image")
    p.add_argument("--extent-crs", help="CRS of --extent, e.g. EPSG:4326 (default: the input's)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Detect (see :func:`mmcanet.clouds.scene.detect_scene`) and print the output path."""
    from ..clouds.scene import detect_scene

    result = detect_scene(args.input, args.output, binary=args.binary, shadows=not args.no_shadows,
                          dilation=args.dilation, extent=tuple(args.extent) if args.extent else None,
                          extent_crs=args.extent_crs, log=logger.info)
    print(result.output)
    return 0
