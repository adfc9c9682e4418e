"""`mmcanet stack --optical S2.SAFE --output s2.tif`: one multi-band GeoTIFF from a product or band folder."""

from __future__ import annotations

import argparse
import logging
from typing import Any

logger = logging.getLogger("mmcanet.stack")


def register(sub: Any) -> None:
    """Add the `stack` subcommand."""
    p = sub.add_parser(
        "stack",
        help="stack a Sentinel-2 product / band folder, or Sentinel-1 VV + VH files, into one GeoTIFF",
        description=(
            "Writes one tiled, compressed GeoTIFF with band names from a Sentinel-2 .SAFE folder, its "
            "MTD_MSI*.xml or a folder of per-band files (all bands on the finest band's grid, coarser "
            "bands resampled bilinearly), or from a folder with one Sentinel-1 VV and one VH raster. "
            "`mmcanet restore` reads such inputs directly; the stacked file is for QGIS and other tools."
        ),
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--optical", help="Sentinel-2 .SAFE folder, MTD_MSI*.xml, or folder of band files")
    src.add_argument("--sar", help="folder with one VV and one VH raster")
    p.add_argument("--output", required=True, help="GeoTIFF to write")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Stack and write (temporary file + rename)."""
    from ..stacking import write_stack

    last = [-1]

    def progress(fraction: float) -> None:
        pct = int(fraction * 10) * 10
        if pct > last[0]:
            last[0] = pct
            logger.info("%s: %d%%", args.output, pct)

    out = write_stack(args.sar or args.optical, args.output, sar=bool(args.sar), progress=progress)
    logger.info("wrote %s", out)
    return 0
