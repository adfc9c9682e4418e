"""What unit SAR backscatter is stored in, and how to get dB: the one rule the engine and every reader use.

Accepted: backscatter in dB (about -30 to +10) and linear power / sigma0 (about 0 to 2, converted with
10 log10). Refused with a message that says how to fix the file: uncalibrated Sentinel-1 GRD digital
numbers (uint16 amplitude, hundreds), linear amplitude (the square root of power), scaled dB (e.g.
dB x 100 stored as int16), 8-bit pictures and complex (SLC) pixels. Restoring from any of these would
give plausible-looking nonsense, so nothing guesses a conversion for them.

:func:`sar_units` decides from sample values; :func:`sar_to_db` converts; :func:`sar_as_db` does both
for a whole image (the training / evaluation readers); :func:`scene_sar_units` samples a large raster
cheaply (the restore engine).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from osgeo import gdal

from .errors import InputError
from .raster_read import RasterInfo, read_window
from .windows import Window

Units = Literal["db", "linear"]

MAX_PLAUSIBLE_MEDIAN = 50.0
"""Median SAR value above which the input is neither dB (about -30..+10) nor linear power (about 0..2)."""
MIN_PLAUSIBLE_MEDIAN = -60.0
"""Median SAR value below which the input is not dB (about -30..+10): e.g. dB x 100 stored as int16."""
AMPLITUDE_RATIO = 0.4
"""Median cross-pol / co-pol ratio above which linear SAR values are taken for amplitude, not power.

Sentinel-1 cross-pol ratios in power are about -5 to -12 dB over land and water (0.06-0.3); read as
amplitude (the square root of power) the same scenes give -2.5 to -6 dB (0.25-0.56). 0.4 (-4 dB)
refuses most amplitude images and no typical power image; declaring the units linear skips the check."""
POWER_FLOOR = 1e-10
"""Smallest positive power converted (-100 dB); zero and negative power are missing values (NaN)."""


def looks_linear(values: np.ndarray) -> bool:
    """Guess whether finite SAR values are linear power (mostly in (0, 2]) rather than dB (mostly negative)."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return False
    return float(np.mean(v < 0)) < 0.05 and float(np.median(v)) < 2.0


def check_sar_dtype(dtype: np.dtype, what: str) -> None:
    """Refuse pixel types that cannot hold backscatter intensity (complex, 8-bit), before reading them.

    Raises:
        InputError: naming ``what``, the type found and what to do.
    """
    if np.dtype(dtype).kind == "c":
        raise InputError(
            f"{what}: has complex ({np.dtype(dtype)}) pixels (single-look complex data); expected backscatter "
            "intensity in dB or linear power. Calibrate and detect it first (SNAP: Radar > Radiometric > "
            "Calibrate to sigma0, then Terrain Correction)"
        )
    if np.dtype(dtype) == np.uint8:
        raise InputError(
            f"{what}: has 8-bit pixels, a rescaled picture rather than backscatter; give float32 dB or linear "
            "power (the product before it was scaled to 0-255)"
        )


def _check_not_amplitude(values: np.ndarray, what: str) -> None:
    if values.shape[0] < 2:
        return
    a = values[:2].astype(np.float64)
    ok = np.isfinite(a).all(axis=0) & (a > 0).all(axis=0)
    if int(ok.sum()) < 16:
        return
    r = a[1][ok] / a[0][ok]
    ratio = float(np.median(np.minimum(r, 1.0 / r)))  # whichever band is VV, cross-pol is the smaller
    if ratio > AMPLITUDE_RATIO:
        raise InputError(
            f"{what}: its linear values look like amplitude, not power (median VH/VV ratio {ratio:.2f}, "
            f"{10 * np.log10(ratio):.1f} dB as power; Sentinel-1 power gives about -5 to -12 dB). Square the "
            "values to get power (gdal_calc.py --calc=\"A*A\" --type=Float32), or, if they are power, declare "
            "it (mmcanet restore --sar-units linear)"
        )


def sar_units(values: np.ndarray, dtype: np.dtype, what: str, declared: str = "auto") -> Units:
    """Which unit SAR values are in, after refusing anything that is neither dB nor linear power.

    Args:
        values: ``(bands, N)`` sample values as read (bands 1 and 2 of the file, VV / VH in either
            order; one band allowed), missing values NaN. Any ``(bands, ...)`` shape is flattened.
        dtype: the file's pixel type (8-bit and complex are refused before looking at values).
        what: the input, for messages, e.g. ``"SAR image '/x/s1.tif'"``.
        declared: ``"auto"`` (detect), or ``"db"`` / ``"linear"`` as the user declared them: the
            plausibility checks still run, the dB / linear guess and the amplitude check do not.

    Returns:
        ``"db"`` or ``"linear"`` (power).

    Raises:
        InputError: complex or 8-bit pixels, scaled dB (median below -60), uncalibrated GRD digital
            numbers (median above 50), or linear values whose VH / VV ratio says amplitude.
    """
    check_sar_dtype(dtype, what)
    values = np.asarray(values)
    values = values.reshape(values.shape[0], -1) if values.ndim > 1 else values.reshape(1, -1)
    finite = values[np.isfinite(values)]
    if finite.size:
        median = float(np.median(finite))
        if median < MIN_PLAUSIBLE_MEDIAN:
            raise InputError(
                f"{what}: its values (median {median:.4g}) are below any backscatter in dB (about -30 to +10): "
                "they look like scaled dB, e.g. dB x 100 stored as integers. Divide by the scale factor first "
                "(gdal_calc.py --calc=\"A/100.0\" --type=Float32)"
            )
        if median > MAX_PLAUSIBLE_MEDIAN:
            kind = f"{np.dtype(dtype)} " if np.dtype(dtype).kind in "ui" else ""
            raise InputError(
                f"{what}: its {kind}values (median {median:.4g}) are neither backscatter in dB (about -30 to +10) "
                "nor linear power (about 0 to 2); they look like uncalibrated Sentinel-1 GRD digital numbers. "
                "Calibrate to sigma0 and terrain-correct first (SNAP: Radar > Radiometric > Calibrate, then "
                "Radar > Geometric > Terrain Correction), or use an analysis-ready Sentinel-1 product"
            )
    if declared in ("db", "linear"):
        return "db" if declared == "db" else "linear"
    if declared != "auto":
        raise InputError(f"SAR units '{declared}': choose one of auto, db, linear")
    if not looks_linear(finite):
        return "db"
    _check_not_amplitude(values, what)
    return "linear"


def sar_to_db(values: np.ndarray, units: Units) -> np.ndarray:
    """SAR values in ``units`` -> float32 dB; linear power is 10 log10(power), non-positive power -> NaN."""
    out = np.asarray(values, dtype=np.float32)
    if units == "db":
        return out
    with np.errstate(invalid="ignore", divide="ignore"):
        db = (10.0 * np.log10(np.maximum(out, np.float32(POWER_FLOOR)))).astype(np.float32)
    db[~(out > 0)] = np.nan  # zero / negative power and NaN are missing, as in the engine
    return db


def sar_as_db(values: np.ndarray, dtype: np.dtype, what: str) -> np.ndarray:
    """A whole SAR image ``(bands, H, W)`` (missing = NaN) in dB: :func:`sar_units` then :func:`sar_to_db`.

    Raises:
        InputError: see :func:`sar_units`.
    """
    return sar_to_db(values, sar_units(values, dtype, what))


def sample_sar(ds: gdal.Dataset, info: RasterInfo, what: str, n: int = 3, size: int = 64) -> np.ndarray:
    """Values of bands 1-2 in an ``n x n`` grid of small windows (cheap on any scene size), nodata -> NaN.

    Returns:
        float32 ``(min(count, 2), N)``.
    """
    w, h = info.width, info.height
    sw, sh = min(size, w), min(size, h)
    bands = list(range(1, min(info.count, 2) + 1))
    nodata = info.nodata[0]
    values = []
    for fy in np.linspace(0, 1, n):
        for fx in np.linspace(0, 1, n):
            win = Window(int(round(fx * (w - sw))), int(round(fy * (h - sh))), sw, sh)
            a = read_window(ds, win, what, bands=bands).astype(np.float32)
            if nodata is not None:
                a[a == np.float32(nodata)] = np.nan
            values.append(a.reshape(len(bands), -1))
    return np.concatenate(values, axis=1)


def scene_sar_units(ds: gdal.Dataset, info: RasterInfo, what: str, declared: str = "auto") -> Units:
    """:func:`sar_units` of a SAR raster of any size, from :func:`sample_sar` (the restore engine's check).

    Raises:
        InputError: see :func:`sar_units`; the pixel type is checked before anything is read.
    """
    check_sar_dtype(info.dtype, what)
    return sar_units(sample_sar(ds, info, what), info.dtype, what, declared)
