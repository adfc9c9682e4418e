"""Rule-based cloud and cloud-shadow detection for Sentinel-2 Level-1C top-of-atmosphere reflectance.

No training data, no dependencies beyond numpy. The cloud test is a fuzzy AND (minimum) of
spectral scores, each a linear ramp between two thresholds:

* bright in the visible (mean of B2, B3, B4) and in blue (B2);
* "white": the visible bands differ little from their mean (Fmask whiteness);
* haze-optimised transform HOT = B2 - 0.5 B4 - 0.08 is positive (clouds scatter blue like red);
* not snow: NDSI = (B3 - B11) / (B3 + B11) is low (snow is bright in the visible, dark in SWIR);
* not bright dry soil / built-up: NDMI = (B8 - B11) / (B8 + B11) is not clearly negative.

When the cirrus band B10 is present (L1C, 13 bands) a thin-cirrus score ``B10`` ramp is OR-ed
(maximum) into the result. The score is smoothed by a 3x3 mean, thresholded at 0.5 and dilated by 1 px.

Shadows: pixels that are dark in NIR and SWIR-1 both in absolute terms and relative to their
neighbourhood (local mean over 31 x 31 px), not bright in blue, and within ``shadow_search`` pixels of a
detected cloud. Dark water near clouds can be taken for shadow (no water test).

All inputs are reflectance in [0, 1] (DN / 10000). Works on the full 13-band L1C stack, the 12-band
L2A stack (no B10) or any set of named bands containing B2, B3, B4, B8 (or B8A) and B11 (B12 optional)
via :func:`detect_clouds_from_bands`; measured accuracy is in ``docs/DATA.md``
(``bench/cloud_detector_accuracy.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..bands import S2_BANDS_L1C, S2_BANDS_L2A, normalise_band_name
from ..errors import InputError

_ALIASES: dict[str, str] = {
    "COASTAL": "B1",
    "AEROSOL": "B1",
    "BLUE": "B2",
    "GREEN": "B3",
    "RED": "B4",
    "NIR": "B8",
    "NIR08": "B8",
    "NIR2": "B8A",
    "NARROWNIR": "B8A",
    "CIRRUS": "B10",
    "SWIR1": "B11",
    "SWIR16": "B11",
    "SWIR2": "B12",
    "SWIR22": "B12",
}
REQUIRED_BANDS: tuple[str, ...] = ("B2", "B3", "B4", "B11")
"""Bands :func:`detect_clouds_from_bands` needs, plus one of B8 / B8A."""
_USED_BANDS = frozenset(REQUIRED_BANDS) | {"B8", "B8A", "B10"}


@dataclass
class CloudMasks:
    """Result of the detector.

    Attributes:
        cloud: bool ``(H, W)``, True = cloud (dilated by ``dilation`` px).
        shadow: bool ``(H, W)``, True = cloud shadow (never True where ``cloud`` is).
        score: float32 ``(H, W)`` in [0, 1], the fuzzy cloud score before thresholding/dilation
            (usable as a soft mask / opacity estimate).
    """

    cloud: np.ndarray
    shadow: np.ndarray
    score: np.ndarray


def canonical_band_name(name: str) -> str:
    """Map 'B02', 'blue', 'SWIR16', 'b8a' ... to the canonical Sentinel-2 name ('B2', 'B11', 'B8A')."""
    key = name.strip().upper().replace("_", "").replace("-", "").replace(" ", "")
    if key in _ALIASES:
        return _ALIASES[key]
    return normalise_band_name(name)


def _ramp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Linear ramp: 0 at ``lo``, 1 at ``hi`` (decreasing when hi < lo), clipped to [0, 1], float32."""
    return np.clip((x - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0).astype(np.float32, copy=False)


def _safe_ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a - b) / (a + b) with 0 where the sum is not positive."""
    s = a + b
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(s > 1e-6, (a - b) / np.where(s > 1e-6, s, 1.0), 0.0)
    return r.astype(np.float32, copy=False)


def box_mean(x: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a ``(2 radius + 1)^2`` square window (edge-replicated), on the last two axes.

    Args:
        x: array ``(..., H, W)``.
        radius: half window in pixels (0 returns a float32 copy).

    Returns:
        float32 array, same shape.
    """
    x = np.asarray(x, dtype=np.float32)
    if radius <= 0:
        return x.copy()
    k = 2 * radius + 1
    pad = [(0, 0)] * (x.ndim - 2) + [(radius, radius), (radius, radius)]
    # float32 running sums are exact enough for tiles (sums of at most a few 1e5 values in [0, 1]),
    # float64 beyond, where cancellation between large partial sums would cost precision
    acc: type[np.floating[Any]] = np.float32 if x.shape[-1] * x.shape[-2] <= 1 << 18 else np.float64
    p: np.ndarray = np.pad(x, pad, mode="edge").astype(acc, copy=False)
    c = np.cumsum(p, axis=-2)
    c = np.concatenate([np.zeros_like(c[..., :1, :]), c], axis=-2)
    rows = c[..., k:, :] - c[..., :-k, :]
    c = np.cumsum(rows, axis=-1)
    c = np.concatenate([np.zeros_like(c[..., :, :1]), c], axis=-1)
    out = (c[..., :, k:] - c[..., :, :-k]) / (k * k)
    return out.astype(np.float32)


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of a bool ``(H, W)`` mask with a ``(2 radius + 1)^2`` square (separable max)."""
    out = np.asarray(mask, dtype=bool)
    if radius <= 0:
        return out.copy()
    for axis in (0, 1):
        n = out.shape[axis]
        acc = out.copy()
        for s in range(1, min(radius, n - 1) + 1):
            if axis == 0:
                acc[s:, :] |= out[:-s, :]
                acc[:-s, :] |= out[s:, :]
            else:
                acc[:, s:] |= out[:, :-s]
                acc[:, :-s] |= out[:, s:]
        out = acc
    return out


def dilate_far(mask: np.ndarray, radius: int) -> np.ndarray:
    """Approximate large-radius square dilation (via a box mean > 0); cost independent of ``radius``."""
    if radius <= 0:
        return np.asarray(mask, dtype=bool).copy()
    return box_mean(np.asarray(mask, dtype=np.float32), radius) > 1e-6


def cloud_score(bands: Mapping[str, np.ndarray]) -> np.ndarray:
    """Fuzzy per-pixel cloud score in [0, 1] from named TOA reflectance bands.

    Args:
        bands: canonical name -> float reflectance ``(H, W)``; needs B2, B3, B4, B11 and B8 or B8A;
            B10 (cirrus) is used when present.

    Returns:
        float32 ``(H, W)``; 1 = certainly cloud.
    """
    blue, green, red = bands["B2"], bands["B3"], bands["B4"]
    nir = bands["B8"] if "B8" in bands else bands["B8A"]
    swir1 = bands["B11"]
    vis = (blue + green + red) / np.float32(3.0)
    whiteness = (np.abs(blue - vis) + np.abs(green - vis) + np.abs(red - vis)) / np.maximum(vis, 1e-6)
    hot = blue - 0.5 * red - 0.08
    ndsi = _safe_ratio(green, swir1)
    ndmi = _safe_ratio(nir, swir1)
    score = _ramp(vis, 0.12, 0.25)
    score = np.minimum(score, _ramp(blue, 0.10, 0.20))
    score = np.minimum(score, _ramp(whiteness, 0.8, 0.5))
    score = np.minimum(score, _ramp(hot, -0.03, 0.02))
    score = np.minimum(score, _ramp(ndsi, 0.6, 0.35))
    score = np.minimum(score, _ramp(ndmi, -0.25, -0.05))
    if "B10" in bands:
        # thin cirrus: B10 sees only high, ice clouds (water vapour absorbs the surface signal)
        score = np.maximum(score, _ramp(bands["B10"], 0.012, 0.03))
    return score.astype(np.float32, copy=False)


def shadow_candidates(bands: Mapping[str, np.ndarray], *, local_radius: int = 15) -> np.ndarray:
    """Pixels dark enough in NIR and SWIR-1 to be cloud shadow (before the near-cloud test).

    Args:
        bands: canonical name -> reflectance ``(H, W)``.
        local_radius: half window (px) of the neighbourhood the darkness is compared with.

    Returns:
        bool ``(H, W)``.
    """
    nir = bands["B8"] if "B8" in bands else bands["B8A"]
    swir1 = bands["B11"]
    csi = (nir + swir1) / np.float32(2.0)
    local = box_mean(csi, local_radius)
    dark_abs = csi < 0.16
    dark_rel = csi < 0.75 * local
    not_bright_vis = bands["B2"] < 0.16
    return dark_abs & dark_rel & not_bright_vis


def detect_clouds_from_bands(
    bands: Mapping[str, np.ndarray],
    *,
    threshold: float = 0.5,
    dilation: int = 1,
    shadow_search: int = 40,
) -> CloudMasks:
    """Detect clouds and cloud shadows from a dict of named bands (any subset with the required ones).

    Args:
        bands: band name -> TOA reflectance ``(H, W)`` in [0, 1]. Names may be Sentinel-2 names in any
            spelling ('B02', 'B8A') or 'blue', 'green', 'red', 'nir', 'swir16', 'swir22', 'cirrus'.
            Required: B2, B3, B4, B11 and B8 or B8A. Optional: B10 (cirrus test).
        threshold: cloud score above which a pixel is cloud.
        dilation: cloud mask dilation (px) for fuzzy edges.
        shadow_search: shadows are kept only within this many pixels of a cloud.

    Returns:
        :class:`CloudMasks` (bool cloud, bool shadow, float32 score), each ``(H, W)``.

    Raises:
        InputError: when a required band is missing or shapes differ.
    """
    canon: dict[str, np.ndarray] = {}
    shape: tuple[int, ...] | None = None
    for name, arr in bands.items():
        a = np.asarray(arr)
        if a.ndim != 2:
            raise InputError(f"band {name!r}: expected a 2-D (H, W) array, got shape {a.shape}")
        if shape is None:
            shape = a.shape
        elif a.shape != shape:
            raise InputError(f"band {name!r}: shape {a.shape} differs from {shape}")
        key = canonical_band_name(name)
        if key in _USED_BANDS:  # only the bands the tests read are cleaned (a full stack has 13)
            canon[key] = np.nan_to_num(a.astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0)
    missing = [b for b in REQUIRED_BANDS if b not in canon]
    if "B8" not in canon and "B8A" not in canon:
        missing.append("B8 or B8A")
    if missing:
        raise InputError(f"cloud detection needs bands {missing}; got {sorted(bands)}")
    score = box_mean(cloud_score(canon), 1)
    core = score >= threshold
    cloud = dilate(core, dilation)
    if core.any():
        near = dilate_far(core, shadow_search)
        shadow = shadow_candidates(canon) & near & ~cloud
    else:
        shadow = np.zeros_like(cloud)
    return CloudMasks(cloud=cloud, shadow=shadow, score=score)


def detect_clouds(
    s2: np.ndarray,
    *,
    threshold: float = 0.5,
    dilation: int = 1,
    shadow_search: int = 40,
) -> CloudMasks:
    """Detect clouds and shadows in a Sentinel-2 stack in model band order.

    Args:
        s2: float reflectance in [0, 1], ``(13, H, W)`` Level-1C order (``S2_BANDS_L1C``) or
            ``(12, H, W)`` Level-2A order (``S2_BANDS_L2A``, no B10).
        threshold: cloud score threshold (see :func:`detect_clouds_from_bands`).
        dilation: cloud mask dilation in pixels.
        shadow_search: maximum cloud-to-shadow distance in pixels.

    Returns:
        :class:`CloudMasks` with bool ``(H, W)`` cloud and shadow masks and the float32 score.

    Raises:
        InputError: when the band count is neither 13 nor 12.
    """
    if s2.ndim != 3 or s2.shape[0] not in (12, 13):
        raise InputError(f"cloud detection expects a (13 or 12, H, W) S2 array, got shape {s2.shape}")
    names = S2_BANDS_L1C if s2.shape[0] == 13 else S2_BANDS_L2A
    bands = {n: s2[i] for i, n in enumerate(names)}
    return detect_clouds_from_bands(bands, threshold=threshold, dilation=dilation, shadow_search=shadow_search)
