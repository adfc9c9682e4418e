"""Small seeded GeoTIFFs for tests: real CRS and transform, Sentinel-1 / Sentinel-2 conventions.

S2: 13 bands uint16 DN (reflectance x 10000), band descriptions B1..B12 (or 12 L2A bands).
S1: 2 bands float32 backscatter in dB (VV, VH), or linear power.
Fields are spatially smooth (a sum of a few random sinusoids) so that a small convolutional model
gives different outputs near tile borders when blending is wrong, and a bright blob plays a cloud.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from osgeo import gdal, osr

S2_L1C = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
S2_L2A = tuple(b for b in S2_L1C if b != "B10")
UTM31N = 32631
ORIGIN = (600000.0, 5000000.0)  # UTM 31N, west of Paris-ish latitude band; any valid place works

_GDAL = {np.dtype(np.uint8): gdal.GDT_Byte, np.dtype(np.uint16): gdal.GDT_UInt16, np.dtype(np.int16): gdal.GDT_Int16,
         np.dtype(np.float32): gdal.GDT_Float32, np.dtype(np.float64): gdal.GDT_Float64,
         np.dtype(np.complex64): gdal.GDT_CFloat32}


def smooth_field(rng: np.random.Generator, height: int, width: int, waves: int = 4, scale: float = 40.0) -> np.ndarray:
    """Smooth random field in [0, 1], float32 ``(height, width)`` (spatial scale ~``scale`` px)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    f = np.zeros((height, width), np.float32)
    for _ in range(waves):
        ky, kx = rng.normal(0, 1 / scale, 2)
        f += np.sin(2 * np.pi * (ky * y + kx * x) + rng.uniform(0, 2 * np.pi)).astype(np.float32)
    f -= f.min()
    return f / max(float(f.max()), 1e-6)


def write_raster(
    path: str | Path,
    array: np.ndarray,
    *,
    epsg: int | None = UTM31N,
    geotransform: Sequence[float] | None = None,
    nodata: float | None = None,
    descriptions: Sequence[str] = (),
    tiled: bool = False,
) -> Path:
    """Write a ``(bands, H, W)`` array as GeoTIFF; ``epsg=None`` and ``geotransform=None``: no georeferencing."""
    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[None]
    path = Path(path)
    opts = ["COMPRESS=DEFLATE"] + (["TILED=YES", "BLOCKXSIZE=64", "BLOCKYSIZE=64"] if tiled else [])
    ds = gdal.GetDriverByName("GTiff").Create(str(path), arr.shape[2], arr.shape[1], arr.shape[0], _GDAL[arr.dtype], opts)
    if geotransform is not None:
        ds.SetGeoTransform(list(geotransform))
    if epsg is not None:
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(epsg)
        ds.SetProjection(srs.ExportToWkt())
    for i in range(arr.shape[0]):
        band = ds.GetRasterBand(i + 1)
        band.WriteArray(arr[i])
        if nodata is not None:
            band.SetNoDataValue(float(nodata))
        if i < len(descriptions):
            band.SetDescription(descriptions[i])
    ds.FlushCache()
    ds = None
    return path


def default_geotransform(res: float = 10.0, origin: tuple[float, float] = ORIGIN) -> tuple[float, ...]:
    """North-up geotransform with square ``res`` pixels and the upper-left corner at ``origin``."""
    return (origin[0], res, 0.0, origin[1], 0.0, -res)


# typical L1C DN of vegetated land, B1..B12 (B10 = cirrus, near 0 under clear sky)
LAND_DN = (1300, 1000, 900, 700, 1100, 2200, 2600, 2600, 2800, 900, 15, 1800, 1000)
CLOUD_DN = (6500, 6800, 6900, 7000, 7100, 7200, 7200, 7300, 7200, 4000, 300, 5000, 3500)


def s2_array(
    height: int,
    width: int,
    seed: int = 0,
    bands: int = 13,
    cloud: bool = True,
    dn_range: tuple[int, int] = (1, 10000),
    scale: float = 1.0,
) -> np.ndarray:
    """uint16 ``(bands, H, W)`` DN: smooth vegetated land + (optionally) one bright cloud blob in the middle-left.

    ``scale`` multiplies the DN before clipping to ``dn_range``: e.g. ``scale=6, dn_range=(1, 65535)``
    gives bright DN above 10000 (snow, specular glint, saturated cloud tops), which the default never has.
    """
    rng = np.random.default_rng(seed)
    keep = [i for i in range(13) if bands == 13 or i != 10]
    base = smooth_field(rng, height, width)
    out = np.empty((bands, height, width), np.float32)
    for k, b in enumerate(keep):
        detail = smooth_field(rng, height, width, waves=2, scale=15.0)
        out[k] = LAND_DN[b] * (0.6 + 0.5 * base + 0.3 * detail)
    if cloud:
        y, x = np.mgrid[0:height, 0:width]
        cy, cx, r = height * 0.5, width * 0.4, max(3.0, min(height, width) * 0.2)
        blob = np.clip(1.5 - np.hypot(y - cy, x - cx) / r, 0, 1)
        for k, b in enumerate(keep):
            out[k] = out[k] * (1 - blob) + CLOUD_DN[b] * blob
    return np.clip(out * scale, dn_range[0], dn_range[1]).astype(np.uint16)


def s1_array(height: int, width: int, seed: int = 1, linear: bool = False) -> np.ndarray:
    """float32 ``(2, H, W)``: VV ~ -18..-6 dB, VH ~ -26..-12 dB (or linear power)."""
    rng = np.random.default_rng(seed)
    vv = -18 + 12 * smooth_field(rng, height, width)
    vh = -26 + 14 * smooth_field(rng, height, width)
    db = np.stack([vv, vh]).astype(np.float32)
    return (10 ** (db / 10)).astype(np.float32) if linear else db


def write_s2(
    path: str | Path,
    height: int = 64,
    width: int = 80,
    *,
    seed: int = 0,
    level: str = "L1C",
    epsg: int | None = UTM31N,
    geotransform: Sequence[float] | None = None,
    nodata: float | None = 0,
    descriptions: bool = True,
    array: np.ndarray | None = None,
    band_order: Sequence[str] | None = None,
) -> Path:
    """Write a Sentinel-2-like GeoTIFF (13 L1C or 12 L2A bands, uint16, band descriptions).

    ``array`` is in the standard band order; ``band_order`` (a permutation of the level's band names)
    writes the bands in that order instead, each with its own name as description, so a reader that
    ignores the descriptions sees the wrong bands.
    """
    names = S2_L1C if level == "L1C" else S2_L2A
    arr = s2_array(height, width, seed, bands=len(names)) if array is None else array
    if band_order is not None:
        if sorted(band_order) != sorted(names):
            raise ValueError(f"band_order {band_order} is not a permutation of {names}")
        arr = arr[[names.index(b) for b in band_order]]
        names = tuple(band_order)
    gt = geotransform if geotransform is not None else (default_geotransform() if epsg is not None else None)
    return write_raster(path, arr, epsg=epsg, geotransform=gt, nodata=nodata,
                        descriptions=names if descriptions else ())


def write_s1(
    path: str | Path,
    height: int = 64,
    width: int = 80,
    *,
    seed: int = 1,
    linear: bool = False,
    epsg: int | None = UTM31N,
    geotransform: Sequence[float] | None = None,
    nodata: float | None = None,
    array: np.ndarray | None = None,
    order: tuple[str, str] = ("VV", "VH"),
) -> Path:
    """Write a Sentinel-1-like GeoTIFF (2 bands float32, VV / VH, dB or linear).

    ``array`` is ``(VV, VH)``; ``order=("VH", "VV")`` stores VH as band 1 (described so) and VV as band 2.
    """
    arr = s1_array(height, width, seed, linear) if array is None else array
    if tuple(order) not in (("VV", "VH"), ("VH", "VV")):
        raise ValueError(f"order {order}: expected ('VV', 'VH') or ('VH', 'VV')")
    if order[0] == "VH":
        arr = arr[::-1]
    gt = geotransform if geotransform is not None else (default_geotransform() if epsg is not None else None)
    unit = "linear" if linear else "dB"
    return write_raster(path, arr, epsg=epsg, geotransform=gt, nodata=nodata, descriptions=tuple(f"{p}_{unit}" for p in order))


def write_mask(
    path: str | Path,
    array: np.ndarray,
    *,
    nodata: float | None = None,
    epsg: int | None = UTM31N,
    geotransform: Sequence[float] | None = None,
) -> Path:
    """Write a 1-band uint8 cloud mask (non-zero = cloud), optionally with a nodata value and another grid."""
    gt = geotransform if geotransform is not None else (default_geotransform() if epsg is not None else None)
    return write_raster(path, np.asarray(array, np.uint8), epsg=epsg, geotransform=gt, nodata=nodata)


def read(path: str | Path) -> np.ndarray:
    """Read every band of a raster as ``(bands, H, W)``."""
    ds = gdal.Open(str(path))
    arr = ds.ReadAsArray()
    ds = None
    return arr[None] if arr.ndim == 2 else arr
