"""Inputs delivered as one file per band: Sentinel-2 SAFE products and band folders, Sentinel-1 VV/VH files.

Sentinel-2 products come as one JPEG 2000 file per band at 10, 20 or 60 m (a ``.SAFE`` folder, its
``MTD_MSIL1C.xml`` / ``MTD_MSIL2A.xml``, or the bands copied into a folder, e.g. BigEarthNet);
Sentinel-1 exports often keep VV and VH in separate files. The engine needs one multi-band raster
on one grid, so :func:`resolve_optical` and :func:`resolve_sar` turn such an input into a virtual
raster (GDAL VRT, in memory): every band resampled (bilinear) onto the grid of the finest band,
bands in the canonical order with their names as band descriptions. No pixel is copied; the engine
reads through the VRT strip by strip as from any file.

A path that is a raster file is returned unchanged.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable
from pathlib import Path

from osgeo import gdal

from .bands import S2_BANDS_L1C, S2_BANDS_L2A
from .errors import InputError
from .raster_read import RasterInfo, open_raster

_RASTER_SUFFIXES = (".jp2", ".tif", ".tiff")
# a band token at the end of the file name, optionally followed by the L2A resolution suffix: ..._B8A_20m.jp2
_S2_BAND = re.compile(r"(?:^|[_\-.])B(0?[1-9]|1[0-2]|8A)(?:_(10|20|60)m)?$", re.IGNORECASE)
_POLARISATION = re.compile(r"(?:^|[_\-.])(VV|VH)(?:$|[_\-.])", re.IGNORECASE)
# GDAL SENTINEL2 driver subdatasets, e.g. SENTINEL2_L1C:/data/S2A.SAFE/MTD_MSIL1C.xml:10m:EPSG_32632
_S2_SUBDATASET = re.compile(r'^SENTINEL2_L(?:1B|1C|2A):"?(.+?\.xml)"?:[^:]+:[^:]+$', re.IGNORECASE)
_counter = itertools.count()


def _is_product(path: Path) -> bool:
    return path.is_dir() or (path.suffix.lower() == ".xml" and path.name.upper().startswith("MTD_MSI"))


def _band_files(folder: Path) -> dict[str, list[tuple[int, Path]]]:
    """Canonical band name -> [(resolution in m, 1000 when unknown; file)] found below ``folder``."""
    found: dict[str, list[tuple[int, Path]]] = {}
    for f in sorted(folder.rglob("*")):
        if f.suffix.lower() not in _RASTER_SUFFIXES or not f.is_file():
            continue
        if f.name.upper().startswith("MSK_") or "QI_DATA" in (part.upper() for part in f.parts):
            continue  # per-band quality masks of a SAFE (MSK_DETFOO_B01.jp2 ...), not bands
        m = _S2_BAND.search(f.stem)
        if m is None:
            continue
        token = m.group(1).upper()
        name = "B8A" if token == "8A" else f"B{int(token)}"
        # resolution from an L2A suffix; unknown (plain band files) sorts after every known one
        found.setdefault(name, []).append((int(m.group(2) or 1000), f))
    return found


def _vrt(name_hint: str, files: list[Path], names: list[str], what: str) -> str:
    """A VRT stacking ``files`` (one band each) on the finest grid among them; returns its GDAL name."""
    datasets = []
    for f in files:
        ds = gdal.Open(str(f))
        if ds is None:
            raise InputError(f"{what}: band file '{f}' cannot be opened as a raster")
        if ds.RasterCount != 1:
            raise InputError(f"{what}: band file '{f}' has {ds.RasterCount} bands; expected 1")
        datasets.append(ds)
    crs = {ds.GetProjection() for ds in datasets}
    if len(crs) > 1:
        raise InputError(f"{what}: its band files are in different coordinate systems; reproject them to one first")
    path = f"/vsimem/mmcanet-stack-{os.getpid()}-{next(_counter)}-{name_hint}.vrt"
    # the grid of the finest band: its resolution and its extent (a 60 m band may reach a little further)
    finest = min(datasets, key=lambda d: abs(d.GetGeoTransform()[1]))
    gt = finest.GetGeoTransform()
    bounds = (gt[0], gt[3] + gt[5] * finest.RasterYSize, gt[0] + gt[1] * finest.RasterXSize, gt[3])
    opts = gdal.BuildVRTOptions(separate=True, resolution="highest", resampleAlg="bilinear", outputBounds=bounds)
    vrt = gdal.BuildVRT(path, [str(f) for f in files], options=opts)
    if vrt is None:
        raise InputError(f"{what}: its band files cannot be stacked ({gdal.GetLastErrorMsg() or 'GDAL error'})")
    for i, name in enumerate(names):
        vrt.GetRasterBand(i + 1).SetDescription(name)
    nodata = datasets[0].GetRasterBand(1).GetNoDataValue()
    if nodata is not None:
        for i in range(len(names)):
            vrt.GetRasterBand(i + 1).SetNoDataValue(nodata)
    vrt.FlushCache()
    vrt = None
    return path


def resolve_optical(path: str | os.PathLike[str]) -> str:
    """The GDAL name to read a Sentinel-2 input from.

    Args:
        path: a raster file (returned as is), a ``.SAFE`` folder, an ``MTD_MSIL1C.xml`` /
            ``MTD_MSIL2A.xml`` (or a GDAL ``SENTINEL2_L1C:...xml:10m:EPSG_...`` subdataset of it, what
            QGIS shows for a product it opened), or a folder holding one file per band (``*_B01.jp2``
            ... ``*_B8A.tif``; names may carry the Level-2A resolution suffix ``_20m``).

    Returns:
        ``path`` itself, or the name of an in-memory VRT with the 13 Level-1C bands (or the 12
        Level-2A bands when there is no B10) on the finest band's grid, each band described by name.
        When a band exists at several resolutions (Level-2A), the finest file is used.

    Raises:
        InputError: when a folder has no band files, lacks bands, or mixes coordinate systems.
    """
    text = os.fspath(path)
    sub = _S2_SUBDATASET.match(text)
    if sub:  # a product QGIS opened with GDAL's SENTINEL2 driver: one resolution only; take every band
        text = sub.group(1)
    p = Path(text).expanduser()
    if not _is_product(p):
        return os.fspath(path)
    folder = (p.parent if p.is_file() else p).resolve()  # absolute band paths in the VRT
    what = f"optical input '{p}'"
    found = _band_files(folder)
    if not found:
        raise InputError(
            f"{what}: no Sentinel-2 band files (names ending in _B01 ... _B12 / _B8A, .jp2 or .tif) found in "
            f"'{folder}'; give a 13-band (Level-1C) or 12-band (Level-2A) raster, a .SAFE folder or its MTD_MSI*.xml"
        )
    order = S2_BANDS_L1C if "B10" in found else S2_BANDS_L2A
    missing = [b for b in order if b not in found]
    if missing:
        raise InputError(f"{what}: band files for {', '.join(missing)} are missing in '{folder}' (found {', '.join(sorted(found))})")
    files = []
    for b in order:
        best = min(r for r, _ in found[b])
        finest = [f for r, f in found[b] if r == best]
        if len(finest) > 1:
            names = ", ".join(str(f.relative_to(folder)) for f in finest[:3])
            raise InputError(f"{what}: several files for band {b} ({names}); point to one granule's folder")
        files.append(finest[0])
    return _vrt(folder.name, files, list(order), what)


def resolve_sar(path: str | os.PathLike[str]) -> str:
    """The GDAL name to read a Sentinel-1 input from.

    Args:
        path: a raster file (returned as is) or a folder with exactly one VV and one VH file
            (``*_VV.tif`` / ``*_VH.tif``, ``*-vv-*.tiff`` ...).

    Returns:
        ``path`` itself, or the name of an in-memory VRT with bands VV, VH on the finer grid.

    Raises:
        InputError: when the folder does not hold exactly one VV and one VH raster.
    """
    p = Path(os.fspath(path)).expanduser()
    if not p.is_dir():
        return os.fspath(path)
    what = f"SAR input '{p}'"
    pols: dict[str, list[Path]] = {"VV": [], "VH": []}
    for f in sorted(p.resolve().rglob("*")):
        if f.suffix.lower() in _RASTER_SUFFIXES and f.is_file():
            m = _POLARISATION.search(f.stem)
            if m:
                pols[m.group(1).upper()].append(f)
    for pol, files in pols.items():
        if len(files) != 1:
            listed = ", ".join(f.name for f in files) or "none"
            raise InputError(f"{what}: expected exactly one {pol} raster in the folder, found {listed}")
    return _vrt(p.name, [pols["VV"][0], pols["VH"][0]], ["VV", "VH"], what)


def open_input(
    path: str | os.PathLike[str], what: str, *, sar: bool = False
) -> tuple[gdal.Dataset, RasterInfo]:
    """Open an input that may be a product or band folder (stacked on the fly) or a raster file.

    Messages and ``RasterInfo.path`` name ``path`` as given, never the in-memory stand-in.

    Args:
        path: as for :func:`resolve_optical` (or :func:`resolve_sar` with ``sar=True``).
        what: role for messages, e.g. ``"optical image"``.
        sar: the input is Sentinel-1.

    Returns:
        ``(dataset, info)`` as :func:`mmcanet.raster_read.open_raster` gives them.
    """
    name = resolve_sar(path) if sar else resolve_optical(path)
    given = os.fspath(path)
    try:
        return open_raster(name, what, shown=given if name != given else None)
    finally:
        release(name)  # the open VRT keeps what it needs; the in-memory file itself can go


def release(name: str) -> None:
    """Free an in-memory VRT made by :func:`resolve_optical` / :func:`resolve_sar` (no-op for files)."""
    if name.startswith("/vsimem/mmcanet-stack-"):
        gdal.Unlink(name)


def write_stack(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    sar: bool = False,
    progress: Callable[[float], None] | None = None,
    is_canceled: Callable[[], bool] | None = None,
) -> Path:
    """Write a product / band folder (or any raster) as one tiled, compressed multi-band GeoTIFF.

    For QGIS users and other tools that want one layer: the result is what :func:`resolve_optical`
    (or :func:`resolve_sar` with ``sar=True``) reads on the fly, with band descriptions, on the finest
    band's grid. Written to a temporary file and renamed on success; cancel or error leaves no file.

    Args:
        source: as for :func:`resolve_optical` / :func:`resolve_sar`.
        output: GeoTIFF to write.
        sar: the source is Sentinel-1 (VV, VH) rather than Sentinel-2.
        progress: called with the fraction done (0-1).
        is_canceled: polled while writing; True stops and removes the partial file.

    Returns:
        The output path.

    Raises:
        InputError: bad input or output (naming it); CancelledError when cancelled;
        MMCANetError when writing fails.
    """
    from .errors import CancelledError, MMCANetError
    from .gdal_calls import gdal_errors
    from .output_files import check_writable, finish_geotiff, remove_stale_partials, temp_path_for
    from .outputs import check_outputs
    from .raster_write import geotiff_creation_options

    role = "SAR input" if sar else "optical input"
    out = check_writable(output, "output")
    src, info = open_input(source, role, sar=sar)
    check_outputs({"output": output}, {role: source})
    remove_stale_partials(out)
    tmp = temp_path_for(out)
    cancelled = False

    def callback(fraction: float, _msg: object, _data: object) -> int:
        nonlocal cancelled
        if progress is not None:
            progress(min(1.0, max(0.0, fraction)))
        if is_canceled is not None and is_canceled():
            cancelled = True
            return 0
        return 1

    try:
        opts = geotiff_creation_options(info.dtype, 256, info.width, info.height)
        with gdal_errors() as log:
            written = gdal.Translate(str(tmp), src, options=gdal.TranslateOptions(creationOptions=opts, callback=callback))
            ok = written is not None
            written = None  # closes the file
        if cancelled:
            raise CancelledError("stacking cancelled; no output was written")
        if not ok or log.failures:
            raise MMCANetError(f"output '{out}': could not be written ({(log.failures or [log.last()])[0]}); is the disk full?")
        finish_geotiff(tmp, out, width=info.width, height=info.height, count=info.count, what=f"output '{out}'")
    finally:
        for leftover in (tmp, Path(f"{tmp}.aux.xml")):
            if leftover.exists():
                leftover.unlink()
    return out
