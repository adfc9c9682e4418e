"""Simulated clouds on clear Sentinel-2 images (the clear image is then a perfectly aligned target).

Method (after Czerkawski et al., "SatelliteCloudGenerator", Remote Sensing 2023, 15(17):4138):

1. Fractal value noise (several octaves of smoothly interpolated random grids, each octave half the
   cell size and ``persistence`` times the amplitude of the previous) gives a cloud field.
2. Shaping: *thick* clouds threshold the field at the quantile giving the requested coverage and
   ramp the opacity from 0 to 1 over a soft edge (opaque cores, feathered borders); *thin* clouds map
   a second, coarser field onto low opacities (0 to 0.2-0.55) over most of the image; *mixed* combines
   both: ``a = 1 - (1 - a_thick) (1 - a_thin)``.
3. Per band: ``out = ground (1 - a_b) + a_b * brightness_b * texture`` with ``brightness_b`` fitted
   from real thick clouds (:data:`CLOUD_BRIGHTNESS`), a per-image brightness factor (0.85-1.1), a mild
   spatial texture, and band-dependent transparency of the *thin* parts (SWIR sees through haze more
   than the visible: ``a_b = a (1 - k_b (1 - a))``).
4. ``ground`` is the clear image blurred in proportion to the opacity (light scattered by the cloud)
   and darkened by shadows: the thick-cloud opacity shifted by a random offset, darkening 0.3-0.6.

Everything is numpy; a 13 x 256 x 256 image takes ~ 30-60 ms. The same seed gives the same clouds.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..bands import S2_BANDS_L1C, S2_DN_SCALE
from ..errors import InputError
from .detect import box_mean, detect_clouds

CLOUD_BRIGHTNESS: np.ndarray = np.array(
    [0.4722, 0.4866, 0.4542, 0.5029, 0.5016, 0.5488, 0.5777, 0.5529, 0.6107, 0.2793, 0.0070, 0.5215, 0.4225],
    dtype=np.float32,
)
"""TOA reflectance of thick cloud per L1C band (B1..B12 incl. B8A and B10), 0-1 scale.

Fitted with :func:`fit_cloud_brightness` (median over images of each image's median reflectance of
the detector's most certain, bright cloud pixels) on the real cloudy patches in
``../shared/data/sen12mscr-triplets`` and ``../shared/data/s2-cloudy-clear-pairs`` (28 of the 58 images
have >= 500 such pixels). Refit with::

    .venv/bin/python -m mmcanet.clouds.simulate --fit ../shared/data/sen12mscr-triplets/*_s2_cloudy.tif \
        ../shared/data/s2-cloudy-clear-pairs/*_s2_cloudy.tif
"""

THIN_TRANSPARENCY: np.ndarray = np.array(
    [0.0, 0.0, 0.05, 0.1, 0.15, 0.2, 0.2, 0.25, 0.25, 0.2, 0.0, 0.45, 0.55], dtype=np.float32
)
"""k_b: how much more transparent thin (a < 1) cloud is in each band than in B1/B2 (0 = same)."""

THICKNESS_MODES: tuple[str, ...] = ("mixed", "thin", "thick")

_B10, _SWIR = S2_BANDS_L1C.index("B10"), [S2_BANDS_L1C.index("B11"), S2_BANDS_L1C.index("B12")]
BRIGHT_FACTOR: tuple[float, float] = (1.2, 1.6)
"""Range of the factor on :data:`CLOUD_BRIGHTNESS` for :func:`bright_cloud_brightness` (visible ~0.58-0.78)."""


def bright_cloud_brightness(rng: np.random.Generator) -> np.ndarray:
    """A thick-cloud spectrum (13 L1C bands) brighter than :data:`CLOUD_BRIGHTNESS`: real overcast and ice cloud.

    The table was fitted on SEN12MS-CR patches whose thick cloud is 0.47-0.58 in the visible; fully
    clouded real dates reach 0.69-0.85 (the SEN12MS-CR-TS patch in ``../shared/data``), and high (ice)
    cloud is bright in the cirrus band B10 and dark in SWIR. The table times :data:`BRIGHT_FACTOR`; half
    the time ice cloud on top: B10 0.05-0.25, B11 and B12 x 0.3-0.7. For ``simulate_clouds(brightness=...)``.
    """
    out = CLOUD_BRIGHTNESS * np.float32(rng.uniform(*BRIGHT_FACTOR))
    if rng.random() < 0.5:
        out[_B10] = rng.uniform(0.05, 0.25)
        out[_SWIR] *= np.float32(rng.uniform(0.3, 0.7))
    return np.clip(out, 0.0, 0.95).astype(np.float32)


@dataclass
class SimulatedClouds:
    """Output of :func:`simulate_clouds`.

    Attributes:
        cloudy: float32 ``(bands, H, W)`` in [0, 1], the clear image with clouds and shadows.
        opacity: float32 ``(H, W)`` in [0, 1], cloud opacity (1 = opaque) in the reference bands B1/B2.
        shadow: bool ``(H, W)``, pixels darkened by a cloud shadow and not hidden by cloud (opacity < 0.5).
    """

    cloudy: np.ndarray
    opacity: np.ndarray
    shadow: np.ndarray


def _as_rng(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _interp_axis(n: int, cell: float, offset: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Grid indices and smoothstep weights for ``n`` pixels sampled on a grid of ``cell``-pixel cells."""
    pos = np.arange(n, dtype=np.float32) / np.float32(cell) + np.float32(offset)
    idx = np.floor(pos).astype(np.int64)
    f = pos - idx
    w = f * f * (3.0 - 2.0 * f)
    return idx, w.astype(np.float32), int(idx[-1]) + 2


def fractal_noise(
    shape: tuple[int, int],
    rng: np.random.Generator,
    *,
    scale: float,
    octaves: int = 6,
    persistence: float = 0.5,
) -> np.ndarray:
    """Multi-octave value noise normalised to [0, 1].

    Args:
        shape: ``(H, W)`` in pixels.
        rng: random generator.
        scale: cell size of the coarsest octave in pixels (the size of the biggest structures).
        octaves: number of octaves; each halves the cell size (stops below 2 px).
        persistence: amplitude ratio between successive octaves (higher = rougher).

    Returns:
        float32 ``(H, W)`` with min 0 and max 1 (constant 0.5 if degenerate).
    """
    h, w = shape
    out = np.zeros((h, w), dtype=np.float32)
    amp = 1.0
    cell = max(float(scale), 2.0)
    for _ in range(octaves):
        iy, wy, gh = _interp_axis(h, cell, float(rng.random()))
        ix, wx, gw = _interp_axis(w, cell, float(rng.random()))
        grid = rng.random((gh, gw), dtype=np.float32)
        rows = grid[:, ix] * (1.0 - wx) + grid[:, ix + 1] * wx  # (gh, W)
        layer = rows[iy] * (1.0 - wy)[:, None] + rows[iy + 1] * wy[:, None]
        out += np.float32(amp) * layer
        amp *= persistence
        cell /= 2.0
        if cell < 2.0:
            break
    lo, hi = float(out.min()), float(out.max())
    if hi - lo < 1e-8:
        return np.full((h, w), 0.5, dtype=np.float32)
    return (out - lo) / np.float32(hi - lo)


def _thick_opacity(noise: np.ndarray, coverage: float, edge: float) -> np.ndarray:
    """Opacity 0..1: 0 outside the top ``coverage`` fraction of ``noise``, ramping to 1 over ``edge``."""
    if coverage <= 0.0:
        return np.zeros_like(noise)
    t = float(noise.min()) - 1e-6 if coverage >= 1.0 else float(np.quantile(noise, 1.0 - coverage))
    return np.clip((noise - np.float32(t)) / np.float32(edge), 0.0, 1.0)


def _blur(x: np.ndarray, radius: int) -> np.ndarray:
    """Separable blur of ``(C, H, W)`` float32: two box passes of ``radius`` (a tent filter), edge-replicated."""
    out = np.asarray(x, dtype=np.float32)
    k = 2 * radius + 1
    for _ in range(2):
        for axis in (1, 2):
            pad = [(0, 0)] * 3
            pad[axis] = (radius, radius)
            p = np.pad(out, pad, mode="edge")
            n = out.shape[axis]
            acc = np.take(p, np.arange(0, n), axis=axis).copy()
            for i in range(1, k):
                acc += np.take(p, np.arange(i, i + n), axis=axis)
            out = acc / np.float32(k)
    return out


def _shift(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Shift a 2-D array by (dy, dx) pixels, filling the uncovered border with 0."""
    h, w = x.shape
    out = np.zeros_like(x)
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    if abs(dy) < h and abs(dx) < w:
        out[yd, xd] = x[ys, xs]
    return out


def simulate_clouds(
    clear: np.ndarray,
    seed: int | np.random.Generator,
    *,
    thickness: str = "mixed",
    coverage: float | None = None,
    shadows: bool = True,
    brightness: Sequence[float] | np.ndarray | None = None,
) -> SimulatedClouds:
    """Add simulated clouds (and their shadows) to a clear Sentinel-2 image.

    Args:
        clear: float reflectance in [0, 1], ``(13, H, W)`` L1C order, or ``(12, H, W)`` L2A order (B10
            dropped from the brightness table); NaN is treated as 0.
        seed: integer seed or a ``numpy.random.Generator`` (consumed); same seed -> same output.
        thickness: "thick" (opaque blobs with soft edges), "thin" (low opacity haze over most of the
            image) or "mixed" (both).
        coverage: fraction of pixels under cloud (opacity > 0) in [0, 1]; ``None`` draws it uniformly
            from [0.1, 0.9] (thick / mixed) or [0.5, 1.0] (thin).
        shadows: add cloud shadows (thick component only).
        brightness: per-band thick-cloud reflectance overriding :data:`CLOUD_BRIGHTNESS`.

    Returns:
        :class:`SimulatedClouds` with ``cloudy`` float32 ``(bands, H, W)`` in [0, 1], ``opacity``
        float32 ``(H, W)`` and ``shadow`` bool ``(H, W)``.

    Raises:
        InputError: for a wrong shape or an unknown ``thickness``.
    """
    if clear.ndim != 3 or clear.shape[0] not in (12, 13):
        raise InputError(f"simulate_clouds expects a (13 or 12, H, W) reflectance array, got {clear.shape}")
    if thickness not in THICKNESS_MODES:
        raise InputError(f"thickness must be one of {THICKNESS_MODES}, got {thickness!r}")
    if coverage is not None and not 0.0 <= coverage <= 1.0:
        raise InputError(f"coverage must be in [0, 1], got {coverage}")
    rng = _as_rng(seed)
    nb, h, w = clear.shape
    x = np.nan_to_num(clear.astype(np.float32, copy=False), nan=0.0, posinf=1.0, neginf=0.0)
    x = np.clip(x, 0.0, 1.0)
    bright = np.asarray(CLOUD_BRIGHTNESS if brightness is None else brightness, dtype=np.float32)
    kthin = THIN_TRANSPARENCY
    if nb == 12:
        keep = [i for i in range(13) if i != 10]
        bright = bright[keep] if bright.shape[0] == 13 else bright
        kthin = kthin[keep]
    if bright.shape[0] != nb:
        raise InputError(f"brightness has {bright.shape[0]} values for {nb} bands")
    size = float(max(h, w))

    # --- opacity
    thick = np.zeros((h, w), dtype=np.float32)
    thin = np.zeros((h, w), dtype=np.float32)
    if thickness in ("thick", "mixed"):
        cov = float(rng.uniform(0.1, 0.9)) if coverage is None else coverage
        cov_thick = cov * float(rng.uniform(0.4, 1.0)) if thickness == "mixed" else cov
        field = fractal_noise((h, w), rng, scale=size * rng.uniform(0.25, 0.6), persistence=0.55)
        thick = _thick_opacity(field, cov_thick, edge=float(rng.uniform(0.05, 0.2)))
    if thickness in ("thin", "mixed"):
        if thickness == "thin":
            cov_thin = float(rng.uniform(0.5, 1.0)) if coverage is None else coverage
        else:
            cov_thin = cov
        field = fractal_noise((h, w), rng, scale=size * rng.uniform(0.4, 1.0), octaves=5, persistence=0.45)
        peak = float(rng.uniform(0.2, 0.55))
        thin = peak * _thick_opacity(field, cov_thin, edge=float(rng.uniform(0.2, 0.6)))
    opacity = 1.0 - (1.0 - thick) * (1.0 - thin)

    # --- ground: shadows, then blur in proportion to opacity
    ground = x
    shadow = np.zeros((h, w), dtype=bool)
    if shadows and thick.max() > 0:
        angle = rng.uniform(0.0, 2.0 * np.pi)
        dist = rng.uniform(0.03, 0.12) * size
        dy, dx = int(round(dist * np.sin(angle))), int(round(dist * np.cos(angle)))
        shade = box_mean(_shift(thick, dy, dx), 1)
        dark = float(rng.uniform(0.3, 0.6))
        ground = ground * (1.0 - dark * shade)[None]
        shadow = (shade >= 0.5) & (opacity < 0.5)
    radius = max(1, int(round(size / 128)))
    if opacity.max() > 0:
        blurred = _blur(ground, radius)
        wgt = np.clip(opacity * 1.5, 0.0, 1.0)[None]
        ground = ground * (1.0 - wgt) + blurred * wgt

    # --- composite per band
    texture = 0.9 + 0.2 * fractal_noise((h, w), rng, scale=size / 8, octaves=4)
    factor = float(rng.uniform(0.85, 1.1))
    a = opacity[None]
    a_b = a * (1.0 - kthin[:, None, None] * (1.0 - a))
    cloud_val = (bright * factor)[:, None, None] * texture[None]
    out = ground * (1.0 - a_b) + a_b * cloud_val
    return SimulatedClouds(
        cloudy=np.clip(out, 0.0, 1.0).astype(np.float32),
        opacity=opacity.astype(np.float32),
        shadow=shadow,
    )


def fit_cloud_brightness(paths: Iterable[str | Path], *, min_pixels: int = 500) -> np.ndarray:
    """Fit per-band thick-cloud reflectance from real cloudy 13-band L1C GeoTIFFs (DN = reflectance x 10000).

    For each image, the pixels with detector score >= 0.99 and visible mean >= 0.3 are taken as thick
    cloud; an image contributes its per-band median when it has at least ``min_pixels`` of them.

    Args:
        paths: cloudy S2 GeoTIFFs, 13 bands.
        min_pixels: minimum thick-cloud pixels for an image to count.

    Returns:
        float32 ``(13,)`` median over contributing images, reflectance 0-1.

    Raises:
        InputError: if a file cannot be read, has not 13 bands, or no image has enough cloud.
    """
    from ..rasterio_support import open_rasterio

    medians = []
    for p in paths:
        with open_rasterio(p) as src:
            if src.count != 13:
                raise InputError(f"{p}: not a readable 13-band Sentinel-2 L1C raster (it has {src.count} bands)")
            s2 = src.read().astype(np.float32) / S2_DN_SCALE
        m = detect_clouds(s2, dilation=0)
        sel = (m.score >= 0.99) & (s2[1:4].mean(axis=0) >= 0.3)
        if int(sel.sum()) >= min_pixels:
            medians.append(np.median(s2[:, sel], axis=1))
    if not medians:
        raise InputError("no image had enough thick-cloud pixels to fit cloud brightness")
    return np.median(np.stack(medians), axis=0).astype(np.float32)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Refit CLOUD_BRIGHTNESS from real cloudy S2 L1C GeoTIFFs.")
    parser.add_argument("--fit", nargs="+", required=True, metavar="TIF")
    args = parser.parse_args(argv)
    values = fit_cloud_brightness(args.fit)
    print("CLOUD_BRIGHTNESS = [" + ", ".join(f"{v:.4f}" for v in values) + "]")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
