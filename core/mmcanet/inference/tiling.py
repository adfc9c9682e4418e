"""Plan overlapping tile windows over a raster (pure functions, no I/O).

A scene of ``height x width`` pixels is cut into tiles of ``tile_size x tile_size`` pixels whose
neighbours overlap by at least ``overlap`` pixels. Along each axis the offsets are
``0, stride, 2 * stride, ...`` with ``stride = tile_size - overlap``, and the last tile is pushed back
so that it ends exactly on the raster edge: every tile is full size (so tiles batch together) and
no tile reaches outside the raster (so nothing is padded). A raster smaller than a tile along an axis
gets one tile of the raster's size along that axis.

Tiles are produced row by row ("tile rows" share the same ``row_off``); after tile row ``r`` has been
processed, every raster row above :meth:`TilePlan.final_row` (``r``) is final, which is what lets
:mod:`mmcanet.inference.blending` keep only one strip of rows in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..windows import Window


@dataclass(frozen=True)
class Tile:
    """One tile of a plan.

    Attributes:
        window: the pixels read from the inputs and run through the model.
        row: index of the tile row (0 = top).
        col: index of the tile column (0 = left).
        neighbours: whether another tile overlaps this one at its (top, bottom, left, right) side;
            blending weights taper only on those sides.
    """

    window: Window
    row: int
    col: int
    neighbours: tuple[bool, bool, bool, bool]


def axis_offsets(length: int, tile: int, overlap: int) -> tuple[int, ...]:
    """Start offsets of the tiles along one axis.

    Args:
        length: raster size along the axis (px, >= 1).
        tile: tile size (px, >= 1).
        overlap: minimum overlap between neighbouring tiles (px, 0 <= overlap < tile).

    Returns:
        Strictly increasing offsets; the first is 0 and the last is ``max(0, length - tile)``, so the
        tiles ``[off, off + min(tile, length))`` cover ``[0, length)`` exactly and neighbours overlap by
        at least ``overlap`` px (more for the last pair when the length does not fall on the stride).

    Raises:
        ValueError: for sizes out of range.
    """
    if length < 1 or tile < 1:
        raise ValueError(f"length and tile must be >= 1, got length={length}, tile={tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got overlap={overlap}, tile={tile}")
    if length <= tile:
        return (0,)
    stride = tile - overlap
    last = length - tile
    offsets = list(range(0, last, stride))
    offsets.append(last)
    return tuple(offsets)


@dataclass(frozen=True)
class TilePlan:
    """All tiles of a raster, in row-major order.

    Attributes:
        width: raster width (px).
        height: raster height (px).
        tile_size: requested tile size (px); tiles are ``tile_height x tile_width``.
        overlap: minimum overlap between neighbouring tiles (px).
        row_offsets: ``row_off`` of each tile row.
        col_offsets: ``col_off`` of each tile column.
    """

    width: int
    height: int
    tile_size: int
    overlap: int
    row_offsets: tuple[int, ...]
    col_offsets: tuple[int, ...]

    @property
    def tile_width(self) -> int:
        """Width of every tile (the tile size, or the raster width when that is smaller)."""
        return min(self.tile_size, self.width)

    @property
    def tile_height(self) -> int:
        """Height of every tile (the tile size, or the raster height when that is smaller)."""
        return min(self.tile_size, self.height)

    @property
    def n_tiles(self) -> int:
        """Number of tiles."""
        return len(self.row_offsets) * len(self.col_offsets)

    def tile_row(self, r: int) -> list[Tile]:
        """The tiles of tile row ``r``, left to right."""
        n_rows, n_cols = len(self.row_offsets), len(self.col_offsets)
        row_off = self.row_offsets[r]
        return [
            Tile(
                window=Window(col_off, row_off, self.tile_width, self.tile_height),
                row=r,
                col=c,
                neighbours=(r > 0, r < n_rows - 1, c > 0, c < n_cols - 1),
            )
            for c, col_off in enumerate(self.col_offsets)
        ]

    def tiles(self) -> Iterator[Tile]:
        """Every tile, row by row, left to right."""
        for r in range(len(self.row_offsets)):
            yield from self.tile_row(r)

    def final_row(self, r: int) -> int:
        """Rows ``< final_row(r)`` receive no contribution from tile rows after ``r``.

        Returns:
            The next tile row's ``row_off``, or the raster height after the last tile row.
        """
        return self.row_offsets[r + 1] if r + 1 < len(self.row_offsets) else self.height


def plan_tiles(width: int, height: int, tile_size: int, overlap: int) -> TilePlan:
    """Plan the tiles of a ``height x width`` raster.

    Args:
        width: raster width (px, >= 1).
        height: raster height (px, >= 1).
        tile_size: tile edge (px, >= 1).
        overlap: minimum overlap between neighbouring tiles (px, 0 <= overlap < tile_size).

    Returns:
        A :class:`TilePlan` whose tiles cover the raster exactly (every pixel in at least one tile,
        no tile outside the raster).

    Raises:
        ValueError: for sizes out of range.
    """
    return TilePlan(
        width=width,
        height=height,
        tile_size=tile_size,
        overlap=overlap,
        row_offsets=axis_offsets(height, tile_size, overlap),
        col_offsets=axis_offsets(width, tile_size, overlap),
    )
