"""Weighted blending of overlapping tiles into a strip buffer whose size does not depend on the scene height.

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

EDGE_WEIGHT = 1e-3
"""Weight of a tile's outermost ``margin`` pixels where a neighbour overlaps them (> 0, so never 0 / 0)."""


def ramp(length: int, taper: int, start: bool, end: bool, margin: int | None = None) -> np.ndarray:
    """1-D blending weight of a tile along one axis.

    Models see zero/reflect padding at a tile's border, so their outermost pixels are the least
    trustworthy: the first ``margin`` px of a ramp get a tiny weight (``EDGE_WEIGHT``), then a raised
    cosine rises to 1 over the next ``taper - 2 * margin`` px. Two neighbours overlapping by ``taper``
    px thus hand over smoothly in the middle of their overlap, each ignoring the other's border.

    Args:
        length: tile size along the axis (px).
        taper: width of each ramp (px), normally the overlap; 0 gives a flat weight.
        start: taper at index 0 (there is a neighbour before).
        end: taper at index ``length - 1`` (there is a neighbour after).
        margin: px at the border with the tiny weight; default ``taper // 4``.

    Returns:
        float32 ``(length,)`` in (0, 1].
    """
    w = np.ones(length, dtype=np.float64)
    if taper > 0:
        m = taper // 4 if margin is None else max(0, min(margin, (taper - 1) // 2))
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
