"""Bring SAR (and a given cloud mask) onto the optical grid (SAR units: :mod:`mmcanet.sar_units`).

When the SAR raster's CRS, resolution or extent differ from the optical raster's, it is wrapped in a
GDAL *warped VRT* on exactly the optical grid (bilinear for SAR, nearest for masks). The VRT warps
lazily, window by window, as the engine reads tiles: nothing scene-sized is ever held in memory.
Pixels of the optical grid that the SAR does not cover read as NaN (nodata); only the intersection
is restored. Rasters without any georeferencing are accepted when their sizes match (assumed
co-registered, with a warning). Geographic CRSs (EPSG:4326) work like any other.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from osgeo import gdal, osr

from .errors import InputError
from .gdal_calls import gdal_call
from .raster_read import RasterInfo

Warn = Callable[[str], None]


@dataclass(frozen=True)
class Aligned:
    """A raster readable on the optical grid.

    Attributes:
        dataset: GDAL dataset with the optical grid's size (the input itself or a warped VRT).
        warped: True when a warped VRT resamples the input.
        coverage: fraction of the optical grid covered by the input (1.0 when not warped).
        nodata: value marking missing pixels in ``dataset`` (NaN for warped float data).
        source: the input dataset itself (the warped VRT reads through it: flush both to free blocks).
    """

    dataset: gdal.Dataset
    warped: bool
    coverage: float
    nodata: float | None
    source: gdal.Dataset | None = None


def _srs(wkt: str) -> osr.SpatialReference:
    srs = osr.SpatialReference()
    srs.ImportFromWkt(wkt)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def same_crs(a_wkt: str, b_wkt: str) -> bool:
    """True when two WKT strings describe the same CRS (both empty counts as the same)."""
    if not a_wkt or not b_wkt:
        return a_wkt == b_wkt
    return bool(_srs(a_wkt).IsSame(_srs(b_wkt)))


def same_grid(a: RasterInfo, b: RasterInfo, tol_px: float = 1e-3) -> bool:
    """True when two rasters have the same size, CRS and geotransform (origin within ``tol_px`` pixel)."""
    if (a.width, a.height) != (b.width, b.height) or not same_crs(a.crs_wkt, b.crs_wkt):
        return False
    ga, gb = a.geotransform, b.geotransform
    px = max(abs(gb[1]), abs(gb[5]), 1e-12)
    origin = abs(ga[0] - gb[0]) <= tol_px * px and abs(ga[3] - gb[3]) <= tol_px * px
    return origin and all(abs(ga[i] - gb[i]) <= 1e-6 * px for i in (1, 2, 4, 5))


def _is_north_up(gt: tuple[float, ...]) -> bool:
    return gt[2] == 0.0 and gt[4] == 0.0 and gt[1] > 0 and gt[5] < 0


def _bounds(info: RasterInfo) -> tuple[float, float, float, float]:
    gt = info.geotransform
    x0, x1 = gt[0], gt[0] + gt[1] * info.width
    y0, y1 = gt[3], gt[3] + gt[5] * info.height
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def footprint(ds: gdal.Dataset, dst_wkt: str, samples: int = 21) -> tuple[float, float, float, float] | None:
    """Bounding box of a raster's edges transformed into another CRS (geotransform or GCPs).

    Args:
        ds: the raster.
        dst_wkt: target CRS.
        samples: points per edge (edges curve under reprojection).

    Returns:
        ``(minx, miny, maxx, maxy)`` in ``dst_wkt`` units, or None when no point transforms.
    """
    w, h = ds.RasterXSize, ds.RasterYSize
    t = np.linspace(0.0, 1.0, samples)
    pts = [(x * w, 0.0) for x in t] + [(x * w, float(h)) for x in t]
    pts += [(0.0, y * h) for y in t] + [(float(w), y * h) for y in t]
    with_gcps = ds.GetGCPCount() > 0 and not ds.GetProjection()
    opts = [f"DST_SRS={dst_wkt}"] + (["METHOD=GCP_POLYNOMIAL"] if with_gcps else [])
    tr = gdal_call(gdal.Transformer, ds, None, opts, what="SAR/optical footprint")
    out, ok = tr.TransformPoints(0, pts)
    good = [(x, y) for (x, y, *_), s in zip(out, ok, strict=True) if s and math.isfinite(x) and math.isfinite(y)]
    if not good:
        return None
    xs, ys = zip(*good, strict=True)
    return min(xs), min(ys), max(xs), max(ys)


def align_to(
    ds: gdal.Dataset,
    info: RasterInfo,
    ref: RasterInfo,
    *,
    what: str,
    ref_what: str,
    resample: str = "bilinear",
    warn: Warn | None = None,
) -> Aligned:
    """Make ``ds`` readable on the grid of ``ref`` (the optical raster).

    Args:
        ds: the raster to align (SAR or cloud mask).
        info: its :class:`RasterInfo`.
        ref: the optical raster's :class:`RasterInfo` (the target grid).
        what: label of ``ds`` for messages, e.g. ``"SAR image '/x/s1.tif'"``.
        ref_what: label of the reference for messages.
        resample: GDAL resampling name (``bilinear`` for SAR, ``near`` for masks).
        warn: called with a message when something is assumed (no georeferencing, partial cover).

    Returns:
        :class:`Aligned`.

    Raises:
        InputError: when the rasters cannot be aligned (no georeferencing and different sizes, rotated
            optical grid) or do not overlap; the message names both inputs and says what to do.
    """
    warn = warn or (lambda _msg: None)
    nodata = info.nodata[0]
    if info.georeferenced and ref.georeferenced and same_grid(info, ref):
        return Aligned(ds, warped=False, coverage=1.0, nodata=nodata, source=ds)
    if not info.georeferenced or not ref.georeferenced:
        if (info.width, info.height) == (ref.width, ref.height):
            if not info.georeferenced and not ref.georeferenced:
                warn(f"{what} and {ref_what} have no georeferencing; assuming they are co-registered (same size)")
            else:
                missing = what if not info.georeferenced else ref_what
                warn(f"{missing} has no georeferencing; assuming it is co-registered with the other input (same size)")
            return Aligned(ds, warped=False, coverage=1.0, nodata=nodata, source=ds)
        missing = what if not info.georeferenced else ref_what
        raise InputError(
            f"{missing} has no georeferencing (no CRS / geotransform) and its size differs "
            f"({info.width}x{info.height} vs {ref.width}x{ref.height} for {ref_what}); "
            "georeference it (e.g. gdal_translate -a_srs -a_ullr) or resample it to the same grid"
        )
    if not ref.crs_wkt:
        raise InputError(f"{ref_what} has a geotransform but no CRS; assign one (gdal_edit.py -a_srs EPSG:...)")
    if not _is_north_up(ref.geotransform):
        raise InputError(f"{ref_what} has a rotated geotransform; warp it to a north-up grid first (gdalwarp)")
    if not info.crs_wkt and info.geotransform != (0.0, 1.0, 0.0, 0.0, 0.0, 1.0):
        raise InputError(f"{what} has a geotransform but no CRS; assign one (gdal_edit.py -a_srs EPSG:...)")

    ref_box = _bounds(ref)
    box = footprint(ds, ref.crs_wkt)
    coverage = 0.0
    if box is not None:
        iw = min(box[2], ref_box[2]) - max(box[0], ref_box[0])
        ih = min(box[3], ref_box[3]) - max(box[1], ref_box[1])
        area = (ref_box[2] - ref_box[0]) * (ref_box[3] - ref_box[1])
        coverage = max(0.0, iw) * max(0.0, ih) / area if area > 0 else 0.0
    if coverage <= 0.0:
        raise InputError(
            f"{what} and {ref_what} do not overlap (in the optical CRS the first covers "
            f"{_fmt_box(box)}, the second {_fmt_box(ref_box)}); check that both show the same place"
        )
    if coverage < 0.999:
        warn(f"{what} covers about {coverage:.0%} of {ref_what} (bounding boxes); pixels outside it have no data from it")

    is_float = info.dtype.kind == "f"
    grid = {"format": "VRT", "outputBounds": ref_box, "width": ref.width, "height": ref.height,
            "dstSRS": ref.crs_wkt, "resampleAlg": resample}
    if is_float and (nodata is None or math.isnan(nodata)):
        # Float data whose only missing value is NaN (SAR in dB or linear power): no declared nodata,
        # the destination starts as NaN (outside the footprint stays NaN) and NaN sources propagate
        # through the bilinear arithmetic (an output pixel next to missing SAR is missing too, 1 px
        # more conservative than renormalising). GDAL then takes its no-mask bilinear kernel: 2x
        # faster than declaring NaN as nodata (bench/bench_io.py, docs/ENGINE.md).
        opts = gdal.WarpOptions(**grid, outputType=gdal.GDT_Float32, warpOptions=["INIT_DEST=NaN"])
        dst_nodata: float | None = math.nan
    else:
        src_nodata = nodata if nodata is not None else (math.nan if is_float else None)
        dst_nodata = math.nan if is_float else (nodata if nodata is not None else 255)
        opts = gdal.WarpOptions(**grid, srcNodata=src_nodata, dstNodata=dst_nodata,
                                outputType=gdal.GDT_Float32 if is_float else gdal.GDT_Unknown)
    vrt = gdal_call(gdal.Warp, "", ds, options=opts, what=f"{what}: cannot be warped onto the grid of {ref_what}")
    return Aligned(vrt, warped=True, coverage=coverage, nodata=dst_nodata, source=ds)


def _fmt_box(box: tuple[float, float, float, float] | None) -> str:
    if box is None:
        return "nothing (its corners do not transform)"
    return f"x {box[0]:.6g}..{box[2]:.6g}, y {box[1]:.6g}..{box[3]:.6g}"
