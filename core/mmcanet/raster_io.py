"""Raster input/output with osgeo.gdal: open with clear errors, read windows, write GeoTIFFs safely.

QGIS loads its own GDAL; this module uses the same one (``osgeo.gdal``) so there is exactly one GDAL
and one PROJ database in the process. It never changes GDAL's global state for the host application:
it does not call ``gdal.UseExceptions()`` (works whether or not someone else did), does not touch the
block cache size (see :func:`limit_gdal_cache`, which the CLI calls for its own process), and captures
GDAL error messages through a thread-local error handler that is pushed and popped around each call.

Outputs are written to a temporary file in the destination folder and renamed only on success
(:class:`RasterWriter`), so a cancelled or failed run never leaves a partial file under the final name,
and a previous file of that name stays intact. Success means: every GDAL write and flush reported no
error, the file was closed, re-opened and its first and last blocks read back (a disk that filled up
leaves a file that fails here), and its bytes were synced to disk. The temporary file is named
``.<name>.partial-<pid>.tif`` next to the output; one left behind by a killed process (``kill -9``,
power loss) is removed by the next run that writes the same output (:func:`remove_stale_partials`).

Outputs QGIS draws fast: a writer builds internal overviews (2x, 4x, ... reduced copies inside the same
file) before the rename when the raster is at least :data:`OVERVIEW_MIN_SIZE` px on a side, so a
zoomed-out view reads a small overview instead of every full-resolution block. On request it converts
the finished GeoTIFF into a Cloud-Optimised GeoTIFF with GDAL's COG driver (same pixels, tags, band
descriptions and nodata; overviews and the directory at the front of the file, for sharing over HTTP).
Both happen on the temporary file, so the output stays atomic.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from osgeo import gdal, gdal_array

from .cpus import gdal_threads
from .errors import CancelledError, InputError, MMCANetError
from .windows import Window

T = TypeVar("T")

_GDAL_TYPES: dict[np.dtype, int] = {
    np.dtype(np.uint8): gdal.GDT_Byte,
    np.dtype(np.uint16): gdal.GDT_UInt16,
    np.dtype(np.int16): gdal.GDT_Int16,
    np.dtype(np.float32): gdal.GDT_Float32,
}
_DEFAULT_GEOTRANSFORM = (0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


class _ErrorLog:
    """Collects GDAL error/warning messages emitted on this thread while active."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.failures: list[str] = []

    def __call__(self, err_class: int, err_no: int, message: str) -> None:
        if err_class >= gdal.CE_Warning:
            self.messages.append(str(message).strip())
        if err_class >= gdal.CE_Failure:
            self.failures.append(str(message).strip())

    def last(self, default: str = "unknown GDAL error") -> str:
        """The most recent error message (GDAL puts the most specific one last)."""
        return self.messages[-1] if self.messages else default


@contextlib.contextmanager
def gdal_errors() -> Iterator[_ErrorLog]:
    """Capture GDAL messages on this thread instead of printing them (the handler stack is thread-local)."""
    log = _ErrorLog()
    gdal.PushErrorHandler(log)
    try:
        yield log
    finally:
        gdal.PopErrorHandler()


def gdal_call(fn: Callable[..., T], *args: Any, what: str, error: type[MMCANetError] = InputError, **kwargs: Any) -> T:
    """Call a GDAL function and turn a failure (None / non-zero / RuntimeError) into a clear error.

    Works both when GDAL exceptions are enabled (by the host or another plugin) and when they are not.

    Args:
        fn: the GDAL callable.
        *args: its positional arguments.
        what: the thing being worked on, for the message (e.g. ``"optical image '/x/s2.tif'"``).
        error: exception class to raise.
        **kwargs: its keyword arguments.

    Returns:
        Whatever ``fn`` returned.

    Raises:
        error: with ``what`` and GDAL's own message.
    """
    with gdal_errors() as log:
        try:
            result = fn(*args, **kwargs)
        except RuntimeError as exc:  # gdal.UseExceptions() is on somewhere in the process
            raise error(f"{what}: {exc}") from None
    if result is None or (isinstance(result, int) and not isinstance(result, bool) and result != gdal.CE_None):
        raise error(f"{what}: {log.last()}")
    return result


def limit_gdal_cache(megabytes: int) -> None:
    """Cap GDAL's block cache for this process (default is 5% of RAM), unless GDAL_CACHEMAX is set.

    Only for processes we own (the CLI, benchmarks): inside QGIS the cache is QGIS's setting.
    """
    if gdal.GetConfigOption("GDAL_CACHEMAX") or os.environ.get("GDAL_CACHEMAX"):
        return
    gdal.SetCacheMax(int(megabytes) * 1024 * 1024)


@dataclass(frozen=True)
class RasterInfo:
    """What the engine needs to know about an input raster.

    Attributes:
        path: file path as given.
        width: columns (px).
        height: rows (px).
        count: number of bands.
        dtype: numpy dtype of band 1.
        crs_wkt: projection WKT ('' when none).
        geotransform: GDAL geotransform (the default ``(0, 1, 0, 0, 0, 1)`` when none).
        georeferenced: a CRS, a non-default geotransform or GCPs are present.
        nodata: per band nodata value (None when unset).
        descriptions: per band description ('' when unset).
    """

    path: str
    width: int
    height: int
    count: int
    dtype: np.dtype
    crs_wkt: str
    geotransform: tuple[float, ...]
    georeferenced: bool
    nodata: tuple[float | None, ...]
    descriptions: tuple[str, ...]


def open_raster(path: str | os.PathLike[str], what: str, shown: str | None = None) -> tuple[gdal.Dataset, RasterInfo]:
    """Open a raster read-only and describe it.

    Args:
        path: file (or any GDAL dataset name, e.g. a VRT).
        what: role for messages, e.g. ``"optical image"``.
        shown: the path to name in messages and in ``RasterInfo.path`` when ``path`` is a stand-in
            (the in-memory VRT of a band folder, :mod:`mmcanet.stacking`); default ``path``.

    Returns:
        ``(dataset, info)``; keep the dataset referenced while using its bands.

    Raises:
        InputError: when the file is missing, unreadable or has no bands.
    """
    p = os.fspath(path)
    label = f"{what} '{shown or p}'"
    if not p:
        raise InputError(f"{what}: no path given")
    if "://" not in p and not p.startswith("/vsi") and not os.path.exists(p):
        raise InputError(f"{label}: file not found")
    if os.path.isdir(p):
        raise InputError(f"{label}: is a folder, expected a raster file")
    ds = gdal_call(gdal.OpenEx, p, gdal.OF_RASTER | gdal.OF_READONLY, what=f"{label}: cannot be opened as a raster")
    if ds.GetDriver().ShortName == "GTiff":  # decode compressed blocks on this rank's cores (GDAL >= 3.6)
        with gdal_errors():
            threaded = gdal.OpenEx(p, gdal.OF_RASTER | gdal.OF_READONLY, open_options=[f"NUM_THREADS={gdal_threads()}"])
        if threaded is not None:
            ds = threaded
    if ds.RasterCount < 1:
        raise InputError(f"{label}: has no raster bands")
    band = ds.GetRasterBand(1)
    gt = tuple(float(v) for v in ds.GetGeoTransform(can_return_null=True) or _DEFAULT_GEOTRANSFORM)
    wkt = ds.GetProjection() or ""
    georef = bool(wkt) or gt != _DEFAULT_GEOTRANSFORM or ds.GetGCPCount() > 0
    bands = [ds.GetRasterBand(i + 1) for i in range(ds.RasterCount)]
    info = RasterInfo(
        path=shown or p,
        width=ds.RasterXSize,
        height=ds.RasterYSize,
        count=ds.RasterCount,
        dtype=np.dtype(gdal_array.GDALTypeCodeToNumericTypeCode(band.DataType) or np.float64),
        crs_wkt=wkt,
        geotransform=gt,
        georeferenced=georef,
        nodata=tuple(b.GetNoDataValue() for b in bands),
        descriptions=tuple((b.GetDescription() or "").strip() for b in bands),
    )
    return ds, info


def read_window(ds: gdal.Dataset, window: Window, what: str, bands: Sequence[int] | None = None) -> np.ndarray:
    """Read a window of some bands.

    Args:
        ds: an open dataset.
        window: pixels to read (inside the raster).
        what: label for error messages (names the file).
        bands: 1-based band numbers (default: all, in order).

    Returns:
        ``(len(bands), window.height, window.width)`` array in the file's data type.

    Raises:
        InputError: when GDAL cannot read the data (truncated or corrupt file).
    """
    band_list = list(bands) if bands is not None else list(range(1, ds.RasterCount + 1))
    arr = gdal_call(
        ds.ReadAsArray,
        window.col_off,
        window.row_off,
        window.width,
        window.height,
        band_list=band_list,
        what=f"{what}: cannot read pixels {window.col_off},{window.row_off} ({window.width}x{window.height})",
    )
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[None]
    return arr


def read_into(ds: gdal.Dataset, window: Window, out: np.ndarray, what: str, bands: Sequence[int] | None = None) -> None:
    """Read a window of some bands straight into ``out`` (any strides; GDAL converts the data type).

    Args:
        ds: an open dataset.
        window: pixels to read.
        out: ``(len(bands), window.height, window.width)`` array (a view into a larger buffer is fine).
        what: label for error messages (names the file).
        bands: 1-based band numbers (default: all, in order).

    Raises:
        InputError: when GDAL cannot read the data.
    """
    band_list = list(bands) if bands is not None else list(range(1, ds.RasterCount + 1))
    if out.shape != (len(band_list), window.height, window.width):
        raise ValueError(f"buffer shape {out.shape} does not fit {len(band_list)} bands of {window}")
    gdal_call(
        ds.ReadAsArray,
        window.col_off,
        window.row_off,
        window.width,
        window.height,
        buf_obj=out,
        band_list=band_list,
        what=f"{what}: cannot read pixels {window.col_off},{window.row_off} ({window.width}x{window.height})",
    )


def check_readable(ds: gdal.Dataset, what: str) -> None:
    """Read the first and the last row block of every band, so a truncated file fails before any work.

    Raises:
        InputError: naming ``what`` when a read fails.
    """
    bx, by = ds.GetRasterBand(1).GetBlockSize()
    w, h = ds.RasterXSize, ds.RasterYSize
    bw, bh = min(w, max(1, bx), 512), min(h, max(1, by), 512)
    for win in {Window(0, 0, bw, bh), Window(w - bw, h - bh, bw, bh)}:
        read_window(ds, win, what)


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


GEOTIFF_SUFFIXES: tuple[str, ...] = (".tif", ".tiff")
"""File name endings accepted for the GeoTIFFs the project writes (any letter case)."""
STALE_AFTER_S = 24 * 3600.0
"""A partial file whose writer cannot be checked (another host, Windows) is stale after this long."""
_PARTIAL = re.compile(r"^\.(?P<name>.+)\.partial-(?P<pid>\d+)(?:\.src)?(?:\.tif)?(?:\.aux\.xml)?$")


def temp_path_for(path: Path) -> Path:
    """Temporary file used while ``path`` is being written: same folder, hidden, process-specific."""
    return path.with_name(f".{path.name}.partial-{os.getpid()}.tif")


def cog_source_path_for(path: Path) -> Path:
    """Temporary tiled GeoTIFF a Cloud-Optimised ``path`` is converted from (next to :func:`temp_path_for`)."""
    return path.with_name(f".{path.name}.partial-{os.getpid()}.src.tif")


def _pid_alive(pid: int) -> bool | None:
    """Whether process ``pid`` runs on this machine (None: cannot tell on this platform)."""
    if os.name != "posix":
        return None  # os.kill(pid, 0) is not a probe on Windows
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return None
    return True


def remove_stale_partials(path: str | os.PathLike[str]) -> list[Path]:
    """Delete partial files of ``path`` left by a writer that no longer runs (``kill -9``, a crash).

    A partial file is ``.<name>.partial-<pid>[.src][.tif][.aux.xml]`` in the output's folder. It is stale
    when process ``<pid>`` is gone, or (where that cannot be checked) when it is older than
    :data:`STALE_AFTER_S`; a partial file of a writer that still runs is left alone.

    Returns:
        The files removed.
    """
    p = Path(os.fspath(path)).expanduser().absolute()
    removed: list[Path] = []
    try:
        entries = list(p.parent.iterdir())
    except OSError:
        return removed
    now = time.time()
    for f in entries:
        m = _PARTIAL.match(f.name)
        if m is None or m.group("name") != p.name:
            continue
        alive = _pid_alive(int(m.group("pid")))
        try:
            old = now - f.stat().st_mtime > STALE_AFTER_S
        except OSError:
            continue
        if alive is False or (alive is None and old):
            with contextlib.suppress(OSError):
                f.unlink()
                removed.append(f)
    return removed


def check_writable(
    path: str | os.PathLike[str], what: str = "output", suffixes: Sequence[str] = GEOTIFF_SUFFIXES
) -> Path:
    """Check that a file can be created at ``path``: name ends in one of ``suffixes``, the folder exists
    and is writable, and the path is not a folder.

    Args:
        path: the output as given.
        what: role for messages.
        suffixes: accepted endings, compared case-insensitively (default: GeoTIFF, ``.tif`` / ``.tiff``);
            empty to accept any name.

    Returns:
        The absolute path.

    Raises:
        InputError: naming the output and the reason.
    """
    p = Path(os.fspath(path)).expanduser().absolute()
    label = f"{what} '{os.fspath(path)}'"
    if not os.fspath(path):
        raise InputError(f"{what}: no path given")
    if p.is_dir():
        raise InputError(f"{label}: is a folder; give a file name such as {p / 'restored.tif'}")
    if suffixes and p.suffix.lower() not in {s.lower() for s in suffixes}:
        raise InputError(
            f"{label}: the file is written as a GeoTIFF, so its name must end in {' or '.join(suffixes)} "
            f"(got '{p.suffix or 'no extension'}'); e.g. {p.with_suffix(suffixes[0]).name}. To get another "
            "format, convert the GeoTIFF afterwards (gdal_translate -of ...)"
        )
    if not p.parent.is_dir():
        raise InputError(f"{label}: folder '{p.parent}' does not exist")
    if not os.access(p.parent, os.W_OK | os.X_OK):
        raise InputError(f"{label}: folder '{p.parent}' is not writable")
    if p.exists() and not os.access(p, os.W_OK):
        raise InputError(f"{label}: exists and is not writable")
    return p


def _fsync(path: Path) -> None:
    """Push a file's bytes (and on POSIX its folder entry) to the disk; errors mean the data is not safe."""
    fd = os.open(path, os.O_RDWR if os.name == "nt" else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):  # some file systems cannot sync a folder; the file itself is synced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def verify_geotiff(path: Path, width: int, height: int, count: int, what: str) -> None:
    """Re-open a just-written raster and read its first and last blocks of every band.

    Raises:
        MMCANetError: when it cannot be opened, has another size, or a block cannot be read (a file
            truncated by a full disk fails here).
    """
    ds = gdal_call(gdal.OpenEx, str(path), gdal.OF_RASTER | gdal.OF_READONLY,
                   what=f"{what}: the written file cannot be read back (disk full?)", error=MMCANetError)
    if (ds.RasterXSize, ds.RasterYSize, ds.RasterCount) != (width, height, count):
        raise MMCANetError(
            f"{what}: the written file is {ds.RasterXSize}x{ds.RasterYSize} px with {ds.RasterCount} band(s), "
            f"expected {width}x{height} with {count} (disk full?)"
        )
    try:
        check_readable(ds, what)
    except InputError as exc:
        raise MMCANetError(f"{exc} (the written file is incomplete: disk full?)") from None
    ds = None


def finish_geotiff(tmp: Path, path: Path, *, width: int, height: int, count: int, what: str) -> Path:
    """Verify, sync and move a closed temporary GeoTIFF to its final name; on failure delete it.

    The previous file at ``path`` (if any) is replaced only after the new one was verified, and its
    ``.aux.xml`` side-car (statistics and histograms of the old pixels, which GDAL and QGIS would
    otherwise show for the new file) is removed.

    Raises:
        MMCANetError: naming ``what`` when verification, syncing or the rename fails.
    """
    try:
        verify_geotiff(tmp, width, height, count, what)
        _fsync(tmp)
        new_aux = Path(f"{tmp}.aux.xml")
        old_aux = Path(f"{path}.aux.xml")
        if new_aux.exists():
            os.replace(new_aux, old_aux)
        else:
            with contextlib.suppress(FileNotFoundError):
                old_aux.unlink()
        os.replace(tmp, path)
    except OSError as exc:
        _remove_partial(tmp)
        raise MMCANetError(f"{what}: cannot finish the file ({exc.strerror or exc}); is the disk full, or the file open in "
                           "another program?") from None
    except BaseException:
        _remove_partial(tmp)
        raise
    _fsync_folder(path.parent)
    return path


def _remove_partial(tmp: Path) -> None:
    for p in (tmp, Path(f"{tmp}.aux.xml")):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


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
        overviews: build internal overviews at :meth:`commit` (levels from :func:`overview_levels`:
            none below :data:`OVERVIEW_MIN_SIZE` px); False: never.
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
        with gdal_errors() as log:  # a full disk surfaces here, when GDAL writes the blocks out
            self._ds.FlushCache()  # write and release the finished blocks: memory stays flat
        if log.failures:
            raise MMCANetError(f"{self.what}: write failed ({log.failures[0]}); is the disk full?")
        self._pending_row0 += n
        self._pending_rows = 0

    def finish(self, is_canceled: Callable[[], bool] | None = None) -> None:
        """Complete the temporary file (last rows, overviews, COG conversion) without renaming it yet.

        A run with several outputs finishes them all before it commits any, so a cancel or an error
        while overviews are built leaves none of them behind.

        Args:
            is_canceled: polled while overviews are built and while the COG is written; True stops
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
            self._flush_pending()
            ds, self._ds = self._ds, None
            if ds is not None:
                with gdal_errors() as log:
                    ds.FlushCache()
                    ds = None  # closes the file: the TIFF directory is written now
                if log.failures:
                    raise MMCANetError(f"{self.what}: could not be finished ({log.failures[0]}); is the disk full?")
            if self.overview_levels:
                self._build_overviews(is_canceled)
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

    def _build_overviews(self, is_canceled: Callable[[], bool] | None) -> None:
        """Internal overviews of every band, compressed like the full-resolution blocks.

        The closed file is re-opened for update without ``NUM_THREADS``: GDAL 3.6's multi-threaded
        block decoding fails on band-interleaved files of more than a few bands while it reads the
        blocks back ("Bad value 12 for ExtraSamples" from its worker threads, which no handler of
        ours sees; the pixels came out right, but QGIS would log every error). DEFLATE level 1 as in
        :func:`geotiff_creation_options` (the level is not stored in the file; GDAL would use 6).
        """
        ds = gdal_call(gdal.OpenEx, str(self._rows_path), gdal.OF_RASTER | gdal.OF_UPDATE,
                       what=f"{self.what}: the written file cannot be re-opened to add overviews", error=MMCANetError)
        previous = gdal.GetThreadLocalConfigOption("ZLEVEL_OVERVIEW", None)
        gdal.SetThreadLocalConfigOption("ZLEVEL_OVERVIEW", "1")
        try:
            with gdal_errors() as log:
                try:
                    err = ds.BuildOverviews(self.resampling, self.overview_levels, callback=_gdal_progress(is_canceled))
                except RuntimeError as exc:  # gdal.UseExceptions() is on somewhere in the process
                    log.messages.append(str(exc))
                    err = gdal.CE_Failure
                ds.FlushCache()
                ds = None
        finally:
            gdal.SetThreadLocalConfigOption("ZLEVEL_OVERVIEW", previous)
        if is_canceled is not None and is_canceled():
            raise CancelledError(f"{self.what}: cancelled while building overviews; no output was written")
        if err != gdal.CE_None or log.failures:
            raise MMCANetError(f"{self.what}: building overviews failed ({log.last()}); is the disk full?")

    def _convert_to_cog(self, is_canceled: Callable[[], bool] | None) -> None:
        """Copy the finished tiled GeoTIFF into the COG layout at the temporary name, then drop the source."""
        options = [*cog_creation_options(), f"OVERVIEWS={'FORCE_USE_EXISTING' if self.overview_levels else 'NONE'}"]
        with gdal_errors() as log:
            try:
                out = gdal.Translate(str(self.tmp_path), str(self._rows_path), format="COG", creationOptions=options,
                                     callback=_gdal_progress(is_canceled))
            except RuntimeError as exc:  # gdal.UseExceptions() is on somewhere in the process
                log.messages.append(str(exc))
                out = None
            failed = out is None or bool(log.failures)
            out = None  # closes the COG
        if is_canceled is not None and is_canceled():
            raise CancelledError(f"{self.what}: cancelled while writing the Cloud-Optimised GeoTIFF; no output was written")
        if failed:
            raise MMCANetError(f"{self.what}: writing the Cloud-Optimised GeoTIFF failed ({log.last()}); is the disk full?")
        _remove_partial(self._rows_path)

    def discard(self) -> None:
        """Close and delete the temporary file(s) (idempotent)."""
        with gdal_errors():  # closing a file on a full disk reports errors that no longer matter
            self._ds = None
        self._done = True
        _remove_partial(self.tmp_path)
        if self._rows_path != self.tmp_path:
            _remove_partial(self._rows_path)


def _gdal_progress(is_canceled: Callable[[], bool] | None) -> Callable[..., int] | None:
    """A GDAL progress callback that stops the operation (returns 0) once ``is_canceled()`` is True."""
    if is_canceled is None:
        return None

    def callback(complete: float, message: object, data: object) -> int:
        return 0 if is_canceled() else 1

    return callback
