"""Writing GeoTIFFs block row by block row (:class:`RasterWriter`), with overviews or as a COG, atomically.

Every GDAL write and flush must report no error; the file is finished through
:func:`mmcanet.output_files.finish_geotiff` (verify, sync, rename). Outputs QGIS draws fast: a writer
fills internal overviews (2x, 4x, ... reduced copies inside the same file) from the rows as they arrive
when the raster is at least :data:`OVERVIEW_MIN_SIZE` px on a side, so a zoomed-out view reads a small
overview instead of every full-resolution block. On request it converts the finished GeoTIFF into a
Cloud-Optimised GeoTIFF with GDAL's COG driver (same pixels, tags, band descriptions and nodata;
overviews and the directory at the front of the file). Both happen on the temporary file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from osgeo import gdal

from .cpus import gdal_threads
from .errors import CancelledError, MMCANetError
from .gdal_calls import gdal_call, gdal_errors, gdal_progress
from .output_files import (
    check_writable,
    cog_source_path_for,
    finish_geotiff,
    remove_partial,
    remove_stale_partials,
    temp_path_for,
)

_GDAL_TYPES: dict[np.dtype, int] = {
    np.dtype(np.uint8): gdal.GDT_Byte,
    np.dtype(np.uint16): gdal.GDT_UInt16,
    np.dtype(np.int16): gdal.GDT_Int16,
    np.dtype(np.float32): gdal.GDT_Float32,
}


def geotiff_creation_options(dtype: np.dtype, block: int, width: int, height: int) -> list[str]:
    """GDAL creation options of every GeoTIFF the project writes (tiled, compressed, band-interleaved)."""
    predictor = "3" if dtype.kind == "f" else "2"
    # ZLEVEL=1: 3.6x faster than the default level 6 for ~3% larger files (measured, docs/ENGINE.md)
    # INTERLEAVE=BAND: each band's blocks compress on their own, 30% faster and 15% smaller than GDAL's
    # default pixel interleaving for 13-band uint16 (measured), and an RGB view reads only its 3 bands
    opts = ["COMPRESS=DEFLATE", f"PREDICTOR={predictor}", "ZLEVEL=1", "BIGTIFF=IF_SAFER", f"NUM_THREADS={gdal_threads()}",
            "INTERLEAVE=BAND"]
    if width >= 16 and height >= 16:
        b = max(16, block // 16 * 16)
        opts += ["TILED=YES", f"BLOCKXSIZE={b}", f"BLOCKYSIZE={b}"]
    return opts


OVERVIEW_MIN_SIZE = 1024
"""Outputs at least this many px on their longer side get overviews. A smaller raster is read in full
in a few milliseconds at any zoom (a 1023 x 1023 13-band uint16 raster is 27 MB raw, and a QGIS canvas
is about that size), while overviews would add a third to its file size and write time."""


OVERVIEW_SMALLEST = 256
"""Overview levels go on (2, 4, 8, ...) until the longer side of the last one is at most this many px,
gdaladdo's rule: the coarsest level is then about one block, enough for a whole-tile view."""


def overview_levels(width: int, height: int) -> list[int]:
    """Decimation factors of the overviews a ``width`` x ``height`` output gets (empty: none).

    Empty below :data:`OVERVIEW_MIN_SIZE` px on the longer side; else 2, 4, ... down to the first
    level whose longer side is at most :data:`OVERVIEW_SMALLEST` px (10980 px: 2 .. 64).
    """
    side = max(width, height)
    if side < OVERVIEW_MIN_SIZE:
        return []
    levels = [2]
    while -(-side // levels[-1]) > OVERVIEW_SMALLEST:
        levels.append(levels[-1] * 2)
    return levels


def cog_creation_options() -> list[str]:
    """GDAL COG driver options of the Cloud-Optimised GeoTIFFs the project writes (same compression as
    :func:`geotiff_creation_options`; the driver's 512 px blocks; the overviews the GeoTIFF already has)."""
    return ["COMPRESS=DEFLATE", "LEVEL=1", "PREDICTOR=YES", "BIGTIFF=IF_SAFER", f"NUM_THREADS={gdal_threads()}"]


class RasterWriter:
    """A GeoTIFF written row block by row block to a temporary file, renamed on :meth:`commit`.

    Rows must be written top to bottom (:meth:`write_rows`); they are buffered until a whole row of
    output blocks is complete, written and flushed out of GDAL's cache, so memory stays at one
    block row (``count * block * width`` values) whatever the raster height.

    Args:
        path: final file name.
        width: columns (px).
        height: rows (px).
        count: bands.
        dtype: numpy dtype of the pixels (uint8, uint16, int16 or float32).
        geotransform: GDAL geotransform (None: none written).
        crs_wkt: projection WKT ('' or None: none written).
        nodata: nodata value (None: none). GeoTIFF holds one value for all bands (GDAL_NODATA tag),
            so a writer must make sure no valid pixel holds it in any band.
        descriptions: per band descriptions.
        tags: dataset metadata (``TIFFTAG_GDAL_METADATA``).
        block: tile edge (px, multiple of 16).
        what: label for messages.
        overviews: fill internal overviews while the rows are written (levels from
            :func:`overview_levels`: none below :data:`OVERVIEW_MIN_SIZE` px); False: never.
        resampling: how overview pixels are computed (GDAL name): ``"AVERAGE"`` for measurements
            (nodata pixels are left out of the mean), ``"NEAREST"`` for classes such as a cloud mask.
        cog: write a Cloud-Optimised GeoTIFF (GDAL's COG driver, 512 px blocks, pixel-interleaved) at
            :meth:`commit`: the rows go to a temporary tiled GeoTIFF first, then are converted.

    Raises:
        InputError: when the file cannot be created (naming ``what``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        width: int,
        height: int,
        count: int,
        dtype: np.dtype | type,
        geotransform: Sequence[float] | None,
        crs_wkt: str | None,
        nodata: float | None,
        descriptions: Sequence[str] = (),
        tags: dict[str, str] | None = None,
        block: int = 256,
        what: str = "output",
        overviews: bool = True,
        resampling: str = "AVERAGE",
        cog: bool = False,
    ) -> None:
        self.path = check_writable(path, what)
        self.what = f"{what} '{os.fspath(path)}'"
        self.dtype = np.dtype(dtype)
        if self.dtype not in _GDAL_TYPES:
            raise ValueError(f"unsupported output dtype {self.dtype}")
        self.width, self.height, self.count = width, height, count
        remove_stale_partials(self.path)
        self.tmp_path = temp_path_for(self.path)
        self.overview_levels = overview_levels(width, height) if overviews else []
        self.resampling = resampling
        self.cog = cog
        # the rows go to the final temporary file, or (COG) to a source the COG driver copies from
        self._rows_path = cog_source_path_for(self.path) if cog else self.tmp_path
        self._ds: gdal.Dataset | None = None
        self._done = False
        self._finished = False
        self._next_row = 0
        opts = geotiff_creation_options(self.dtype, block, width, height)
        self._block_rows = block if any(o.startswith("BLOCKYSIZE") for o in opts) else max(1, min(height, 256))
        driver = gdal.GetDriverByName("GTiff")
        # everything from creating the file on runs under one try: a Ctrl-C / SIGTERM (KeyboardInterrupt)
        # arriving anywhere after the file exists must remove it (the caller has no writer to discard yet)
        try:
            self._ds = gdal_call(
                driver.Create,
                str(self._rows_path),
                width,
                height,
                count,
                _GDAL_TYPES[self.dtype],
                options=opts,
                what=f"{self.what}: cannot create a GeoTIFF in '{self.path.parent}'",
            )
            if geotransform is not None:
                self._ds.SetGeoTransform(list(geotransform))
            if crs_wkt:
                self._ds.SetProjection(crs_wkt)
            for i in range(count):
                band = self._ds.GetRasterBand(i + 1)
                if nodata is not None:
                    band.SetNoDataValue(float(nodata))
                if i < len(descriptions) and descriptions[i]:
                    band.SetDescription(str(descriptions[i]))
            if tags:
                self._ds.SetMetadata({str(k): str(v) for k, v in tags.items()})
            self._nodata = None if nodata is None else float(nodata)
            self._overviews = self._create_overviews()
            self._pending = np.zeros((count, self._block_rows, width), dtype=self.dtype)
            self._pending_row0 = 0
            self._pending_rows = 0
        except BaseException:
            self.discard()
            raise

    def __enter__(self) -> RasterWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self._done:
            self.discard()

    def update_tags(self, tags: dict[str, str]) -> None:
        """Add dataset metadata (``TIFFTAG_GDAL_METADATA``) before :meth:`commit`, e.g. figures known only at the end."""
        if self._ds is None:
            raise ValueError("the writer is already closed")
        current = self._ds.GetMetadata() or {}
        self._ds.SetMetadata({**current, **{str(k): str(v) for k, v in tags.items()}})

    def write_rows(self, row_off: int, data: np.ndarray) -> None:
        """Append rows ``[row_off, row_off + n)``; ``row_off`` must continue where the last call ended.

        Args:
            row_off: first raster row of ``data``.
            data: ``(count, n, width)`` array, cast to the file's dtype.
        """
        if data.shape[0] != self.count or data.shape[2] != self.width:
            raise ValueError(f"data shape {data.shape} does not fit ({self.count}, n, {self.width})")
        n = data.shape[1]
        src = 0
        while src < n:
            take = min(n - src, self.room())
            self.region(row_off + src, take)[...] = data[:, src : src + take]
            self.wrote(row_off + src, take)
            src += take

    def room(self) -> int:
        """Rows that can be written before the current row of blocks is complete (>= 1 until the end)."""
        return min(self._block_rows - self._pending_rows, self.height - self._next_row)

    def region(self, row_off: int, n: int) -> np.ndarray:
        """Writable ``(count, n, width)`` view for rows ``[row_off, row_off + n)``, ``n <= room()``.

        Fill it, then call :meth:`wrote` with the same rows. Filling the writer's own buffer directly
        saves a full-width copy of the rows.
        """
        if row_off != self._next_row:
            raise ValueError(f"rows must be written in order: expected row {self._next_row}, got {row_off}")
        if not 0 < n <= self.room():
            raise ValueError(f"{n} rows do not fit in the {self.room()} rows left in this row of blocks")
        return self._pending[:, self._pending_rows : self._pending_rows + n]

    def wrote(self, row_off: int, n: int) -> None:
        """Mark rows filled through :meth:`region` as written; writes out a completed row of blocks."""
        if row_off != self._next_row or not 0 < n <= self.room():
            raise ValueError(f"rows {row_off}..{row_off + n} were not the region handed out")
        self._pending_rows += n
        self._next_row += n
        if self._pending_rows == self._block_rows or self._next_row == self.height:
            self._flush_pending()

    def _flush_pending(self) -> None:
        assert self._ds is not None
        n = self._pending_rows
        if n == 0:
            return
        for i in range(self.count):
            band = self._ds.GetRasterBand(i + 1)
            gdal_call(
                band.WriteArray,
                self._pending[i, :n],
                0,
                self._pending_row0,
                what=f"{self.what}: write failed (disk full?)",
                error=MMCANetError,
            )
        if self._overviews:
            self._feed_overview(0, self._pending[:, :n], last=self._pending_row0 + n == self.height)
        with gdal_errors() as log:  # a full disk surfaces here, when GDAL writes the blocks out
            self._ds.FlushCache()  # write and release the finished blocks: memory stays flat
        if log.failures:
            raise MMCANetError(f"{self.what}: write failed ({log.failures[0]}); is the disk full?")
        self._pending_row0 += n
        self._pending_rows = 0

    def _create_overviews(self) -> list[_OverviewLevel]:
        """Empty internal overview levels (GDAL resampling ``NONE``), filled as the rows arrive."""
        if not self.overview_levels:
            return []
        assert self._ds is not None
        gdal_call(self._ds.BuildOverviews, "NONE", self.overview_levels,
                  what=f"{self.what}: cannot add overviews", error=MMCANetError)
        band = self._ds.GetRasterBand(1)
        levels = []
        for k in range(len(self.overview_levels)):
            ov = band.GetOverview(k)
            rows = max(1, ov.GetBlockSize()[1])
            levels.append(_OverviewLevel(k, ov.XSize, ov.YSize, np.zeros((self.count, rows, ov.XSize), self.dtype)))
        return levels

    def _feed_overview(self, k: int, rows: np.ndarray, last: bool) -> None:
        """Reduce full-resolution (k = 0) or level k-1 rows 2 x 2 into level k and on down the levels.

        Computing the overviews from the rows in memory spares GDAL re-reading and decompressing the
        whole file afterwards (and GDAL 3.6's threaded decoding, which printed an "ExtraSamples" error
        per block of a 13-band file); every overview block is written once, when its rows are complete.
        """
        if k >= len(self._overviews):
            return
        level = self._overviews[k]
        if level.carry is not None:  # an odd row left from the previous call pairs with this call's first
            rows = np.concatenate([level.carry, rows], axis=1)
            level.carry = None
        use = rows.shape[1] if last else rows.shape[1] - rows.shape[1] % 2
        if use < rows.shape[1]:
            level.carry = rows[:, use:].copy()
        reduced = _reduce_2x2(rows[:, :use], self.resampling, self._nodata) if use else rows[:, :0, : level.width]
        src = 0
        while src < reduced.shape[1]:
            take = min(level.buffer.shape[1] - level.buffered, reduced.shape[1] - src)
            level.buffer[:, level.buffered : level.buffered + take] = reduced[:, src : src + take]
            level.buffered += take
            src += take
            if level.buffered == level.buffer.shape[1]:
                self._write_overview_rows(level)
        if last and level.buffered:
            self._write_overview_rows(level)
        self._feed_overview(k + 1, reduced, last)

    def _write_overview_rows(self, level: _OverviewLevel) -> None:
        assert self._ds is not None
        n = min(level.buffered, level.height - level.row0)
        for i in range(self.count):
            band = self._ds.GetRasterBand(i + 1).GetOverview(level.index)
            gdal_call(band.WriteArray, level.buffer[i, :n], 0, level.row0,
                      what=f"{self.what}: writing overviews failed (disk full?)", error=MMCANetError)
        level.row0 += level.buffered
        level.buffered = 0


    def finish(self, is_canceled: Callable[[], bool] | None = None) -> None:
        """Complete the temporary file (close it, convert it to a COG) without renaming it yet.

        A run with several outputs finishes them all before it commits any, so a cancel or an error
        while one is finished leaves none of them behind.

        Args:
            is_canceled: polled before the file is closed and while the COG is written; True stops
                with :class:`~mmcanet.errors.CancelledError` and deletes the temporary file.

        Raises:
            MMCANetError: when rows are missing or the file cannot be completed.
            CancelledError: ``is_canceled()`` returned True.
        """
        if self._finished:
            return
        if self._next_row != self.height:
            raise MMCANetError(f"{self.what}: only {self._next_row} of {self.height} rows were written")
        try:
            if is_canceled is not None and is_canceled():
                raise CancelledError(f"{self.what}: cancelled; no output was written")
            self._flush_pending()
            ds, self._ds = self._ds, None
            if ds is not None:
                with gdal_errors() as log:
                    ds.FlushCache()
                    ds = None  # closes the file: the TIFF directory is written now
                if log.failures:
                    raise MMCANetError(f"{self.what}: could not be finished ({log.failures[0]}); is the disk full?")
            if self.cog:
                self._convert_to_cog(is_canceled)
        except BaseException:
            self.discard()
            raise
        self._finished = True

    def commit(self, is_canceled: Callable[[], bool] | None = None) -> Path:
        """Finish the file (:meth:`finish`, unless done) and move it to its final name (replacing an existing file).

        Args:
            is_canceled: passed to :meth:`finish`.

        Returns:
            The final path.

        Raises:
            MMCANetError: when rows are missing or the file cannot be finished/renamed.
            CancelledError: ``is_canceled()`` returned True during :meth:`finish`.
        """
        self.finish(is_canceled)
        self._done = True
        return finish_geotiff(self.tmp_path, self.path, width=self.width, height=self.height, count=self.count,
                              what=self.what)

    def _convert_to_cog(self, is_canceled: Callable[[], bool] | None) -> None:
        """Copy the finished tiled GeoTIFF into the COG layout at the temporary name, then drop the source."""
        options = [*cog_creation_options(), f"OVERVIEWS={'FORCE_USE_EXISTING' if self.overview_levels else 'NONE'}"]
        with gdal_errors() as log:
            try:
                out = gdal.Translate(str(self.tmp_path), str(self._rows_path), format="COG", creationOptions=options,
                                     callback=gdal_progress(is_canceled))
            except RuntimeError as exc:  # gdal.UseExceptions() is on somewhere in the process
                log.messages.append(str(exc))
                out = None
            failed = out is None or bool(log.failures)
            out = None  # closes the COG
        if is_canceled is not None and is_canceled():
            raise CancelledError(f"{self.what}: cancelled while writing the Cloud-Optimised GeoTIFF; no output was written")
        if failed:
            raise MMCANetError(f"{self.what}: writing the Cloud-Optimised GeoTIFF failed ({log.last()}); is the disk full?")
        remove_partial(self._rows_path)

    def discard(self) -> None:
        """Close and delete the temporary file(s) (idempotent)."""
        with gdal_errors():  # closing a file on a full disk reports errors that no longer matter
            self._ds = None
        self._done = True
        remove_partial(self.tmp_path)
        if self._rows_path != self.tmp_path:
            remove_partial(self._rows_path)


@dataclass
class _OverviewLevel:
    """One overview level being filled: its size, a block row of pending rows, an odd row carried over."""

    index: int
    width: int
    height: int
    buffer: np.ndarray
    buffered: int = 0
    row0: int = 0
    carry: np.ndarray | None = None


def _reduce_2x2(data: np.ndarray, resampling: str, nodata: float | None) -> np.ndarray:
    """``(bands, h, w)`` -> ``(bands, ceil(h/2), ceil(w/2))``: the top-left pixel (``NEAREST``) or the
    mean of the valid pixels of each 2 x 2 block (``AVERAGE``: nodata and NaN left out, nodata where
    none is valid, integers rounded half up); an odd last row or column is reduced on its own."""
    if resampling.upper() == "NEAREST":
        return data[:, ::2, ::2].copy()
    c, h, w = data.shape
    h2, w2 = -(-h // 2), -(-w // 2)
    if (h2 * 2, w2 * 2) != (h, w):  # the edge row / column pairs with itself: its own mean
        data = np.pad(data, ((0, 0), (0, h2 * 2 - h), (0, w2 * 2 - w)), mode="edge")
    floating = data.dtype.kind == "f"
    acc_type: Any = np.float64 if floating else np.int32  # 4 x 16 bit fits in int32
    quads = [data[:, i::2, j::2] for i in (0, 1) for j in (0, 1)]  # strided views, no copies
    valid = None
    if nodata is not None or floating:
        masks = [np.isfinite(q) if floating else np.ones(q.shape, bool) for q in quads]
        if nodata is not None:
            masks = [m & (q != data.dtype.type(nodata)) for m, q in zip(masks, quads, strict=True)]
        if not all(m.all() for m in masks):
            valid = masks
    if valid is None:  # the common case: every pixel valid
        total: Any = quads[0].astype(acc_type)
        for q in quads[1:]:
            total += q
        mean = total / 4 if floating else (total + 2) // 4
        return mean.astype(data.dtype)
    total = np.zeros((c, h2, w2), acc_type)
    count: Any = np.zeros((c, h2, w2), np.int32)
    for q, m in zip(quads, valid, strict=True):
        total += np.where(m, q, 0)
        count += m
    safe = np.maximum(count, 1)
    mean = total / safe if floating else (2 * total + safe) // (2 * safe)
    out = np.where(count > 0, mean, nodata if nodata is not None else 0)
    return out.astype(data.dtype)
