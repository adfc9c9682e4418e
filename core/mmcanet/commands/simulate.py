"""`mmcanet simulate --input CLEAR.tif --output CLOUDY.tif`: add simulated clouds to a clear S2 GeoTIFF."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from ..clouds.simulate import THICKNESS_MODES

logger = logging.getLogger("mmcanet.simulate")


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
    p.add_argument("--thickness", choices=THICKNESS_MODES, default=THICKNESS_MODES[0])
    p.add_argument("--coverage", type=float, default=None, help="cloud fraction 0-1 (default: random)")
    p.add_argument("--no-shadows", action="store_true", help="do not add cloud shadows")
    p.add_argument("--opacity-output", default=None, help="also write the cloud opacity (float32, 0-1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Simulate (see :func:`mmcanet.clouds.scene.simulate_scene`) and print the output path."""
    from ..clouds.scene import simulate_scene

    result = simulate_scene(args.input, args.output, seed=args.seed, thickness=args.thickness,
                            coverage=args.coverage, shadows=not args.no_shadows,
                            opacity_output=args.opacity_output, log=logger.info)
    print(result.output)
    return 0
