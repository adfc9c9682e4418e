"""Compatibility re-exports: the raster I/O moved into four modules named after what they do.

- :mod:`mmcanet.gdal_calls`: GDAL calls with clear errors, no global GDAL state changed;
- :mod:`mmcanet.raster_read`: open inputs (:class:`RasterInfo`), read windows;
- :mod:`mmcanet.output_files`: temporary names, stale partial files, verify + sync + rename;
- :mod:`mmcanet.raster_write`: :class:`RasterWriter` (block rows, overviews, COG).

Import from those; this module only keeps callers written before the split working.
"""

from __future__ import annotations

from .gdal_calls import gdal_call, gdal_errors, limit_gdal_cache
from .output_files import (
    GEOTIFF_SUFFIXES,
    STALE_AFTER_S,
    check_writable,
    cog_source_path_for,
    finish_geotiff,
    remove_stale_partials,
    temp_path_for,
    verify_geotiff,
)
from .raster_read import RasterInfo, check_readable, open_raster, read_into, read_window
from .raster_write import (
    OVERVIEW_MIN_SIZE,
    OVERVIEW_SMALLEST,
    RasterWriter,
    cog_creation_options,
    geotiff_creation_options,
    overview_levels,
)

__all__ = [
    "GEOTIFF_SUFFIXES",
    "OVERVIEW_MIN_SIZE",
    "OVERVIEW_SMALLEST",
    "RasterInfo",
    "RasterWriter",
    "STALE_AFTER_S",
    "check_readable",
    "check_writable",
    "cog_creation_options",
    "cog_source_path_for",
    "finish_geotiff",
    "gdal_call",
    "gdal_errors",
    "geotiff_creation_options",
    "limit_gdal_cache",
    "open_raster",
    "overview_levels",
    "read_into",
    "read_window",
    "remove_stale_partials",
    "temp_path_for",
    "verify_geotiff",
]
