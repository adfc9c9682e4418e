"""A rectangle of raster pixels (the value object every reader, writer and tile plan shares)."""

from __future__ import annotations

import math
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


Bounds = tuple[float, float, float, float]
"""``(xmin, ymin, xmax, ymax)`` in a raster's CRS units."""


def window_from_bounds(
    bounds: Bounds, geotransform: tuple[float, ...], width: int, height: int
) -> Window | None:
    """The pixels of a north-up raster that ``bounds`` touches, snapped outward to whole pixels.

    A pixel belongs to the window when its area overlaps the open rectangle ``bounds`` (a pixel
    that only shares an edge does not). The result is clipped to the raster.

    Args:
        bounds: ``(xmin, ymin, xmax, ymax)`` in the raster's CRS, ``xmin < xmax``, ``ymin < ymax``.
        geotransform: GDAL geotransform without rotation (``gt[2] == gt[4] == 0``).
        width: raster columns.
        height: raster rows.

    Returns:
        The window, or None when ``bounds`` does not overlap the raster.

    Raises:
        ValueError: a rotated geotransform or empty bounds.
    """
    x0, dx, rx, y0, ry, dy = (float(v) for v in geotransform[:6])
    if rx != 0 or ry != 0 or dx == 0 or dy == 0:
        raise ValueError(f"rotated or degenerate geotransform {tuple(geotransform)}")
    xmin, ymin, xmax, ymax = (float(v) for v in bounds)
    if not (xmin < xmax and ymin < ymax):
        raise ValueError(f"empty bounds {bounds}: need xmin < xmax and ymin < ymax")
    cols = sorted(((xmin - x0) / dx, (xmax - x0) / dx))
    rows = sorted(((ymin - y0) / dy, (ymax - y0) / dy))
    # outward snap; a tolerance of 1e-6 px so bounds on a pixel edge do not take the next pixel
    c0, c1 = math.floor(cols[0] + 1e-6), math.ceil(cols[1] - 1e-6)
    r0, r1 = math.floor(rows[0] + 1e-6), math.ceil(rows[1] - 1e-6)
    c0, r0 = max(c0, 0), max(r0, 0)
    c1, r1 = min(c1, width), min(r1, height)
    if c1 <= c0 or r1 <= r0:
        return None
    return Window(c0, r0, c1 - c0, r1 - r0)


def window_bounds(window: Window, geotransform: tuple[float, ...]) -> Bounds:
    """``(xmin, ymin, xmax, ymax)`` of ``window`` on a north-up raster with ``geotransform``."""
    x0, dx, _, y0, _, dy = (float(v) for v in geotransform[:6])
    xs = (x0 + window.col_off * dx, x0 + window.col_end * dx)
    ys = (y0 + window.row_off * dy, y0 + window.row_end * dy)
    return min(xs), min(ys), max(xs), max(ys)
