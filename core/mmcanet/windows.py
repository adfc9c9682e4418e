"""A rectangle of raster pixels (the value object every reader, writer and tile plan shares)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    """A rectangle of pixels: columns ``[col_off, col_off + width)``, rows ``[row_off, row_off + height)``."""

    col_off: int
    row_off: int
    width: int
    height: int

    @property
    def col_end(self) -> int:
        """First column after the window."""
        return self.col_off + self.width

    @property
    def row_end(self) -> int:
        """First row after the window."""
        return self.row_off + self.height

    def slices(self) -> tuple[slice, slice]:
        """``(rows, cols)`` slices that cut this window out of a ``(..., H, W)`` array of the raster."""
        return slice(self.row_off, self.row_end), slice(self.col_off, self.col_end)

    def intersection(self, other: Window) -> Window | None:
        """The overlap of two windows, or None when they do not overlap."""
        c0, r0 = max(self.col_off, other.col_off), max(self.row_off, other.row_off)
        c1, r1 = min(self.col_end, other.col_end), min(self.row_end, other.row_end)
        if c1 <= c0 or r1 <= r0:
            return None
        return Window(c0, r0, c1 - c0, r1 - r0)
