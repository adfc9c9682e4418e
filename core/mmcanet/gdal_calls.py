"""GDAL calls that fail with a clear error, without touching GDAL's global state for the host application.

QGIS loads its own GDAL; the core uses the same one (``osgeo.gdal``) so there is exactly one GDAL and one
PROJ database in the process. Nothing here calls ``gdal.UseExceptions()`` (works whether or not someone
else did) or changes the block cache (:func:`limit_gdal_cache` is for processes the project owns); GDAL's
messages are captured through a thread-local error handler pushed and popped around each call.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from osgeo import gdal

from .errors import InputError, MMCANetError

T = TypeVar("T")


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


def gdal_progress(is_canceled: Callable[[], bool] | None) -> Callable[..., int] | None:
    """A GDAL progress callback that stops the operation (returns 0) once ``is_canceled()`` is True."""
    if is_canceled is None:
        return None

    def callback(complete: float, message: object, data: object) -> int:
        return 0 if is_canceled() else 1

    return callback
