"""rasterio, on the same GDAL as osgeo.gdal: the import, its one-GDAL check, and opening a file with a clear error.

The core reads rasters through rasterio where it has the equivalent (windows, resampled reads,
profiles) and keeps :mod:`osgeo.gdal` for what it lacks. Both must drive ONE libgdal: inside QGIS the
system GDAL is already loaded, and a rasterio wheel from PyPI carries its own GDAL / PROJ (a known
crash source: "no such table: metadata"). ``make setup`` therefore builds rasterio from source against
the system GDAL (``pip install --no-binary rasterio rasterio==1.4.4``).
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import InputError, MMCANetError

INSTALL_HINT = (
    "install a rasterio built on the GDAL that QGIS uses: for QGIS's Python your distribution's package "
    "(Debian/Ubuntu: apt-get install python3-rasterio; OSGeo4W: python3-rasterio); in a virtual environment "
    "apt-get install libgdal-dev, then pip install --no-binary rasterio rasterio==1.4.4 ('make setup' does both)"
)


def bundles_its_own_gdal(rasterio_module: ModuleType) -> bool:
    """True for a rasterio binary wheel: it ships its own libgdal in ``rasterio.libs`` (Linux, Windows) or
    ``rasterio/.dylibs`` (macOS)."""
    here = Path(rasterio_module.__file__ or "").resolve().parent
    return (here.parent / "rasterio.libs").is_dir() or (here / ".dylibs").is_dir()


@functools.cache
def import_rasterio() -> ModuleType:
    """``import rasterio``, refusing a missing one or one that runs on another GDAL than osgeo.gdal.

    Checked once per process. Also starts rasterio's default GDAL environment for this thread, which
    every ``rasterio.open`` would otherwise set up and tear down again (a third of the time of reading
    a small sample file; ``bench/bench_io.py --readers``).

    Raises:
        MMCANetError: rasterio is missing, or it is a wheel with its own GDAL, or its GDAL version
            differs from osgeo.gdal's; the message says how to install the right one.
    """
    try:
        import rasterio
    except ImportError:
        raise MMCANetError(f"reading rasters needs the Python package rasterio, which is not installed: {INSTALL_HINT}")\
            from None
    from osgeo import gdal

    if os.environ.get("MMCANET_ALLOW_RASTERIO_WHEEL") != "1" and (
        bundles_its_own_gdal(rasterio) or rasterio.__gdal_version__ != gdal.__version__
    ):
        raise MMCANetError(
            f"rasterio {rasterio.__version__} at {Path(rasterio.__file__ or '').parent} carries its own GDAL "
            f"({rasterio.__gdal_version__}; osgeo.gdal is {gdal.__version__}); two GDALs in one process crash "
            f"inside QGIS. Remove it and {INSTALL_HINT}"
        )
    rasterio.env.defenv()
    return rasterio


def open_rasterio(path: str | os.PathLike[str], what: str | None = None) -> Any:
    """Open a raster read-only with rasterio (a ``DatasetReader``; use it as a context manager).

    Rasters without georeferencing (the SEN12MS-CR triplets) open without rasterio's
    ``NotGeoreferencedWarning``: they are normal input here.

    Args:
        path: the file.
        what: label for messages (default: the path).

    Raises:
        InputError: when the file is missing or GDAL cannot open it.
    """
    rasterio = import_rasterio()
    label = what or os.fspath(path)
    if not Path(path).is_file():
        raise InputError(f"{label}: file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            return rasterio.open(os.fspath(path))
    except rasterio.errors.RasterioIOError:
        raise InputError(f"{label}: not a readable raster (GDAL could not open it)") from None
