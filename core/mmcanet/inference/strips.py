"""Read a scene strip by strip (one tile row of every input, on the optical grid), optionally in the background.

A :class:`Strip` holds ``tile_height`` full-width rows of the optical DN, the SAR in dB (warped onto
the optical grid), the invalid-pixel mask and a given cloud mask. Consecutive tile rows overlap, so
:meth:`StripReader.fill` copies the shared rows from the previous strip and reads only the new ones:
every input row is read (and SAR-warped) exactly once.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

import numpy as np
from osgeo import gdal

from ..raster_read import read_into, read_window
from ..sar_units import sar_to_db
from ..windows import Window
from .inputs import SceneInputs
from .tuning import EngineTuning


@dataclass
class Strip:
    """One tile row's worth of input rows, on the optical grid."""

    row_off: int
    s2_dn: np.ndarray  # (n_in, h, W) file dtype, file band order
    s1_db: np.ndarray  # (2, h, W) float32 dB, VV VH
    invalid: np.ndarray  # bool (h, W): optical nodata (written as nodata)
    mask: np.ndarray | None  # bool (h, W) given cloud mask (unknown = cloud)


def all_bands_equal(stack: np.ndarray, value: np.ndarray) -> np.ndarray:
    """``np.all(stack == value, axis=0)`` for a ``(bands, h, w)`` stack, reading the other bands only
    where the first band holds ``value`` (usually nowhere: one pass instead of one per band)."""
    first = stack[0] == value
    if not first.any():
        return first
    rows, cols = np.nonzero(first)
    first[rows, cols] = np.all(stack[:, rows, cols] == value, axis=0)
    return first


class StripReader:
    """Reads the strips of a scene into reusable buffers.

    Args:
        ins: the open inputs.
        height: rows per strip (the tile height).
        tuning: read chunk size and GDAL cache release threshold.
    """

    def __init__(self, ins: SceneInputs, height: int, tuning: EngineTuning) -> None:
        self.ins = ins
        self.height = height
        self.tuning = tuning
        self.seconds_background = 0.0
        self.sar_missing_px = 0  # valid optical pixels without SAR (restored from the optical alone)
        # datasets whose blocks are released after each read chunk; the sources behind warped VRTs
        # are released when GDAL's cache holds more than tuning.source_cache_bytes (their blocks
        # straddle strips and are worth keeping briefly, but would otherwise fill the cache)
        self._datasets = [ins.optical] + [a.dataset for a in (ins.sar, ins.mask) if a is not None]
        self._sources = [a.source for a in (ins.sar, ins.mask) if a is not None and a.warped and a.source is not None]

    def new_strip(self) -> Strip:
        """Strip buffers for one tile row (allocated twice per run when prefetching: one in use, one being read)."""
        th, width = self.height, self.ins.optical_info.width
        return Strip(
            row_off=-1,
            s2_dn=np.zeros((len(self.ins.optical_names), th, width), self.ins.optical_info.dtype),
            s1_db=np.zeros((2, th, width), np.float32),
            invalid=np.zeros((th, width), bool),
            mask=np.zeros((th, width), bool) if self.ins.mask is not None else None,
        )

    def read_rows(self, strip: Strip, row_off: int, n: int, dst: int) -> None:
        """Read raster rows ``[row_off, row_off + n)`` of every input into strip rows ``[dst, dst + n)``.

        Reads go straight into the strip buffers, in column chunks after each of which the inputs'
        GDAL blocks are released: memory does not depend on the size of GDAL's (shared) cache.
        """
        ins = self.ins
        width = ins.optical_info.width
        rows = slice(dst, dst + n)
        step = self.tuning.read_columns
        for c0 in range(0, width, step):
            cw = min(step, width - c0)
            cs = slice(c0, c0 + cw)
            win = Window(c0, row_off, cw, n)
            s2 = strip.s2_dn[:, rows, cs]
            read_into(ins.optical, win, s2, ins.optical_what)
            invalid = all_bands_equal(s2, np.array(ins.optical_nodata).astype(s2.dtype))
            if s2.dtype.kind == "f":
                invalid |= ~np.isfinite(s2).all(axis=0)
            s1 = strip.s1_db[:, rows, cs]
            read_into(ins.sar.dataset, win, s1, ins.sar_what, bands=list(ins.sar_order))
            # SAR missing (NaN, its nodata, outside its footprint, non-positive power) does not blank the
            # optical pixel: the model gets "no SAR" there (NaN normalises to 0, what training's
            # sar_dropout feeds) and restores from the optical image alone
            no_sar = ~np.isfinite(s1).all(axis=0)
            if ins.sar.nodata is not None and math.isfinite(ins.sar.nodata):
                no_sar |= (s1 == np.float32(ins.sar.nodata)).any(axis=0)
            if ins.sar_units == "linear":
                s1[...] = sar_to_db(s1, "linear")  # non-positive power reads as NaN: no SAR there
                no_sar |= ~np.isfinite(s1).all(axis=0)
            if no_sar.any():
                s1[:, no_sar] = np.nan
                self.sar_missing_px += int((no_sar & ~invalid).sum())
            strip.invalid[rows, cs] = invalid
            if ins.mask is not None and strip.mask is not None:
                m = read_window(ins.mask.dataset, win, ins.mask_what)[0]
                strip.mask[rows, cs] = m != 0  # unknown (nodata / outside) counts as cloud: never kept blindly
            for ds in self._datasets:
                ds.FlushCache()
            if self._sources and gdal.GetCacheUsed() > self.tuning.source_cache_bytes:
                for ds in self._sources:
                    ds.FlushCache()

    def fill(self, strip: Strip, row_off: int, prev: Strip | None) -> None:
        """Load the strip of the tile row at ``row_off``; rows shared with ``prev`` are copied from it."""
        height = self.height
        keep = 0
        if prev is not None and prev.row_off <= row_off < prev.row_off + height:
            keep = prev.row_off + height - row_off
            shift = row_off - prev.row_off
            for dst, src in ((strip.s2_dn, prev.s2_dn), (strip.s1_db, prev.s1_db), (strip.invalid, prev.invalid),
                             (strip.mask, prev.mask)):
                if dst is not None and src is not None:
                    dst[..., :keep, :] = src[..., shift : shift + keep, :]
        if keep < height:
            self.read_rows(strip, row_off + keep, height - keep, keep)
        strip.row_off = row_off

    def prefetch(self, strip: Strip, row_off: int, prev: Strip) -> Prefetch:
        """Fill ``strip`` in a background thread while the current tile row runs through the model.

        Only that thread touches the input datasets meanwhile (GDAL handles are not shared across
        threads); GDAL decoding and warping release the GIL, so reading overlaps the model's work.
        """
        return Prefetch(self, strip, row_off, prev)


class Prefetch:
    """A strip being filled by a background thread; :meth:`wait` joins it and re-raises its error."""

    def __init__(self, reader: StripReader, strip: Strip, row_off: int, prev: Strip) -> None:
        self.strip = strip
        self._errors: list[BaseException] = []

        def work() -> None:
            t0 = time.perf_counter()
            try:
                reader.fill(strip, row_off, prev)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                self._errors.append(exc)
            reader.seconds_background += time.perf_counter() - t0

        self._thread = threading.Thread(target=work, name="mmcanet-prefetch", daemon=True)
        self._thread.start()

    def join(self) -> None:
        """Wait for the thread (the strip may be incomplete if it failed)."""
        self._thread.join()

    def result(self) -> Strip:
        """The filled strip, once joined; re-raises the thread's error."""
        if self._errors:
            raise self._errors[0]
        return self.strip
