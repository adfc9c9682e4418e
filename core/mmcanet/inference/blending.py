"""Blending: tile weights, the strip accumulator, the feathered restore weight, compositing with the input, nodata.

Everything that decides an output pixel's value from the model outputs lives here:

* :func:`restore_weight`: per tile, how much of the restored value replaces the input (1 under the
  cloud mask, feathered to 0 around it with ``keep_clear``; 0 on invalid pixels);
* :func:`composite_tile`: a tile's composited DN ``alpha * restored + (1 - alpha) * input`` (and,
  for the trust layer, its predicted error ``alpha * predicted + (1 - alpha) * kept_error``);
* :class:`StripAccumulator`: weighted sums of overlapping tiles (weights below);
* :func:`finish_pixels`: the blended mean to output DN (rounding, nodata, never a false nodata),
  the cloud-mask output, the per-pixel change output and the predicted-error output.

Weighted blending of overlapping tiles into a strip buffer whose size does not depend on the scene height.

Every tile's output is multiplied by a weight that is 1 in the tile's middle and falls off with a
raised cosine over the ``taper`` pixels next to each side that has a neighbour, down to a tiny weight
on the outermost pixels (where the model saw padding); the weight stays > 0 everywhere, so the
normalised sum ``sum(w * y) / sum(w)`` is defined at every covered pixel. For two neighbours that
overlap by exactly ``taper`` px the ramps add up to 1 (up to the tiny edge weight), so blending never
brightens or darkens the overlap, and a model that returns its input is reproduced exactly.

:class:`StripAccumulator` holds the weighted sums for one tile row's worth of raster rows (``rows x
width``); rows that no later tile can touch are popped, written and forgotten. The sum of the weights
factorises into a row profile times a column profile (:func:`weight_sums`), so it costs no plane.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .tiling import Tile, TilePlan

MASK_NODATA = 255
"""Value of nodata pixels in the cloud-mask output (1 cloud/shadow, 0 clear)."""
CHANGE_NODATA = -1.0
"""Value of nodata pixels in the per-pixel change output."""
ERROR_NODATA = -1.0
"""Value of nodata pixels in the predicted-error (uncertainty) output."""

HARMONISE_TAU = 0.1
"""Share of clear neighbours at and above which :func:`harmonise_fill` applies its full correction."""

EDGE_WEIGHT = 1e-3
"""Weight of a tile's outermost ``margin`` pixels where a neighbour overlaps them (> 0, so never 0 / 0)."""


def ramp(length: int, taper: int, start: bool, end: bool) -> np.ndarray:
    """1-D blending weight of a tile along one axis.

    Models see zero/reflect padding at a tile's border, so their outermost pixels are the least
    trustworthy: the first ``taper // 4`` px (the margin) of a ramp get a tiny weight (``EDGE_WEIGHT``),
    then a raised cosine rises to 1 over the next ``taper - 2 * margin`` px. Two neighbours overlapping by ``taper``
    px thus hand over smoothly in the middle of their overlap, each ignoring the other's border.

    Args:
        length: tile size along the axis (px).
        taper: width of each ramp (px), normally the overlap; 0 gives a flat weight.
        start: taper at index 0 (there is a neighbour before).
        end: taper at index ``length - 1`` (there is a neighbour after).

    Returns:
        float32 ``(length,)`` in (0, 1].
    """
    w = np.ones(length, dtype=np.float64)
    if taper > 0:
        m = taper // 4
        rise = taper - 2 * m
        i = np.arange(length, dtype=np.float64)
        up = np.clip((i - m + 0.5) / rise, 0.0, 1.0)
        g = np.maximum(0.5 - 0.5 * np.cos(math.pi * up), EDGE_WEIGHT)
        if start:
            w = np.minimum(w, g)
        if end:
            w = np.minimum(w, g[::-1])
    return w.astype(np.float32)


@functools.lru_cache(maxsize=32)
def tile_weight(height: int, width: int, taper: int, neighbours: tuple[bool, bool, bool, bool]) -> np.ndarray:
    """2-D blending weight of a tile: outer product of two :func:`ramp` profiles.

    Args:
        height: tile height (px).
        width: tile width (px).
        taper: ramp width (px), usually the tiles' overlap.
        neighbours: (top, bottom, left, right) sides that overlap another tile.

    Returns:
        float32 ``(height, width)`` weight in (0, 1], cached and read-only.
    """
    top, bottom, left, right = neighbours
    w = np.outer(ramp(height, taper, top, bottom), ramp(width, taper, left, right))
    w.flags.writeable = False
    return w


def weight_sums(plan: TilePlan, taper: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum of all tiles' weights, which factorises: ``W(y, x) = rows[y] * cols[x]``.

    Every tile weight is ``ramp(row profile) x ramp(column profile)``, the profile depends only on the
    tile's row (resp. column), and the tiles form a full grid; so the sum over tiles is the product of
    the per-axis sums and never needs a scene-wide (or strip-wide) weight plane.

    Args:
        plan: the tile plan.
        taper: ramp width (px), the overlap.

    Returns:
        float32 ``(height,)`` and ``(width,)``, both > 0 everywhere.
    """

    def axis(offsets: tuple[int, ...], size: int, length: int) -> np.ndarray:
        total = np.zeros(length, np.float64)
        for i, off in enumerate(offsets):
            total[off : off + size] += ramp(size, taper, i > 0, i < len(offsets) - 1)
        return total.astype(np.float32)

    return (axis(plan.row_offsets, plan.tile_height, plan.height), axis(plan.col_offsets, plan.tile_width, plan.width))


class StripAccumulator:
    """Weighted sums of overlapping tile outputs for one tile row's worth of full-width raster rows.

    Tiles must arrive tile row by tile row (top to bottom); within a tile row any order works. The
    buffer holds ``plan.tile_height`` raster rows starting at :attr:`row0`: memory is
    ``channels * tile_height * width * 4`` bytes, independent of the raster height. The weight sums
    are not stored per pixel (see :func:`weight_sums`).

    Args:
        plan: the tile plan.
        channels: number of channels accumulated per pixel.
        taper: ramp width (px) of the tile weights, normally ``plan.overlap``.
    """

    def __init__(self, plan: TilePlan, channels: int, taper: int) -> None:
        self.plan = plan
        self.channels = channels
        self.taper = taper
        self.rows = plan.tile_height
        self.row0 = 0
        self._row_w, self._col_w = weight_sums(plan, taper)
        self._sums = np.zeros((channels, self.rows, plan.width), dtype=np.float32)

    @property
    def nbytes(self) -> int:
        """Bytes held by the buffers."""
        return self._sums.nbytes + self._row_w.nbytes + self._col_w.nbytes

    def add(self, tile: Tile, values: np.ndarray) -> None:
        """Accumulate one tile, weighted by :func:`tile_weight` (:meth:`apply_weight` then :meth:`add_weighted`).

        Args:
            tile: the tile (its window must lie in the strip rows ``[row0, row0 + rows)``).
            values: float32 ``(channels, window.height, window.width)``; scaled by the weight in place.

        Raises:
            ValueError: when the tile lies outside the strip or shapes differ.
        """
        self.add_weighted(tile, self.apply_weight(tile, values))

    def apply_weight(self, tile: Tile, values: np.ndarray) -> np.ndarray:
        """Scale ``values`` by the tile's blending weight, in place, and return it.

        Touches no shared state, so tiles can be weighted on several threads at once.
        """
        window = tile.window
        if values.shape != (self.channels, window.height, window.width):
            raise ValueError(f"values shape {values.shape} != {(self.channels, window.height, window.width)}")
        weight = tile_weight(window.height, window.width, self.taper, tile.neighbours)
        np.multiply(values, weight, out=values)
        return values

    def add_weighted(self, tile: Tile, values: np.ndarray) -> None:
        """Accumulate values already scaled by :meth:`apply_weight` (one thread at a time)."""
        window = tile.window
        r0 = window.row_off - self.row0
        if r0 < 0 or r0 + window.height > self.rows or window.col_end > self.plan.width:
            raise ValueError(f"tile {window} outside the strip rows [{self.row0}, {self.row0 + self.rows})")
        if values.shape != (self.channels, window.height, window.width):
            raise ValueError(f"values shape {values.shape} != {(self.channels, window.height, window.width)}")
        self._sums[:, r0 : r0 + window.height, window.col_off : window.col_end] += values

    def finished(self, upto_row: int) -> tuple[int, np.ndarray]:
        """View of the weighted sums of the finished rows ``[row0, upto_row)``, valid until :meth:`advance`.

        Args:
            upto_row: first raster row that later tiles may still touch.

        Returns:
            ``(row_off, sums)``: the raster row of the first finished row and ``(channels, n, width)``.
        """
        n = upto_row - self.row0
        if n < 0 or n > self.rows:
            raise ValueError(f"cannot take rows up to {upto_row} from a strip starting at {self.row0}")
        return self.row0, self._sums[:, :n]

    def weight(self, rows: slice, cols: slice) -> np.ndarray:
        """Weight sums ``(n, m)`` of raster rows ``rows`` and columns ``cols`` (absolute, step 1)."""
        return np.outer(self._row_w[rows], self._col_w[cols])

    def advance(self, upto_row: int) -> None:
        """Forget rows before ``upto_row`` and shift the strip so it starts there."""
        n = upto_row - self.row0
        if n < 0 or n > self.rows:
            raise ValueError(f"cannot advance to row {upto_row} from a strip starting at {self.row0}")
        keep = self.rows - n
        if keep > 0 and n > 0:
            self._sums[:, :keep] = self._sums[:, n:].copy()
        self._sums[:, keep:] = 0.0
        self.row0 = upto_row

    def pop(self, upto_row: int) -> tuple[int, np.ndarray]:
        """Take the finished rows ``[row0, upto_row)`` out of the strip as a weighted mean.

        Returns:
            ``(row_off, mean)``: the raster row of the first popped row and the weighted mean
            float32 ``(channels, upto_row - row0, width)``.
        """
        row_off, sums = self.finished(upto_row)
        mean = sums / self.weight(slice(row_off, upto_row), slice(0, self.plan.width))
        self.advance(upto_row)
        return row_off, mean.astype(np.float32, copy=False)


# ----------------------------------------------------------------------------------------------------
# Restore weight (feathered cloud mask) and compositing with the input
# ----------------------------------------------------------------------------------------------------


def _sliding(a: np.ndarray, radius: int, op: str) -> np.ndarray:
    """Separable ``(2 radius + 1)^2`` max or mean filter of a 2-D array (edges: window clipped)."""
    out = a
    for axis in (0, 1):
        n = out.shape[axis]
        if op == "max":
            pad = [(0, 0), (0, 0)]
            pad[axis] = (radius, radius)
            padded = np.pad(out, pad, mode="edge")
            acc = np.take(padded, range(0, n), axis=axis)
            for k in range(1, 2 * radius + 1):
                acc = np.maximum(acc, np.take(padded, range(k, k + n), axis=axis))
            out = acc
        else:
            c = np.cumsum(np.moveaxis(out, axis, 0), axis=0, dtype=np.float64)
            c = np.concatenate([np.zeros((1, *c.shape[1:])), c])
            i = np.arange(n)
            hi, lo = np.minimum(i + radius + 1, n), np.maximum(i - radius, 0)
            mean = (c[hi] - c[lo]) / (hi - lo)[:, None]
            out = np.moveaxis(mean, 0, axis)
    return out


def feather(mask: np.ndarray, radius: int) -> np.ndarray:
    """Soft restore weight: 1 on the mask, falling linearly to 0 over ``2 * radius`` px outside it.

    Args:
        mask: bool ``(H, W)``.
        radius: px.

    Returns:
        float32 ``(H, W)`` in [0, 1].
    """
    m = mask.astype(np.float32)
    if radius > 0 and mask.any() and not mask.all():
        m = _sliding(_sliding(m, radius, "max"), radius, "mean")
    return np.clip(m, 0.0, 1.0).astype(np.float32)


def restore_weight(
    mask: np.ndarray | None, invalid: np.ndarray, keep_clear: bool, radius: int, clear_weight: float = 0.0
) -> np.ndarray:
    """How much of the restored value replaces the input in one tile (``alpha``).

    Args:
        mask: bool ``(h, w)`` cloud or shadow, or None (no mask: every pixel is restored).
        invalid: bool ``(h, w)`` nodata in either input (weight 0: the input, i.e. nodata, stays).
        keep_clear: keep clear input pixels (weight from :func:`feather`), else restore everything.
        radius: feather radius (px).
        clear_weight: with ``keep_clear``, the weight of clear pixels (0: kept exactly).

    Returns:
        float32 ``(h, w)`` in [0, 1]; a tile whose weight is 0 everywhere need not run through the model.
    """
    alpha = feather(mask, radius) if keep_clear and mask is not None else np.ones(invalid.shape, np.float32)
    if keep_clear and mask is not None and clear_weight > 0.0:
        alpha = np.maximum(alpha, np.float32(clear_weight))
    alpha[invalid] = 0.0
    return alpha


def composite_tile(
    restored: np.ndarray | None,
    alpha: np.ndarray,
    input_dn: np.ndarray,
    mask: np.ndarray | None,
    scale: float,
    error: np.ndarray | None = None,
    kept_error: float | None = None,
) -> np.ndarray:
    """A tile's values to blend: composited DN ``alpha * restored + (1 - alpha) * input``, the cloud mask
    and, when ``kept_error`` is given, the predicted absolute error.

    The input is the same in every tile, so blending these composited values equals compositing the
    blend, and no alpha plane is needed; where ``alpha = 0`` the input DN comes back exactly (even
    above the DN scale).

    Args:
        restored: float32 ``(n, h, w)`` model output in 0-1 (optical band order), or None (not run).
        alpha: float32 ``(h, w)`` from :func:`restore_weight`.
        input_dn: ``(n, h, w)`` the optical input (any dtype).
        mask: bool ``(h, w)`` cloud mask or None (0).
        scale: DN per unit of model output (the card's ``s2_max_dn``).
        error: float32 ``(h, w)`` predicted absolute error of ``restored`` (reflectance), or None (not run).
        kept_error: predicted absolute error (reflectance) of a pixel kept from the input; None = no
            error channel. The error is composited like the values: ``alpha * error + (1 - alpha) * kept``.

    Returns:
        float32 ``(n + 1, h, w)``: composited DN and the mask as 0/1; ``(n + 2, h, w)`` with the error.
    """
    n = input_dn.shape[0]
    values = np.empty((n + (1 if kept_error is None else 2), *alpha.shape), np.float32)
    s = np.float32(scale)
    if restored is not None and alpha.min() >= 1.0:  # restored everywhere: the input drops out
        np.multiply(restored, s, out=values[:n])
    else:
        values[:n] = input_dn
        if restored is not None:
            values[:n] += alpha * (restored * s - values[:n])
    values[n] = 0.0 if mask is None else mask
    if kept_error is not None:
        values[n + 1] = np.float32(kept_error)
        if error is not None:
            values[n + 1] += alpha * (error - np.float32(kept_error))
    return values


def finish_pixels(
    mean: np.ndarray, invalid: np.ndarray, dtype: np.dtype, nodata: float
) -> tuple[np.ndarray, np.ndarray]:
    """Blended means to output values: rounded for integer outputs, nodata where invalid, never a false nodata.

    Args:
        mean: float32 ``(n + 1, h, w)`` blended composited DN and mask (from :func:`composite_tile`);
            the DN part is modified in place.
        invalid: bool ``(h, w)`` pixels to write as nodata.
        dtype: output data type (integers are rounded and clipped to its range).
        nodata: the output's nodata value.

    Returns:
        ``(out, cloud)``: float32 ``(n, h, w)`` output values (a view of ``mean``) and bool ``(h, w)``
        cloud mask (blended mask >= 0.5).
    """
    n = mean.shape[0] - 1
    nd = np.float32(nodata)
    out = mean[:n]
    if np.dtype(dtype).kind in "ui":
        info = np.iinfo(dtype)
        np.clip(np.rint(out, out=out), info.min, info.max, out=out)
    # GeoTIFF declares one nodata value for every band, and GDAL / QGIS hide any band value equal to
    # it: a valid pixel must not hold it in ANY band (e.g. a true 0 DN in the cirrus band B10 with
    # nodata 0), so such values move by 1 DN (1e-4 reflectance) away from it
    clash = (out == nd) & ~invalid
    if clash.any():
        out[clash] = nd + (1 if nd < 1 else -1)
    out[:, invalid] = nd
    return out, mean[n] >= 0.5


def mask_values(cloud: np.ndarray, invalid: np.ndarray) -> np.ndarray:
    """The cloud-mask output: 1 cloud/shadow, 0 clear, :data:`MASK_NODATA` where invalid."""
    return np.where(invalid, MASK_NODATA, cloud)


def error_values(error: np.ndarray, invalid: np.ndarray) -> np.ndarray:
    """The predicted-error output (reflectance, >= 0); :data:`ERROR_NODATA` where invalid."""
    out = np.maximum(error, np.float32(0.0))
    out[invalid] = ERROR_NODATA
    return out


def change_values(out: np.ndarray, input_dn: np.ndarray, invalid: np.ndarray, scale: float) -> np.ndarray:
    """Per-pixel mean absolute change in reflectance between output and input; :data:`CHANGE_NODATA` where invalid."""
    change = np.mean(np.abs(out - input_dn.astype(np.float32)), axis=0) / np.float32(scale)
    change[invalid] = CHANGE_NODATA
    return change


def _box_sums(a: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Sums over a ``2 * radius + 1`` window along ``axis``, zeros outside the array (float32)."""
    a = np.moveaxis(a, axis, -1)
    n = a.shape[-1]
    c = np.cumsum(a, axis=-1, dtype=np.float32)
    # cumulative sums padded with 0 before and the total after: window sums are one subtraction
    padded = np.concatenate([np.zeros((*a.shape[:-1], radius + 1), np.float32), c,
                             np.repeat(c[..., -1:], radius, axis=-1)], axis=-1)
    out = padded[..., 2 * radius + 1 : 2 * radius + 1 + n] - padded[..., :n]
    return np.moveaxis(out, -1, axis)


def _smooth(a: np.ndarray, sigma: float) -> np.ndarray:
    """Unnormalised near-Gaussian smoothing of the last two axes: three box passes per axis.

    Three boxes of radius ``r`` have the variance of a Gaussian of ``sigma`` when ``r (r + 1) = sigma^2``.
    Zero outside the array: divide two smoothings by each other (normalised convolution) to get means.
    """
    r = max(1, int(round(math.sqrt(sigma * sigma + 0.25) - 0.5)))
    for axis in (-1, -2):
        for _ in range(3):
            a = _box_sums(a, r, axis)
    return a


def soft_mask(mask: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The cloud mask with a ~1 px soft edge (like training's opacity), over valid pixels only.

    Args:
        mask: bool ``(h, w)``.
        valid: float32 ``(h, w)``, 1 on valid pixels, 0 on nodata (nodata neither softens the edge nor is set).

    Returns:
        float32 ``(h, w)`` in [0, 1].
    """
    m = mask.astype(np.float32) * valid
    return _smooth(m, 1.0) / np.maximum(_smooth(valid, 1.0), 1e-6) * valid


def _near_clear_gain(m: np.ndarray, g_clear: np.ndarray, g_valid: np.ndarray, tau: float) -> np.ndarray:
    """How much of a fill correction applies: the soft mask times how much clear land is near (the local
    share of clear among valid pixels over ``tau``, clipped to [0, 1]); 0 where no clear pixel is near."""
    eps = np.float32(1e-6)
    share = np.clip(g_clear / np.maximum(g_valid, eps) / np.float32(tau), 0.0, 1.0)
    return m * share * (g_clear > eps)


def harmonise_fill(
    restored: np.ndarray, mask: np.ndarray, invalid: np.ndarray, sigma: float, tau: float = HARMONISE_TAU
) -> np.ndarray:
    """Scale the fill under the cloud mask to the local brightness of the restored clear pixels around it.

    Under thick cloud the network's fill drifts towards the brightness of its small training set; the
    clear pixels around the cloud show the local level. The local mean brightness (sum over the bands)
    of the restored clear pixels ``Lc`` and of the fill ``Lf`` (normalised Gaussian means over ``sigma``
    px) give a factor ``Lc / Lf`` (kept in [1/3, 3]) applied to the masked pixels as ``(Lc / Lf) ** g``,
    where ``g`` is the soft mask times how much clear land is near (``clip(share of clear neighbours /
    tau, 0, 1)``): far from clear land nothing changes. One factor for all bands keeps each pixel's
    spectral shape (its spectral angle) and the fill's structure (what the SAR shows); only the level
    moves, smoothly. Measured through the engine in docs/QUALITY.md (per-band shifts and factors were
    tried too: better PSNR than none but a worse spectral angle).

    Args:
        restored: float32 ``(n, h, w)`` model output (0-1).
        mask: bool ``(h, w)`` cloud / shadow mask used for the tile.
        invalid: bool ``(h, w)`` nodata pixels (ignored in the means, unchanged).
        sigma: Gaussian scale (px) of the local means; 0 returns ``restored`` unchanged.
        tau: share of clear neighbours at and above which the full factor applies.

    Returns:
        float32 ``(n, h, w)``: a new array, or ``restored`` itself when nothing applies.
    """
    if sigma <= 0 or not mask.any() or mask.all():
        return restored
    valid = (~invalid).astype(np.float32)
    m = soft_mask(mask, valid)
    clear = (1.0 - m) * valid
    level = restored.sum(axis=0)
    s = _smooth(np.stack([clear * level, m * level, clear, m, valid]), sigma)
    eps = np.float32(1e-6)
    g_clear, g_fill, g_valid = s[2], s[3], s[4]
    gain = _near_clear_gain(m, g_clear, g_valid, tau) * (g_fill > eps)
    ratio = (s[0] / np.maximum(g_clear, eps)) / np.maximum(s[1] / np.maximum(g_fill, eps), np.float32(1e-3))
    factor = np.clip(ratio, 1.0 / 3.0, 3.0) ** gain
    return (restored * factor.astype(np.float32)).astype(np.float32, copy=False)


def shift_fill_to_input(
    restored: np.ndarray, optical: np.ndarray, mask: np.ndarray, invalid: np.ndarray, sigma: float,
    tau: float = HARMONISE_TAU,
) -> np.ndarray:
    """Shift each band of the fill under the cloud mask by the local mean of (input - restored) over clear pixels.

    For Level-2A input whose clear pixels are kept: the network learned on top-of-atmosphere Level-1C
    and restores an atmospherically corrected scene with Level-1C-like levels (hazier, bluer), so next
    to the kept input pixels its fill shows as a coloured patch. Around each masked pixel the clear
    pixels show, band by band, how far the network's levels are from the input's; the fill moves by
    that much (normalised Gaussian means over ``sigma`` px, weighted like :func:`harmonise_fill` by the
    soft mask and how much clear land is near). On Level-1C input it is not used: there the clear input
    pixels next to a cloud carry its haze, and the same shift lost 0.3 dB (docs/QUALITY.md section 9).

    Args:
        restored: float32 ``(n, h, w)`` model output (0-1), file band order.
        optical: float32 ``(n, h, w)`` input in the same units and order (NaN allowed where invalid).
        mask: bool ``(h, w)`` cloud / shadow mask used for the tile.
        invalid: bool ``(h, w)`` nodata pixels (ignored in the means, unchanged).
        sigma: Gaussian scale (px) of the local means; 0 returns ``restored`` unchanged.
        tau: share of clear neighbours at and above which the full shift applies.

    Returns:
        float32 ``(n, h, w)``: a new array, or ``restored`` itself when nothing applies.
    """
    if sigma <= 0 or not mask.any() or mask.all():
        return restored
    valid = (~invalid).astype(np.float32)
    m = soft_mask(mask, valid)
    clear = (~mask).astype(np.float32) * valid  # the input under the mask (the cloud) never counts
    diff = np.nan_to_num(optical - restored, nan=0.0, posinf=0.0, neginf=0.0)
    s = _smooth(np.concatenate([clear[None] * diff, np.stack([clear, valid])]), sigma)
    eps = np.float32(1e-6)
    g_clear, g_valid = s[-2], s[-1]
    gain = _near_clear_gain(m, g_clear, g_valid, tau).astype(np.float32)
    offset = s[:-2] / np.maximum(g_clear, eps)
    return (restored + gain * offset).astype(np.float32, copy=False)
