"""Open and validate a restore's inputs and outputs before any work; map the optical bands to the model's.

Everything here is cheap (headers, a few sample windows) and runs before a model is loaded: each
problem is an :class:`~mmcanet.errors.InputError` that names the input. SAR and a given cloud mask
are put on the optical grid by :func:`mmcanet.alignment.align_to` (a lazy warped VRT).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..alignment import Aligned, align_to
from ..area import crop_to_extent
from ..bands import B10_FILL_DN, S1_BANDS, normalise_band_name, s2_file_bands
from ..errors import InputError
from ..modelfile import default_model_path
from ..normalization import Normalization
from ..options import RestoreOptions, validate
from ..output_files import check_writable
from ..outputs import check_outputs
from ..raster_read import RasterInfo, check_readable, open_raster, read_window
from ..reporting import Reporter
from ..sar_units import scene_sar_units
from ..stacking import open_input
from ..windows import Window

REFLECTANCE_P99 = 2.0
"""Floating-point optical pixels whose 99th percentile is at most this are reflectance (0-1), not DN."""


class ModelCardLike(Protocol):
    """The fields of :class:`mmcanet.modelfile.ModelCard` the engine uses."""

    name: str
    version: str
    strategy: str
    tile_size: int
    overlap: int
    s2_bands: tuple[str, ...]
    s1_bands: tuple[str, ...]
    normalization: Normalization


@dataclass
class SceneInputs:
    """Open, validated inputs on the optical grid (the datasets stay referenced here)."""

    optical: Any
    optical_info: RasterInfo
    optical_names: tuple[str, ...]  # canonical band names of the optical file, file order
    optical_nodata: float
    sar: Aligned
    sar_info: RasterInfo
    sar_order: tuple[int, int]  # 1-based file bands holding VV, VH
    sar_units: str
    mask: Aligned | None
    mask_what: str
    output: Path
    mask_output: Path | None
    change_output: Path | None
    uncertainty_output: Path | None

    @property
    def optical_what(self) -> str:
        """How messages name the optical input."""
        return f"optical image '{self.optical_info.path}'"

    @property
    def sar_what(self) -> str:
        """How messages name the SAR input."""
        return f"SAR image '{self.sar_info.path}'"


def optical_band_names(info: RasterInfo, what: str, rep: Reporter) -> tuple[str, ...]:
    """Canonical names of the optical bands in file order, from descriptions or the band count."""
    names, named = s2_file_bands(info.count, info.descriptions, what)
    if not named and any(info.descriptions):
        rep.warn(
            f"{what}: band descriptions {list(info.descriptions)} are not Sentinel-2 band names; "
            f"assuming the standard order {' '.join(names)}"
        )
    return names


def sar_band_order(info: RasterInfo, what: str) -> tuple[int, int]:
    """1-based file bands of VV and VH (descriptions 'VV...'/'VH...' if present, else bands 1, 2)."""
    if info.count != 2:
        hint = ""
        if info.count in (12, 13):
            hint = " (this looks like a Sentinel-2 image: pass it as the optical input)"
        raise InputError(f"{what} has {info.count} band(s){hint}; expected 2 Sentinel-1 bands (VV, VH)")
    found: dict[str, int] = {}
    for i, d in enumerate(info.descriptions):
        for pol in S1_BANDS:
            if pol in d.upper():
                found.setdefault(pol, i + 1)
    if set(found) == set(S1_BANDS) and found["VV"] != found["VH"]:
        return found["VV"], found["VH"]
    return 1, 2


def check_optical_values(ds: Any, info: RasterInfo, what: str) -> None:
    """Refuse optical pixels that are not Sentinel-2 digital numbers (reflectance x 10000).

    Complex pixels, 8-bit images (a picture scaled for display) and floating-point reflectance on the
    0-1 scale would all be restored as if they were DN, giving back the cloudy image or nonsense.

    Raises:
        InputError: naming the input, what was found and how to convert it.
    """
    if info.dtype.kind == "c":
        raise InputError(f"{what}: has complex ({info.dtype}) pixels; expected Sentinel-2 digital numbers "
                         "(reflectance x 10000, uint16)")
    if info.dtype == np.uint8:
        raise InputError(
            f"{what}: has 8-bit pixels (0-255), a picture scaled for display rather than Sentinel-2 reflectance; "
            "give the bands as delivered (uint16 digital numbers = reflectance x 10000)"
        )
    if info.dtype.kind != "f":
        return
    w, h = info.width, info.height
    sw, sh = min(64, w), min(64, h)
    values = []
    for fy in np.linspace(0, 1, 3):
        for fx in np.linspace(0, 1, 3):
            win = Window(int(round(fx * (w - sw))), int(round(fy * (h - sh))), sw, sh)
            a = read_window(ds, win, what).astype(np.float32)
            ok = np.isfinite(a).all(axis=0) & (a != 0).any(axis=0)
            if info.nodata[0] is not None:
                ok &= ~(a == np.float32(info.nodata[0])).all(axis=0)
            values.append(a[:, ok].ravel())
    v = np.concatenate(values)
    if v.size and float(np.percentile(v, 99)) <= REFLECTANCE_P99:
        raise InputError(
            f"{what}: its values (99th percentile {float(np.percentile(v, 99)):.3g}) are reflectance on the 0-1 "
            "scale; the model needs digital numbers = reflectance x 10000. Convert first, e.g. "
            "gdal_translate -scale 0 1 0 10000 -ot UInt16 in.tif out.tif"
        )


def output_dtype(info: RasterInfo) -> np.dtype:
    """Data type of the restored output: uint16 for unsigned DN, int16 for signed DN (a negative nodata
    such as -9999 stays representable), float32 for floating-point DN."""
    if info.dtype.kind == "f":
        return np.dtype(np.float32)
    nodata = info.nodata[0]
    if info.dtype.kind == "i" and nodata is not None and nodata < 0:
        if nodata < np.iinfo(np.int16).min:
            raise InputError(f"optical image '{info.path}': nodata {nodata:g} does not fit a 16-bit output; "
                             "set a nodata value between -32768 and 65535")
        return np.dtype(np.int16)
    if nodata is not None and nodata > np.iinfo(np.uint16).max:
        raise InputError(f"optical image '{info.path}': nodata {nodata:g} does not fit a 16-bit output; "
                         "set a nodata value between -32768 and 65535")
    return np.dtype(np.uint16)


def open_inputs(opts: RestoreOptions, rep: Reporter) -> SceneInputs:
    """Check the options' rules, then open and check every input and output (cheaply).

    Raises:
        InputError: the first problem found, naming the input.
    """
    validate(opts)
    opt_what = f"optical image '{os.fspath(opts.optical)}'"
    sar_what = f"SAR image '{os.fspath(opts.sar)}'"
    opt_ds, opt_info = open_input(opts.optical, "optical image")
    if opts.extent is not None:  # an area of interest: from here on the optical image IS that window
        opt_ds, opt_info, aoi = crop_to_extent(opt_ds, opt_info, opts.extent, opts.extent_crs, opt_what)
        rep.info(f"area of interest: {aoi.width}x{aoi.height} px at column {aoi.col_off}, row {aoi.row_off} "
                 "of the optical image")
    names = optical_band_names(opt_info, opt_what, rep)
    check_optical_values(opt_ds, opt_info, opt_what)
    output_dtype(opt_info)
    sar_ds, sar_info = open_input(opts.sar, "SAR image", sar=True)
    sar_order = sar_band_order(sar_info, sar_what)
    check_readable(opt_ds, opt_what)
    check_readable(sar_ds, sar_what)
    if opt_info.count == 12:
        rep.warn(
            f"{opt_what} has 12 bands (Level-2A, no cirrus band B10): B10 is filled with {B10_FILL_DN:g} DN "
            "for the model and the output has the same 12 bands. Models trained on Level-1C see "
            "surface instead of top-of-atmosphere reflectance: expect lower quality"
        )

    sar = align_to(sar_ds, sar_info, opt_info, what=sar_what, ref_what=opt_what, resample="bilinear", warn=rep.warn)
    units = scene_sar_units(sar_ds, sar_info, sar_what, opts.sar_units)
    if opts.sar_units == "auto" and units == "linear":
        rep.info(f"{sar_what}: values look like linear power; converting to dB (override with sar_units='db')")

    mask: Aligned | None = None
    mask_what = ""
    if opts.cloud_mask:
        mask_what = f"cloud mask '{os.fspath(opts.cloud_mask)}'"
        mask_ds, mask_info = open_raster(opts.cloud_mask, "cloud mask")
        if mask_info.count != 1:
            raise InputError(f"{mask_what} has {mask_info.count} bands; expected 1 band (non-zero = cloud)")
        check_readable(mask_ds, mask_what)
        mask = align_to(mask_ds, mask_info, opt_info, what=mask_what, ref_what=opt_what, resample="near", warn=rep.warn)

    check_outputs(
        {"output": opts.output, "mask output": opts.mask_output, "change output": opts.change_output,
         "uncertainty output": opts.uncertainty_output},
        {"optical image": opts.optical, "SAR image": opts.sar, "cloud mask": opts.cloud_mask,
         "model file": opts.model or default_model_path()},
    )
    output = check_writable(opts.output, "output")
    extra = {}
    for key, label in (("mask_output", "mask output"), ("change_output", "change output"),
                       ("uncertainty_output", "uncertainty output")):
        value = getattr(opts, key)
        extra[key] = check_writable(value, label) if value else None
    nodata = opt_info.nodata[0]
    return SceneInputs(
        optical=opt_ds,
        optical_info=opt_info,
        optical_names=names,
        optical_nodata=float(nodata) if nodata is not None and math.isfinite(nodata) else 0.0,
        sar=sar,
        sar_info=sar_info,
        sar_order=sar_order,
        sar_units=units,
        mask=mask,
        mask_what=mask_what,
        output=output,
        mask_output=extra["mask_output"],
        change_output=extra["change_output"],
        uncertainty_output=extra["uncertainty_output"],
    )


def model_band_map(card: ModelCardLike, names: Sequence[str], what: str) -> list[int]:
    """For each model band, the index of the optical band (file order) that feeds it, -1 = fill B10."""
    if len(tuple(card.s1_bands)) != 2:
        raise InputError(f"model '{card.name}' expects SAR bands {list(card.s1_bands)}; the engine supplies VV, VH")
    index = []
    for b in card.s2_bands:
        nb = normalise_band_name(b)
        if nb in names:
            index.append(list(names).index(nb))
        elif nb == "B10":
            index.append(-1)
        else:
            raise InputError(
                f"model '{card.name}' expects bands {list(card.s2_bands)}, but {what} has no {b} (it has {list(names)})"
            )
    return index


def output_band_map(card: ModelCardLike, names: Sequence[str], what: str) -> list[int]:
    """For each optical band (file order), the index of the model output band that restores it."""
    index = [list(card.s2_bands).index(n) if n in card.s2_bands else -1 for n in names]
    if any(i < 0 for i in index):
        missing = [n for n, i in zip(names, index, strict=True) if i < 0]
        raise InputError(f"model '{card.name}' does not produce bands {missing} of {what}")
    return index
