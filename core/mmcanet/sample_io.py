"""Reading the rasters of training / evaluation samples: headers, S2 DN, S1 dB, masks, the reader base.

Every reader in :mod:`mmcanet.datasets` and :mod:`mmcanet.sen12mscr` returns FULL, normalised images
(no crop, no randomness); cropping, flips and simulated clouds happen in one place,
:class:`mmcanet.trainset.TrainingDataset`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .bands import B10_FILL_DN, B10_INDEX, S2_BANDS_L1C, S2_BANDS_L2A, normalise_band_name
from .clouds.detect import detect_clouds
from .errors import InputError
from .normalization import Normalization
from .rasterio_support import import_rasterio, open_rasterio
from .sar_units import check_sar_dtype, sar_as_db

Sample = dict[str, Any]

@dataclass
class _RasterInfo:
    path: Path
    count: int
    height: int
    width: int
    descriptions: tuple[str, ...]
    dtype: np.dtype


def _natural_key(s: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def raster_info(path: str | Path) -> _RasterInfo:
    """Header of a raster (band count, size, band descriptions, pixel type) without reading pixels.

    Raises:
        InputError: when the file is missing or unreadable.
    """
    p = Path(path)
    with open_rasterio(p) as src:
        return _RasterInfo(p, src.count, src.height, src.width, tuple(d or "" for d in src.descriptions),
                           np.dtype(src.dtypes[0]))


def _s2_band_order(info: _RasterInfo) -> list[int] | None:
    """Index into the file's bands for each L1C band (-1 = B10 missing), from descriptions or count."""
    names = [normalise_band_name(d) for d in info.descriptions]
    if set(S2_BANDS_L1C) <= set(names):
        return [names.index(b) for b in S2_BANDS_L1C]
    if set(S2_BANDS_L2A) <= set(names):
        return [names.index(b) if b != "B10" else -1 for b in S2_BANDS_L1C]
    if info.count == 13:
        return list(range(13))
    if info.count == 12:
        idx = list(range(12))
        return idx[:B10_INDEX] + [-1] + idx[B10_INDEX:]
    return None


def check_raster(path: str | Path, kind: str) -> _RasterInfo:
    """Check that a raster exists and has the band count ``kind`` needs.

    Args:
        path: raster file.
        kind: "s2" (13 L1C or 12 L2A bands), "s1" (2 bands VV, VH) or "mask" (1 band).

    Returns:
        The raster header.

    Raises:
        InputError: naming the file when it is missing, unreadable or has the wrong band count.
    """
    info = raster_info(path)
    if kind == "s2":
        if _s2_band_order(info) is None:
            raise InputError(
                f"{info.path}: expected a Sentinel-2 raster with 13 (L1C) or 12 (L2A) bands, found {info.count}"
            )
    elif kind == "s1":
        if info.count != 2:
            raise InputError(f"{info.path}: expected a Sentinel-1 raster with 2 bands (VV, VH), found {info.count}")
    elif kind == "mask":
        if info.count != 1:
            raise InputError(f"{info.path}: expected a single-band cloud mask, found {info.count} bands")
    else:  # pragma: no cover - programming error
        raise ValueError(kind)
    return info


def _read_bands(path: Path, size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All bands as float32 ``(bands, H, W)`` with nodata / non-finite set to NaN, plus the invalid mask.

    ``size`` = ``(H, W)`` resamples bilinearly while reading (BigEarthNet's 20 m / 60 m bands onto 10 m).
    """
    rasterio = import_rasterio()
    with open_rasterio(path) as src:
        shape = None if size is None else (src.count, size[0], size[1])
        try:
            # GDAL converts to float32 while reading (exact for every integer type the readers meet)
            arr = src.read(out_shape=shape, out_dtype=np.float32, resampling=rasterio.enums.Resampling.bilinear)
        except rasterio.errors.RasterioIOError as exc:
            raise InputError(f"{path}: could not read its pixels ({exc})") from None
        nodata = src.nodatavals
    bad = ~np.isfinite(arr)
    for i, nd in enumerate(nodata):
        if nd is not None and np.isfinite(nd):
            bad[i] |= arr[i] == np.float32(nd)
    arr[bad] = np.nan
    return arr, bad.any(axis=0)


def read_s2_dn(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a Sentinel-2 raster as float32 DN ``(13, H, W)`` in L1C order (B10 filled for 12-band L2A).

    Bands are re-ordered by their descriptions when those name all bands. Invalid pixels are NaN.

    Returns:
        ``(dn, invalid)``: dn float32 ``(13, H, W)`` (NaN where invalid), invalid bool ``(H, W)``
        (nodata, non-finite, or 0 in every band).

    Raises:
        InputError: wrong band count or unreadable file.
    """
    info = check_raster(path, "s2")
    order = _s2_band_order(info)
    assert order is not None
    raw, invalid = _read_bands(info.path)
    dn = np.empty((13, info.height, info.width), dtype=np.float32)
    for i, j in enumerate(order):
        dn[i] = raw[j] if j >= 0 else B10_FILL_DN
    invalid = invalid | np.all(np.nan_to_num(raw, nan=0.0) == 0, axis=0)
    dn[:, invalid] = np.nan
    return dn, invalid


def read_s1_db(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a 2-band (VV, VH) Sentinel-1 raster in dB (the units rule of :func:`mmcanet.sar_units.sar_units`).

    Linear power is detected and converted; GRD digital numbers, amplitude, scaled dB, 8-bit and
    complex pixels are refused, exactly as the restore engine refuses them.

    Raises:
        InputError: wrong band count, unreadable file, or values that are neither dB nor linear power.

    Returns:
        ``(db, invalid)``: float32 ``(2, H, W)`` (NaN where invalid) and bool ``(H, W)``.
    """
    info = check_raster(path, "s1")
    check_sar_dtype(info.dtype, str(info.path))  # before reading: complex pixels do not cast to float
    values, invalid = _read_bands(info.path)
    db = sar_as_db(values, info.dtype, str(info.path))
    return db, invalid | ~np.isfinite(db).all(axis=0)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a single-band cloud mask as float32 ``(H, W)`` in [0, 1].

    0/1 masks are used as they are; masks whose maximum exceeds 1 are read as percent (max <= 100)
    or 8-bit (max <= 255) probabilities. Nodata / NaN -> 0.
    """
    info = check_raster(path, "mask")
    m, _ = _read_bands(info.path)
    m = np.nan_to_num(m[0], nan=0.0)
    mx = float(m.max()) if m.size else 0.0
    if mx > 1.0:
        m = m / (100.0 if mx <= 100.0 else 255.0)
    return np.clip(m, 0.0, 1.0).astype(np.float32)


def detector_mask(s2_reflectance: np.ndarray, *, shadows: bool = True) -> np.ndarray:
    """Cloud (and shadow) mask from the rule-based detector as float32 ``(H, W)`` 0/1.

    Args:
        s2_reflectance: ``(13, H, W)`` TOA reflectance (DN / 10000), NaN allowed.
        shadows: include cloud shadows in the mask.
    """
    m = detect_clouds(np.nan_to_num(s2_reflectance, nan=0.0))
    out = m.cloud | m.shadow if shadows else m.cloud
    return out.astype(np.float32)


class ImageReader(Dataset):
    """Base of the folder readers: sample ``i`` is a dict of full, normalised images (see datasets.py).

    Args:
        normalization: DN / dB -> [0, 1] mapping (default ``Normalization()``).
    """

    def __init__(self, normalization: Normalization | None) -> None:
        self.normalization = normalization or Normalization()

    def __len__(self) -> int:
        raise NotImplementedError

    def sample_key(self, index: int) -> str:
        """Identity of sample ``index`` across readers of the same files (for caches)."""
        raise NotImplementedError

    @staticmethod
    def _finish(arrays: dict[str, np.ndarray], sample_id: str, has_sar: bool) -> Sample:
        """Numpy ``(C, H, W)`` arrays -> float32 tensors, plus ``has_sar`` and ``id``."""
        sample: Sample = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in arrays.items()}
        sample["has_sar"] = torch.tensor(1.0 if has_sar else 0.0, dtype=torch.float32)
        sample["id"] = sample_id
        return sample


def list_triplet_ids(root: str | Path) -> list[str]:
    """Identifiers of the samples in a triplet / pair folder: ``{id}_s2_cloudy.tif`` files, natural order.

    Raises:
        InputError: if ``root`` is not a folder or holds no ``*_s2_cloudy.tif``.
    """
    r = Path(root)
    if not r.is_dir():
        raise InputError(f"{r}: not a folder")
    ids = sorted((p.name[: -len("_s2_cloudy.tif")] for p in r.glob("*_s2_cloudy.tif")), key=_natural_key)
    if not ids:
        raise InputError(f"{r}: no '*_s2_cloudy.tif' files (expected {{id}}_s2_cloudy.tif, {{id}}_s2_cloudfree.tif ...)")
    return ids
