"""Atomic output files: temporary names, stale partial files, checks before writing, verify + sync + rename.

Outputs are written to a temporary file in the destination folder and renamed only on success, so a
cancelled or failed run never leaves a partial file under the final name, and a previous file of that
name stays intact. Success means the file was closed, re-opened and its first and last blocks read back
(a disk that filled up leaves a file that fails here), and its bytes were synced to disk. The temporary
file is named ``.<name>.partial-<pid>.tif`` next to the output; one left behind by a killed process
(``kill -9``, power loss) is removed by the next run that writes the same output
(:func:`remove_stale_partials`).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

from osgeo import gdal

from .errors import InputError, MMCANetError
from .gdal_calls import gdal_call
from .raster_read import check_readable

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
        remove_partial(tmp)
        raise MMCANetError(f"{what}: cannot finish the file ({exc.strerror or exc}); is the disk full, or the file open in "
                           "another program?") from None
    except BaseException:
        remove_partial(tmp)
        raise
    _fsync_folder(path.parent)
    return path


def remove_partial(tmp: Path) -> None:
    """Delete a temporary file and its .aux.xml side-car, if they exist."""
    for p in (tmp, Path(f"{tmp}.aux.xml")):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
