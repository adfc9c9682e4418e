"""Output safety: no output may reach an input, whatever the spelling of either path.

Every command that writes (``restore``, ``detect``, ``simulate``, ``stack``, ``train``, ``evaluate``)
calls :func:`check_outputs` before any work, and the Processing algorithms reach it through the same
core functions. Paths are compared as the file system sees them, not as strings:

* ``os.path.realpath`` of both sides, so ``..``, ``~``, relative paths and symlinked folders or files
  are resolved; ``os.path.samefile`` (device + inode) where both exist, so hard links and
  case-insensitive file systems are caught too;
* an input raster contributes every file GDAL reads for it (``GetFileList``: a VRT's source files,
  a world file, ...), not only its own name;
* an input *folder* (a ``.SAFE`` product, a band folder, a VV/VH folder, a training or evaluation
  data folder, the folder of an ``MTD_MSI*.xml``) is out of bounds as a whole: nothing is written
  inside it, because a file written there would change what the folder holds on the next run (a
  second B04, a third polarisation, a new training image).

The outputs of one command must also differ from one another.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .errors import InputError

PathLike = str | os.PathLike[str]

# GDAL SENTINEL2 driver subdataset names (what QGIS shows for a product it opened)
_S2_SUBDATASET = re.compile(r'^SENTINEL2_L(?:1B|1C|2A):"?(.+?\.xml)"?:[^:]+:[^:]+$', re.IGNORECASE)


@dataclass
class _Footprint:
    """What one input reads: real paths of files, and folders that must stay untouched as a whole."""

    label: str
    files: set[str] = field(default_factory=set)
    folders: set[str] = field(default_factory=set)


def _real(path: str) -> str:
    return os.path.realpath(os.path.expanduser(path))


def _gdal_files(path: str) -> list[str]:
    """Files GDAL reads for the raster ``path`` (empty when it is not a raster GDAL can open)."""
    try:
        from osgeo import gdal
    except ImportError:  # pragma: no cover - the core always has GDAL
        return []
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        try:
            ds = gdal.OpenEx(path, gdal.OF_RASTER | gdal.OF_READONLY)
        except RuntimeError:
            return []
        if ds is None:
            return []
        return [f for f in (ds.GetFileList() or []) if f and not f.startswith("/vsi")]
    finally:
        gdal.PopErrorHandler()


def footprint(path: PathLike, label: str) -> _Footprint:
    """The files and folders an input reads.

    Args:
        path: the input as given (raster file, VRT, ``.SAFE`` folder, ``MTD_MSI*.xml``, GDAL
            ``SENTINEL2_...`` subdataset name, band / VV-VH / data folder, model or list file).
        label: role for messages, e.g. ``"optical image '/x/s2.tif'"``.

    Returns:
        A footprint; empty for a path that does not exist (opening it fails later with its own message).
    """
    fp = _Footprint(label)
    text = os.fspath(path)
    sub = _S2_SUBDATASET.match(text)
    if sub:
        text = sub.group(1)
    if not text or text.startswith("/vsi") or "://" in text:
        return fp
    real = _real(text)
    if os.path.isdir(real):
        fp.folders.add(real)
        return fp
    if not os.path.exists(real):
        return fp
    fp.files.add(real)
    name = os.path.basename(real).upper()
    if name.startswith("MTD_MSI") and name.endswith(".XML"):
        fp.folders.add(os.path.dirname(real))  # the product the metadata file stands for
    else:
        fp.files.update(_real(f) for f in _gdal_files(text))
    return fp


def _inside(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:  # different drives on Windows
        return False


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _clash(out_real: str, out_given: str, fp: _Footprint) -> str | None:
    """Why writing ``out_real`` would touch the input ``fp`` (None when it would not)."""
    for f in fp.files:
        if out_real == f or (os.path.exists(out_given) and _same_file(out_given, f)):
            via = "" if os.path.normcase(os.path.abspath(out_given)) == os.path.normcase(f) else f" (it resolves to '{f}')"
            return f"is a file that {fp.label} reads{via}"
    for folder in fp.folders:
        if out_real == folder:
            return f"is the folder of {fp.label}"
        if _inside(out_real, folder):
            return (
                f"lies inside '{folder}', the folder of {fp.label}; a file written there would change that "
                "input (write next to the folder instead)"
            )
    return None


def check_outputs(
    outputs: Mapping[str, PathLike | None],
    inputs: Mapping[str, PathLike | Iterable[PathLike] | None],
) -> None:
    """Refuse outputs that would overwrite or change an input, and outputs that coincide.

    Args:
        outputs: role -> path of every file or folder the command will write (None / '' skipped),
            e.g. ``{"output": "restored.tif", "mask output": None}``.
        inputs: role -> path (or several paths) of every input the command reads (None skipped),
            e.g. ``{"optical image": "S2.SAFE", "SAR image": "s1.tif", "model": "m.safetensors"}``.

    Raises:
        InputError: naming the output, the input it reaches and how, and what to do.
    """
    prints: list[_Footprint] = []
    for role, value in inputs.items():
        if value is None or value == "":
            continue
        values = [value] if isinstance(value, (str, os.PathLike)) else list(value)
        for v in values:
            if v is not None and os.fspath(v):
                prints.append(footprint(v, f"the {role} '{os.fspath(v)}'"))
    seen: dict[str, str] = {}
    for role, value in outputs.items():
        if value is None or not os.fspath(value):
            continue
        given = os.fspath(value)
        real = _real(given)
        for fp in prints:
            why = _clash(real, given, fp)
            if why:
                raise InputError(f"{role} '{given}' {why}; choose another output name so no input is overwritten")
        for other_real, other_role in seen.items():
            if real == other_real or (os.path.exists(given) and _same_file(given, other_real)):
                raise InputError(f"{role} '{given}' and {other_role} are the same file; give each output its own name")
        seen[real] = f"{role} '{given}'"
