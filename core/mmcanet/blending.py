"""Weighted blending of overlapping tiles into a strip buffer whose size does not depend on the scene height.

Every tile's output is multiplied by a weight that is 1 in the tile's middle and falls off with a
raised cosine over the ``taper`` pixels next to each side that has a neighbour, down to a tiny weight
on the outermost pixels (where the model saw padding); the weight stays > 0 everywhere, so the
normalised sum ``sum(w * y) / sum(w)`` is defined at every covered pixel. For two neighbours that
overlap by exactly ``taper`` px the ramps add up to 1 (up to the tiny edge weight), so blending never
brightens or darkens the overlap, and a model that returns its input is reproduced exactly.

:class:`StripAccumulator` holds the weighted sums for one tile row's worth of raster rows (``rows x
width``); rows that no later tile can touch are popped, written and forgotten.
"""

from __future__ import annotations

import math

import numpy as np

from .tiling import Window

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


def tile_weight(height: int, width: int, taper: int, neighbours: tuple[bool, bool, bool, bool]) -> np.ndarray:
    """2-D blending weight of a tile: outer product of two :func:`ramp` profiles.

    Args:
        height: tile height (px).
        width: tile width (px).
        taper: ramp width (px), usually the tiles' overlap.
        neighbours: (top, bottom, left, right) sides that overlap another tile.

    Returns:
        float32 ``(height, width)`` weight in (0, 1].
    """
    top, bottom, left, right = neighbours
    return np.outer(ramp(height, taper, top, bottom), ramp(width, taper, left, right))


class StripAccumulator:
    """Weighted sums of overlapping tile outputs for a strip of full-width raster rows.

    Tiles must arrive tile row by tile row (top to bottom); within the strip any order works. The
    buffer holds ``rows`` raster rows starting at :attr:`row0`: memory is
    ``(channels + 1) * rows * width * 4`` bytes, independent of the raster height.

    Args:
        width: raster width (px).
        channels: number of channels accumulated per pixel.
        rows: strip height (px); at least the tile height.
    """

    def __init__(self, width: int, channels: int, rows: int) -> None:
        self.width = width
        self.channels = channels
        self.rows = rows
        self.row0 = 0
        self._sums = np.zeros((channels, rows, width), dtype=np.float32)
        self._weight = np.zeros((rows, width), dtype=np.float32)

    @property
    def nbytes(self) -> int:
        """Bytes held by the buffers."""
        return self._sums.nbytes + self._weight.nbytes

    def add(self, window: Window, values: np.ndarray, weight: np.ndarray) -> None:
        """Accumulate one tile.

        Args:
            window: the tile's window in raster pixels; its rows must lie in ``[row0, row0 + rows)``.
            values: float32 ``(channels, window.height, window.width)``.
            weight: float32 ``(window.height, window.width)``, > 0.

        Raises:
            ValueError: when the tile lies outside the strip or shapes differ.
        """
        r0 = window.row_off - self.row0
        if r0 < 0 or r0 + window.height > self.rows or window.col_end > self.width:
            raise ValueError(f"tile {window} outside the strip rows [{self.row0}, {self.row0 + self.rows})")
        if values.shape != (self.channels, window.height, window.width):
            raise ValueError(f"values shape {values.shape} != {(self.channels, window.height, window.width)}")
        rows = slice(r0, r0 + window.height)
        cols = slice(window.col_off, window.col_end)
        self._sums[:, rows, cols] += values * weight
        self._weight[rows, cols] += weight

    def finished(self, upto_row: int) -> tuple[int, np.ndarray, np.ndarray]:
        """Views of the finished rows ``[row0, upto_row)``, valid until :meth:`advance`.

        Args:
            upto_row: first raster row that later tiles may still touch.

        Returns:
            ``(row_off, sums, weight)``: the raster row of the first finished row, the weighted sums
            ``(channels, n, width)`` and the weight sums ``(n, width)``; ``sums / weight`` is the blend.
        """
        n = upto_row - self.row0
        if n < 0 or n > self.rows:
            raise ValueError(f"cannot take rows up to {upto_row} from a strip starting at {self.row0}")
        return self.row0, self._sums[:, :n], self._weight[:n]

    def advance(self, upto_row: int) -> None:
        """Forget rows before ``upto_row`` and shift the strip down so it starts there."""
        n = upto_row - self.row0
        if n < 0 or n > self.rows:
            raise ValueError(f"cannot advance to row {upto_row} from a strip starting at {self.row0}")
        keep = self.rows - n
        if keep > 0 and n > 0:
            self._sums[:, :keep] = self._sums[:, n:].copy()
            self._weight[:keep] = self._weight[n:].copy()
        self._sums[:, keep:] = 0.0
        self._weight[keep:] = 0.0
        self.row0 = upto_row

    def pop(self, upto_row: int) -> tuple[int, np.ndarray]:
        """Take the finished rows ``[row0, upto_row)`` out of the strip as a weighted mean.

        Args:
            upto_row: first raster row that later tiles may still touch.

        Returns:
            ``(row_off, mean)``: the raster row of the first popped row and the weighted mean
            float32 ``(channels, upto_row - row0, width)``; pixels no tile touched are 0.
        """
        row_off, sums, weight = self.finished(upto_row)
        mean = blend(sums, weight)
        self.advance(upto_row)
        return row_off, mean


def blend(sums: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Weighted mean ``sums / weight`` (float32, 0 where the weight is 0) of :meth:`StripAccumulator.finished` data."""
    return np.divide(sums, weight, out=np.zeros(sums.shape, np.float32), where=weight > 0)
