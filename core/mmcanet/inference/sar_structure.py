"""SAR structure transfer: the field-scale detail of the fill under the cloud mask, predicted from the SAR.

Under thick cloud the network's fill carries the right colour at a coarse scale (after
:func:`~mmcanet.inference.blending.harmonise_fill`) but little of the field edges, rivers and roads the
SAR shows. The tile's own clear pixels tell how the SAR's detail maps to optical detail in THIS scene,
at THIS date, with THIS land cover: a ridge regression is fitted on them, per tile, from band-passed
SAR features (VV and VH at several scales) to the band-passed optical bands (Gaussian sigma 1 minus
sigma ``sigma``), and applied under the mask, where the fill's own detail below ``sigma`` px is replaced
by the predicted one. Colour and level above ``sigma`` px stay the network's.

It is a linear, per-scene model with 2 x 4 + 1 coefficients per band, fitted on thousands of pixels,
so it cannot overfit a tile and costs a few tens of milliseconds; where the tile has too few clear
pixels to fit (``MIN_FIT_PX``), nothing changes. Measured through the engine in docs/QUALITY.md.
"""

from __future__ import annotations

import math

import numpy as np

from .blending import _smooth, soft_mask

SAR_SCALES = (1.0, 2.0, 4.0, 8.0)
"""Gaussian scales (px) of the SAR features (VV and VH smoothed at each, then band-passed)."""
MIN_FIT_PX = 256
"""Below this many clear pixels with SAR in a tile, the transfer is off for that tile."""
FULL_FIT_PX = 1024
"""From this many fitting pixels on the transfer applies in full (linear ramp from ``MIN_FIT_PX``)."""
RIDGE = 1e-2
"""Ridge penalty per fitting pixel, on standardised features."""
FINE_SIGMA = 1.0
"""Finest scale kept in the band-pass (speckle below it carries no optical detail)."""


HALF_RES_SIGMA = 4.0
"""Means at this scale and above are computed at half resolution and upsampled (4x fewer pixels to smooth;
the detail lost is far below what such a mean keeps)."""


def _down2(a: np.ndarray) -> np.ndarray:
    """2 x 2 block sums of the last two axes (an odd last row / column is repeated)."""
    h, w = a.shape[-2:]
    if h % 2 or w % 2:
        pad = [(0, 0)] * (a.ndim - 2) + [(0, h % 2), (0, w % 2)]
        a = np.pad(a, pad, mode="edge")
    return a[..., 0::2, 0::2] + a[..., 1::2, 0::2] + a[..., 0::2, 1::2] + a[..., 1::2, 1::2]


def _up2(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear 2x upsampling of the last two axes (block centres aligned), cropped to ``(h, w)``."""
    a = np.asarray(a, np.float32)
    for axis in (-1, -2):
        a = np.moveaxis(a, axis, -1)
        prev = np.concatenate([a[..., :1], a[..., :-1]], axis=-1)
        nxt = np.concatenate([a[..., 1:], a[..., -1:]], axis=-1)
        up = np.empty((*a.shape[:-1], 2 * a.shape[-1]), np.float32)
        up[..., 0::2] = 0.75 * a + 0.25 * prev
        up[..., 1::2] = 0.75 * a + 0.25 * nxt
        a = np.moveaxis(up, -1, axis)
    return a[..., :h, :w]


def _binomial(a: np.ndarray) -> np.ndarray:
    """Unnormalised 5-tap binomial smoothing (1 4 6 4 1) / 16 of the last two axes, zero outside: a Gaussian
    of sigma 1 in a few slices (cheaper than the box passes at this scale)."""
    for axis in (-1, -2):
        a = np.moveaxis(a, axis, -1)
        p = np.zeros((*a.shape[:-1], a.shape[-1] + 4), np.float32)
        p[..., 2:-2] = a
        out = 6.0 * p[..., 2:-2]
        out += 4.0 * (p[..., 1:-3] + p[..., 3:-1])
        out += p[..., :-4] + p[..., 4:]
        a = np.moveaxis(out * np.float32(1.0 / 16.0), -1, axis)
    return a


def _mean(a: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-weighted mean of ``a`` (``(k, h, w)``) over pixels with ``weight`` 1 (normalised convolution)."""
    if sigma >= HALF_RES_SIGMA:
        h, w = a.shape[-2:]
        s = math.sqrt(sigma * sigma - 0.5) / 2.0
        num, den = _smooth(_down2(a * weight), s), _smooth(_down2(weight), s)
        return _up2(num / np.maximum(den, np.float32(1e-6)), h, w).astype(np.float32, copy=False)
    smooth = _binomial if sigma == 1.0 else (lambda x: _smooth(x, sigma))
    num = smooth(a * weight)
    den = smooth(weight)
    return (num / np.maximum(den, np.float32(1e-6))).astype(np.float32, copy=False)


def _band_pass(a: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    return _mean(a, weight, FINE_SIGMA) - _mean(a, weight, sigma)


def transfer_sar_structure(
    restored: np.ndarray,
    optical: np.ndarray,
    sar_db: np.ndarray,
    mask: np.ndarray,
    invalid: np.ndarray,
    sigma: float,
) -> np.ndarray:
    """Replace the fill's detail under ``mask`` by the detail the SAR predicts, fitted on the tile's clear pixels.

    Args:
        restored: float32 ``(n, h, w)`` model output (0-1, optical band order), after harmonisation.
        optical: ``(n, h, w)`` the optical input on the same 0-1 scale (only its clear pixels are used).
        sar_db: float32 ``(2, h, w)`` VV, VH in dB; NaN where there is no SAR.
        mask: bool ``(h, w)`` cloud / shadow mask of the tile.
        invalid: bool ``(h, w)`` optical nodata pixels (never fitted on, unchanged).
        sigma: scale (px) above which the fill is kept; the detail from ``FINE_SIGMA`` to ``sigma`` is
            predicted. 0 returns ``restored`` unchanged.

    Returns:
        float32 ``(n, h, w)``: a new array, or ``restored`` itself when nothing applies.
    """
    if sigma <= 0 or not mask.any() or mask.all():
        return restored
    sar_ok = np.isfinite(sar_db).all(axis=0) & ~invalid
    # every clear pixel with SAR: the optical band-pass below takes its local means over clear pixels only,
    # so the cloud next to a pixel does not leak in (keeping 3 or 8 px away from the mask measured worse)
    fit = sar_ok & ~mask
    n_fit = int(fit.sum())
    gate = float(np.clip((n_fit - MIN_FIT_PX) / (FULL_FIT_PX - MIN_FIT_PX), 0.0, 1.0))
    if gate <= 0.0:
        return restored
    sar_w = sar_ok.astype(np.float32)
    sar = np.where(sar_ok, sar_db, np.float32(0.0)).astype(np.float32)
    feats = np.concatenate([_mean(sar, sar_w, s) for s in SAR_SCALES])  # (2 * len(SAR_SCALES), h, w)
    x_all = _band_pass(feats, sar_w, sigma).reshape(len(feats), -1).T.astype(np.float64)
    opt_w = (~invalid).astype(np.float32)
    # the clear optical's detail, its local means taken over clear pixels only: the cloud's brightness
    # next to a fitting pixel does not leak into its band-pass
    y = _band_pass(np.asarray(optical, np.float32), opt_w * ~mask, sigma).reshape(len(optical), -1).T
    sel = fit.reshape(-1)
    x_fit, y_fit = x_all[sel], y[sel].astype(np.float64)
    mu, sd = x_fit.mean(axis=0), x_fit.std(axis=0) + 1e-6
    a = np.concatenate([(x_fit - mu) / sd, np.ones((n_fit, 1))], axis=1)
    reg = RIDGE * n_fit * np.eye(a.shape[1])
    reg[-1, -1] = 0.0  # the intercept is not penalised
    coef = np.linalg.solve(a.T @ a + reg, a.T @ y_fit)
    detail = (((x_all - mu) / sd) @ coef[:-1] + coef[-1]).T.reshape(restored.shape).astype(np.float32)
    low = _mean(restored, opt_w, sigma)
    # the soft mask edge of harmonise_fill, only where the SAR is there, scaled by how well the fit is supported
    m = soft_mask(mask, opt_w) * sar_w * np.float32(gate)
    return (restored + m * (low + detail - restored)).astype(np.float32, copy=False)
