"""Area of interest: restrict a restore (or a cloud detection) to the optical pixels an extent touches.

The optical dataset is replaced by an in-memory VRT of just that window (no pixels are copied), so
everything downstream (SAR warped onto the optical grid, the cloud mask, the tile plan, the outputs)
works on the window alone: the cost is proportional to the area, and the outputs are georeferenced on
the optical grid, aligned to the whole scene's pixels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from osgeo import gdal, osr

from .errors import InputError
from .gdal_calls import gdal_call
from .raster_read import RasterInfo
from .windows import Bounds, Window, window_bounds, window_from_bounds

DENSIFY_POINTS = 21
"""Points per edge when an extent is transformed to the optical CRS (curved edges stay covered)."""


def _srs(definition: str, what: str) -> osr.SpatialReference:
    srs = osr.SpatialReference()
    try:
        srs.SetFromUserInput(definition)
    except RuntimeError:
        raise InputError(f"{what}: CRS '{definition[:80]}' is not one GDAL knows (e.g. EPSG:4326 or a WKT)") from None
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def extent_in_crs(extent: Sequence[float], extent_crs: str | None, target_wkt: str, what: str) -> Bounds:
    """``extent`` (in ``extent_crs``; None = already in the target CRS) as bounds in ``target_wkt``.

    The rectangle's edges are densified, so the result covers the whole transformed area.
    """
    xmin, ymin, xmax, ymax = (float(v) for v in extent)
    if not extent_crs:
        return xmin, ymin, xmax, ymax
    source = _srs(extent_crs, "extent")
    target = _srs(target_wkt, what)
    if source.IsSame(target):
        return xmin, ymin, xmax, ymax
    transform = osr.CoordinateTransformation(source, target)
    try:
        bounds = transform.TransformBounds(xmin, ymin, xmax, ymax, DENSIFY_POINTS)
    except RuntimeError as exc:
        raise InputError(f"extent {list(extent)} in {extent_crs}: cannot be transformed to the CRS of {what} ({exc})") from None
    return tuple(float(v) for v in bounds)  # type: ignore[return-value]


def extent_window(info: RasterInfo, extent: Sequence[float], extent_crs: str | None, what: str) -> Window:
    """The optical pixels ``extent`` touches (snapped outward, clipped to the image).

    Raises:
        InputError: the image has no usable georeferencing, or the extent does not overlap it.
    """
    if not info.crs_wkt and extent_crs:
        raise InputError(f"{what} has no CRS, so an extent in {extent_crs} cannot be placed on it")
    if not info.georeferenced:
        raise InputError(f"{what} is not georeferenced, so an extent cannot be placed on it; "
                         "give a georeferenced image or restore the whole image")
    gt = info.geotransform
    if gt[2] != 0 or gt[4] != 0:
        raise InputError(f"{what} has a rotated geotransform; an extent needs a north-up image "
                         "(warp it first, e.g. gdalwarp), or restore the whole image")
    bounds = extent_in_crs(extent, extent_crs, info.crs_wkt, what)
    window = window_from_bounds(bounds, gt, info.width, info.height)
    if window is None:
        image = window_bounds(Window(0, 0, info.width, info.height), gt)
        shown = ", ".join(f"{v:.6g}" for v in bounds)
        raise InputError(
            f"extent ({shown}{' in the image CRS' if extent_crs else ''}) does not overlap {what}, whose bounds are "
            f"({', '.join(f'{v:.6g}' for v in image)}); give an extent inside the image (in its CRS unless a CRS "
            "is given with it)"
        )
    return window


def crop_to_extent(
    ds: Any, info: RasterInfo, extent: Sequence[float], extent_crs: str | None, what: str
) -> tuple[Any, RasterInfo, Window]:
    """``(dataset, info, window)`` for the window of ``ds`` that ``extent`` touches.

    The dataset is an in-memory VRT that refers to ``ds`` (nothing is read here); ``info`` is the
    input's with the window's size and geotransform, so messages still name the input file.
    """
    window = extent_window(info, extent, extent_crs, what)
    if (window.width, window.height) == (info.width, info.height):
        return ds, info, window
    sub = gdal_call(gdal.Translate, "", ds, format="VRT",
                    srcWin=[window.col_off, window.row_off, window.width, window.height],
                    what=f"{what}: cannot cut the area of interest")
    x0, dx, rx, y0, ry, dy = info.geotransform[:6]
    geotransform = (x0 + window.col_off * dx, dx, rx, y0 + window.row_off * dy, ry, dy)
    return sub, dataclasses.replace(info, width=window.width, height=window.height, geotransform=geotransform), window
