"""Cloud tools over whole raster files: detect a scene's clouds, add simulated clouds to a clear image.

:func:`detect_scene` and :func:`simulate_scene` are the one entry point of the CLI (``mmcanet detect``,
``mmcanet simulate``) and of QGIS Processing (``mmcanet:detect_clouds``, ``mmcanet:simulate_clouds``).
Like :func:`mmcanet.inference.restore_scene` they take ``progress``, ``is_canceled`` and ``log``
callables, validate everything before the work starts, and write through a temporary file that is
renamed on success and removed on any error or cancel. The per-array rules live in
:mod:`.detect` and :mod:`.simulate`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..bands import S2_BANDS_L1C, S2_BANDS_L2A, S2_DN_SCALE, s2_file_bands
from ..errors import InputError
from ..output_files import check_writable
from ..outputs import check_outputs
from ..raster_read import RasterInfo, read_window
from ..raster_write import RasterWriter
from ..reporting import IsCanceled, Log, Progress, Reporter
from ..windows import Window

logger = logging.getLogger("mmcanet.clouds")

CLEAR, CLOUD, SHADOW, NODATA = 0, 1, 2, 255
"""Values of the detected mask (with ``binary``: 1 for cloud or shadow)."""
STRIP_ROWS = 1024
"""Rows detected at once; memory stays at one strip (13 x (1024 + 2 margin) x width floats)."""
MARGIN = 64
"""Context rows read above and below each strip (>= shadow search 40 + local window 15 + dilation)."""
MAX_SIMULATE_PIXELS = 8192 * 8192
"""Largest image simulated in one piece (the cloud field is drawn for the whole image in memory)."""


def s2_band_indices(info: RasterInfo, what: str) -> tuple[list[int], tuple[str, ...]]:
    """0-based file bands in model order (13 L1C or 12 L2A) and their names, from descriptions or count.

    Raises:
        InputError: when the raster has neither 13 nor 12 bands.
    """
    names, _ = s2_file_bands(info.count, info.descriptions, f"{what} '{info.path}'")
    default = S2_BANDS_L1C if info.count == 13 else S2_BANDS_L2A
    return [names.index(b) for b in default], default


def reflectance_divisor(sample: np.ndarray, dtype: np.dtype) -> float:
    """The DN scale (10000) for DN input, 1 for float input that is already reflectance (99th percentile <= 2)."""
    if np.dtype(dtype).kind == "f":
        v = sample[np.isfinite(sample)]
        if v.size and float(np.percentile(v, 99)) <= 2.0:
            return 1.0
    return S2_DN_SCALE


@dataclass
class DetectResult:
    """What :func:`detect_scene` wrote.

    Attributes:
        output: the mask GeoTIFF.
        cloud_fraction: fraction of valid pixels marked cloud.
        shadow_fraction: fraction of valid pixels marked shadow (0 with ``binary`` or without shadows).
    """

    output: Path
    cloud_fraction: float
    shadow_fraction: float


def detect_scene(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    binary: bool = False,
    shadows: bool = True,
    dilation: int = 1,
    strip_rows: int = STRIP_ROWS,
    extent: tuple[float, float, float, float] | None = None,
    extent_crs: str | None = None,
    progress: Progress | None = None,
    is_canceled: IsCanceled | None = None,
    log: Log | None = None,
) -> DetectResult:
    """Rule-based cloud / shadow mask of a Sentinel-2 raster, strip by strip (bounded memory).

    Args:
        source: Sentinel-2 raster (13-band L1C or 12-band L2A; DN = reflectance x 10000, or float
            reflectance 0-1), a .SAFE folder, its MTD_MSI*.xml, or a folder of band files.
        output: uint8 mask GeoTIFF on the same grid: 0 clear, 1 cloud, 2 shadow, 255 no data
            (``binary``: 1 cloud or shadow).
        binary: write 1 for cloud or shadow.
        shadows: mark cloud shadows.
        dilation: cloud mask dilation (px, >= 0).
        strip_rows: rows detected at once (memory); the mask does not depend on it.
        extent: area of interest ``(xmin, ymin, xmax, ymax)`` (None: the whole image); only the pixels it
            touches are read and written, snapped outward to the input grid (as for a restore).
        extent_crs: CRS of ``extent`` (None: the input's).
        progress: fraction done (0-1) after every strip.
        is_canceled: polled before every strip; True stops with CancelledError and leaves no file.
        log: receives the summary line.

    Raises:
        InputError: bad input or output (before any work).
        CancelledError: cancelled; nothing is left.
    """
    from ..area import crop_to_extent
    from ..options import extent_problems
    from ..stacking import open_input
    from .detect import detect_clouds

    if dilation < 0:
        raise InputError(f"dilation {dilation}: must be >= 0")
    if strip_rows < 1:
        raise InputError(f"strip rows {strip_rows}: must be >= 1")
    if extent_problems(extent):
        raise InputError("; ".join(extent_problems(extent)))
    rep = Reporter(log, logger, progress, is_canceled)
    what = f"input '{os.fspath(source)}'"
    ds, info = open_input(source, "input")  # a SAFE product or band folder is stacked on the fly
    if extent is not None:
        ds, info, _ = crop_to_extent(ds, info, extent, extent_crs, what)
    order, _ = s2_band_indices(info, "input")
    check_writable(output, "output")
    check_outputs({"output": output}, {"input": source})
    probe = read_window(ds, Window(0, 0, min(info.width, 256), min(info.height, 256)), what).astype(np.float32)
    divisor = reflectance_divisor(probe, info.dtype)
    nodata = info.nodata[0]
    counts = np.zeros(4, dtype=np.int64)
    desc = "cloud or shadow (1), clear (0)" if binary else "0 clear, 1 cloud, 2 cloud shadow"
    rep.progress(0.0)
    with RasterWriter(
        output, width=info.width, height=info.height, count=1, dtype=np.uint8,
        geotransform=info.geotransform if info.georeferenced else None, crs_wkt=info.crs_wkt, nodata=NODATA,
        descriptions=(f"cloud mask: {desc}, 255 no data",),
        tags={"MMCANET_CLOUD_MASK": desc, "MMCANET_SOURCE": str(source)}, what="output", resampling="NEAREST",
    ) as writer:
        for row in range(0, info.height, strip_rows):
            rep.check_canceled("cloud detection cancelled; no output was written")
            h = min(strip_rows, info.height - row)
            top = max(0, row - MARGIN)
            bottom = min(info.height, row + h + MARGIN)
            raw = read_window(ds, Window(0, top, info.width, bottom - top), what).astype(np.float32)
            invalid = ~np.isfinite(raw).all(axis=0) | (np.nan_to_num(raw) == 0).all(axis=0)
            if nodata is not None:
                invalid |= (raw == np.float32(nodata)).all(axis=0)
            refl = np.nan_to_num(raw[order], nan=0.0) / np.float32(divisor)
            m = detect_clouds(refl, dilation=dilation)
            out = np.zeros(m.cloud.shape, dtype=np.uint8)
            if shadows:
                out[m.shadow] = CLOUD if binary else SHADOW
            out[m.cloud] = CLOUD
            out[invalid] = NODATA
            out = out[row - top : row - top + h]
            writer.write_rows(row, out[None])
            for k, v in ((0, CLEAR), (1, CLOUD), (2, SHADOW), (3, NODATA)):
                counts[k] += int((out == v).sum())
            rep.progress(min(0.999, (row + h) / info.height))
        path = writer.commit(rep.canceled)
    valid = max(1, int(counts[:3].sum()))
    result = DetectResult(output=path, cloud_fraction=float(counts[1]) / valid, shadow_fraction=float(counts[2]) / valid)
    rep.progress(1.0)
    rep.info(f"wrote {output}: cloud {100.0 * result.cloud_fraction:.1f} %, "
             f"shadow {100.0 * result.shadow_fraction:.1f} % of valid pixels")
    return result


@dataclass
class SimulateResult:
    """What :func:`simulate_scene` wrote.

    Attributes:
        output: the cloudy GeoTIFF.
        opacity_output: the opacity GeoTIFF, when requested.
        cloud_fraction: fraction of pixels with any cloud (opacity > 0).
    """

    output: Path
    opacity_output: Path | None
    cloud_fraction: float


def simulate_scene(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    seed: int = 0,
    thickness: str = "mixed",
    coverage: float | None = None,
    shadows: bool = True,
    opacity_output: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    is_canceled: IsCanceled | None = None,
    log: Log | None = None,
) -> SimulateResult:
    """Add simulated clouds (and shadows) to a clear Sentinel-2 raster; same grid, bands and data type.

    Args:
        source: clear Sentinel-2 raster (13-band L1C or 12-band L2A, DN = reflectance x 10000; band
            order from the band descriptions when they name the bands), at most
            :data:`MAX_SIMULATE_PIXELS` pixels.
        output: cloudy GeoTIFF to write.
        seed: random seed (same seed, same clouds).
        thickness: one of :data:`mmcanet.clouds.simulate.THICKNESS_MODES`.
        coverage: cloud fraction 0-1 (None: random).
        shadows: add cloud shadows.
        opacity_output: also write the cloud opacity (float32, 0-1).
        progress: fraction done (0-1) after each step (read, simulate, write).
        is_canceled: polled between steps; True stops with CancelledError and leaves no file.
        log: receives the summary line.

    Raises:
        InputError: bad input or output (before any work).
        CancelledError: cancelled; nothing is left.
    """
    from ..raster_read import open_raster
    from .simulate import THICKNESS_MODES, simulate_clouds

    if thickness not in THICKNESS_MODES:
        raise InputError(f"cloud thickness '{thickness}': choose one of {', '.join(THICKNESS_MODES)}")
    if coverage is not None and not 0.0 <= coverage <= 1.0:
        raise InputError(f"cloud coverage {coverage}: must be between 0 and 1")
    rep = Reporter(log, logger, progress, is_canceled)
    cancelled = "cloud simulation cancelled; no output was written"
    ds, info = open_raster(source, "clear image")
    order, names = s2_band_indices(info, "clear image")
    if info.width * info.height > MAX_SIMULATE_PIXELS:
        raise InputError(
            f"clear image '{source}' is {info.width}x{info.height} px; simulate works on patches up to "
            f"{MAX_SIMULATE_PIXELS} px (crop it first, e.g. gdal_translate -srcwin)"
        )
    check_writable(output, "output")
    if opacity_output:
        check_writable(opacity_output, "opacity output")
    check_outputs({"output": output, "opacity output": opacity_output}, {"clear image": source})
    rep.progress(0.0)
    raw = read_window(ds, Window(0, 0, info.width, info.height), f"clear image '{source}'").astype(np.float32)
    nodata = info.nodata[0]
    invalid = ~np.isfinite(raw).all(axis=0)
    if nodata is not None:
        invalid |= (raw == np.float32(nodata)).all(axis=0)
    divisor = np.float32(reflectance_divisor(raw, info.dtype))
    refl = np.clip(np.nan_to_num(raw[order], nan=0.0) / divisor, 0.0, 1.0)
    rep.progress(0.2)
    rep.check_canceled(cancelled)
    sim = simulate_clouds(refl, seed, thickness=thickness, coverage=coverage, shadows=shadows)
    rep.progress(0.8)
    rep.check_canceled(cancelled)
    out = np.empty_like(raw)
    out[order] = sim.cloudy * divisor
    if info.dtype.kind in "ui":
        out = np.rint(out)
    out[:, invalid] = raw[:, invalid]
    fraction = float((sim.opacity > 0).mean())
    tags = {
        "MMCANET_SIMULATED_CLOUDS": f"seed={seed} thickness={thickness} coverage={coverage} shadows={shadows}",
        "MMCANET_CLOUD_FRACTION": f"{fraction:.4f}",
    }
    writers = [_writer(output, out.astype(info.dtype), info, info.descriptions or names, tags, nodata)]
    try:
        if opacity_output:
            writers.append(_writer(opacity_output, sim.opacity[None].astype(np.float32), info, ("cloud opacity",),
                                   tags, None))
        rep.check_canceled(cancelled)
        paths = [w.commit() for w in writers]
    except BaseException:
        for w in writers:
            w.discard()
        raise
    rep.progress(1.0)
    rep.info(f"wrote {output} (cloud fraction {fraction:.3f})")
    return SimulateResult(output=paths[0], opacity_output=paths[1] if opacity_output else None, cloud_fraction=fraction)


def _writer(path: str | os.PathLike[str], data: np.ndarray, info: RasterInfo, descriptions: Any,
            tags: dict[str, str], nodata: float | None) -> RasterWriter:
    """A writer holding ``data`` (all rows written, not committed yet)."""
    w = RasterWriter(
        path, width=info.width, height=info.height, count=data.shape[0], dtype=data.dtype,
        geotransform=info.geotransform if info.georeferenced else None, crs_wkt=info.crs_wkt, nodata=nodata,
        descriptions=tuple(descriptions), tags=tags, what="output",
    )
    try:
        w.write_rows(0, data)
    except BaseException:
        w.discard()
        raise
    return w
