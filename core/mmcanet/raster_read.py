"""Opening input rasters with clear errors, and reading windows of them (osgeo.gdal).

:func:`open_raster` describes a raster (:class:`RasterInfo`); :func:`read_window` / :func:`read_into` read
windows (into caller buffers of any strides); :func:`check_readable` fails early on truncated files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from osgeo import gdal, gdal_array

from .cpus import gdal_threads
from .errors import InputError
from .gdal_calls import gdal_call, gdal_errors
from .windows import Window

_DEFAULT_GEOTRANSFORM = (0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class RasterInfo:
    """What the engine needs to know about an input raster.

    Attributes:
        path: file path as given.
        width: columns (px).
        height: rows (px).
        count: number of bands.
        dtype: numpy dtype of band 1.
        crs_wkt: projection WKT ('' when none).
        geotransform: GDAL geotransform (the default ``(0, 1, 0, 0, 0, 1)`` when none).
        georeferenced: a CRS, a non-default geotransform or GCPs are present.
        nodata: per band nodata value (None when unset).
        descriptions: per band description ('' when unset).
    """

    path: str
    width: int
    height: int
    count: int
    dtype: np.dtype
    crs_wkt: str
    geotransform: tuple[float, ...]
    georeferenced: bool
    nodata: tuple[float | None, ...]
    descriptions: tuple[str, ...]


THREADED_DECODING_MIN_VERSION = 3070100
"""GDAL from which GeoTIFFs are opened with ``NUM_THREADS`` (multi-threaded block decoding). GDAL 3.6 added
it, but its 3.6.x code path can crash the process (rasterio issue 2847, fixed in GDAL 3.7.1 by OSGeo/gdal
PR 7963); on Debian 12's GDAL 3.6.2 the test suite segfaulted in ``GetProjection`` on such a dataset
opened in a QGIS task thread. Older GDALs decode on one thread: slower reads, no crash."""


def threaded_decoding_is_safe() -> bool:
    """Whether this GDAL decodes GeoTIFF blocks on several threads without the 3.6.x crash."""
    return int(gdal.VersionInfo("VERSION_NUM")) >= THREADED_DECODING_MIN_VERSION


def open_raster(path: str | os.PathLike[str], what: str, shown: str | None = None) -> tuple[gdal.Dataset, RasterInfo]:
    """Open a raster read-only and describe it.

    Args:
        path: file (or any GDAL dataset name, e.g. a VRT).
        what: role for messages, e.g. ``"optical image"``.
        shown: the path to name in messages and in ``RasterInfo.path`` when ``path`` is a stand-in
            (the in-memory VRT of a band folder, :mod:`mmcanet.stacking`); default ``path``.

    Returns:
        ``(dataset, info)``; keep the dataset referenced while using its bands.

    Raises:
        InputError: when the file is missing, unreadable or has no bands.
    """
    p = os.fspath(path)
    label = f"{what} '{shown or p}'"
    if not p:
        raise InputError(f"{what}: no path given")
    if "://" not in p and not p.startswith("/vsi") and not os.path.exists(p):
        raise InputError(f"{label}: file not found")
    if os.path.isdir(p):
        raise InputError(f"{label}: is a folder, expected a raster file")
    ds = gdal_call(gdal.OpenEx, p, gdal.OF_RASTER | gdal.OF_READONLY, what=f"{label}: cannot be opened as a raster")
    if ds.GetDriver().ShortName == "GTiff" and threaded_decoding_is_safe():  # decode blocks on this rank's cores
        with gdal_errors():
            threaded = gdal.OpenEx(p, gdal.OF_RASTER | gdal.OF_READONLY, open_options=[f"NUM_THREADS={gdal_threads()}"])
        if threaded is not None:
            ds = threaded
    if ds.RasterCount < 1:
        raise InputError(f"{label}: has no raster bands")
    band = ds.GetRasterBand(1)
    gt = tuple(float(v) for v in ds.GetGeoTransform(can_return_null=True) or _DEFAULT_GEOTRANSFORM)
    wkt = ds.GetProjection() or ""
    georef = bool(wkt) or gt != _DEFAULT_GEOTRANSFORM or ds.GetGCPCount() > 0
    bands = [ds.GetRasterBand(i + 1) for i in range(ds.RasterCount)]
    info = RasterInfo(
        path=shown or p,
        width=ds.RasterXSize,
        height=ds.RasterYSize,
        count=ds.RasterCount,
        dtype=np.dtype(gdal_array.GDALTypeCodeToNumericTypeCode(band.DataType) or np.float64),
        crs_wkt=wkt,
        geotransform=gt,
        georeferenced=georef,
        nodata=tuple(b.GetNoDataValue() for b in bands),
        descriptions=tuple((b.GetDescription() or "").strip() for b in bands),
    )
    return ds, info


def read_window(ds: gdal.Dataset, window: Window, what: str, bands: Sequence[int] | None = None) -> np.ndarray:
    """Read a window of some bands.

    Args:
        ds: an open dataset.
        window: pixels to read (inside the raster).
        what: label for error messages (names the file).
        bands: 1-based band numbers (default: all, in order).

    Returns:
        ``(len(bands), window.height, window.width)`` array in the file's data type.

    Raises:
        InputError: when GDAL cannot read the data (truncated or corrupt file).
    """
    band_list = list(bands) if bands is not None else list(range(1, ds.RasterCount + 1))
    arr = gdal_call(
        ds.ReadAsArray,
        window.col_off,
        window.row_off,
        window.width,
        window.height,
        band_list=band_list,
        what=f"{what}: cannot read pixels {window.col_off},{window.row_off} ({window.width}x{window.height})",
    )
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[None]
    return arr


def read_into(ds: gdal.Dataset, window: Window, out: np.ndarray, what: str, bands: Sequence[int] | None = None) -> None:
    """Read a window of some bands straight into ``out`` (any strides; GDAL converts the data type).

    Args:
        ds: an open dataset.
        window: pixels to read.
        out: ``(len(bands), window.height, window.width)`` array (a view into a larger buffer is fine).
        what: label for error messages (names the file).
        bands: 1-based band numbers (default: all, in order).

    Raises:
        InputError: when GDAL cannot read the data.
    """
    band_list = list(bands) if bands is not None else list(range(1, ds.RasterCount + 1))
    if out.shape != (len(band_list), window.height, window.width):
        raise ValueError(f"buffer shape {out.shape} does not fit {len(band_list)} bands of {window}")
    gdal_call(
        ds.ReadAsArray,
        window.col_off,
        window.row_off,
        window.width,
        window.height,
        buf_obj=out,
        band_list=band_list,
        what=f"{what}: cannot read pixels {window.col_off},{window.row_off} ({window.width}x{window.height})",
    )


def check_readable(ds: gdal.Dataset, what: str) -> None:
    """Read the first and the last row block of every band, so a truncated file fails before any work.

    Raises:
        InputError: naming ``what`` when a read fails.
    """
    bx, by = ds.GetRasterBand(1).GetBlockSize()
    w, h = ds.RasterXSize, ds.RasterYSize
    bw, bh = min(w, max(1, bx), 512), min(h, max(1, by), 512)
    for win in {Window(0, 0, bw, bh), Window(w - bw, h - bh, bw, bh)}:
        read_window(ds, win, what)
