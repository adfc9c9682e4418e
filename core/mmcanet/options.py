"""Restore options: the one source of their choices, defaults and validation rules.

The CLI (``mmcanet restore``), the ``mmcanet:remove_clouds`` Processing algorithm and the QGIS dock
all read their defaults, choice lists and limits from here, and :func:`validate` runs before any model
is loaded. Importable without numpy, torch or GDAL, so QGIS can use it at start-up.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from .errors import InputError
from .names import STRATEGIES

DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda")
"""Devices a user picks from; ``"cuda:N"`` is also accepted where a device is typed."""
PRECISION_CHOICES: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
"""Arithmetic of the model's forward: ``auto`` = bf16 on a CUDA GPU that has it (Ampere and newer), else fp32."""
SAR_UNITS: tuple[str, ...] = ("auto", "db", "linear")
"""How the SAR values are read: detected, backscatter in dB, or linear power (converted to dB)."""

DEFAULT_TILE_SIZE = 256
"""Tile edge (px) written into new model cards; a model card's value is the default of a restore."""
DEFAULT_OVERLAP = 32
"""Overlap (px) between neighbouring tiles written into new model cards."""
MIN_TILE_SIZE = 16
"""Smallest tile edge (px) a restore accepts."""
MAX_TILE_SIZE = 4096
"""Largest tile edge (px) the QGIS forms offer (the CLI takes any size memory allows)."""
MAX_BATCH_SIZE = 256
"""Largest batch size the QGIS forms offer (the CLI takes any)."""
DEFAULT_DEVICE = "auto"
DEFAULT_BATCH_SIZE = 4
DEFAULT_KEEP_CLEAR: bool | None = None
"""Automatic: see :func:`keeps_clear` (Level-1C: every pixel restored; Level-2A: clear pixels kept)."""
DEFAULT_SAR_UNITS = "auto"
DEFAULT_FEATHER = 2
DEFAULT_CLEAR_WEIGHT = 0.0
DEFAULT_HARMONISE = 64
"""Scale (px) of :func:`mmcanet.inference.blending.harmonise_fill`'s local means; 0 turns it off."""
MAX_HARMONISE = 512
"""Largest harmonisation scale (px) accepted."""
DEFAULT_SAR_STRUCTURE = 8
"""Scale (px) below which :func:`mmcanet.inference.sar_structure.transfer_sar_structure` replaces the fill's
detail by the detail the SAR predicts; 0 turns it off."""
MAX_SAR_STRUCTURE = 64
"""Largest SAR structure scale (px) accepted."""
DEFAULT_PRECISION = "auto"
DEFAULT_OVERVIEWS = True  # only outputs >= 1024 px on a side get them (mmcanet.raster_write.OVERVIEW_MIN_SIZE)
DEFAULT_COG = False  # a COG costs one more copy of the output; plain tiled GeoTIFFs with overviews draw as fast

PathLike = str | os.PathLike[str]


@dataclass
class RestoreOptions:
    """What to restore and how; the defaults here are the defaults of the CLI, of QGIS and of the dock.

    Args:
        sar: Sentinel-1 raster, 2 bands (VV, VH), dB or linear power, any grid overlapping the optical.
        optical: cloudy Sentinel-2 raster, 13 bands L1C (or 12 bands L2A), uint16 DN.
        output: restored GeoTIFF (same bands, grid and data type as the optical input).
        cloud_mask: optional 1-band mask (non-zero = cloud or shadow); default: detected.
        model: model file; None = the bundled default model.
        strategy: progressive strategy (one of :data:`~mmcanet.names.STRATEGIES`); None = the model card's.
        device: ``"auto"`` (CUDA when usable), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        tile_size: tile edge (px); None = the model card's.
        overlap: overlap between neighbouring tiles (px, at most half the tile); None = the model card's.
        batch_size: tiles per forward pass (halved automatically on CUDA out-of-memory).
        keep_clear: keep input pixels where the cloud mask says clear (feathered edge); False: restore
            every pixel; None (default): by the input's processing level (:func:`keeps_clear`): a
            Level-1C image has every pixel restored (also removes haze the detector misses, measured
            better on every real validation image), a Level-2A image keeps its clear pixels (the network
            learned its haze correction on top-of-atmosphere Level-1C; on atmospherically corrected
            Level-2A it made clear pixels worse: docs/QUALITY.md section 9).
        sar_units: ``"auto"`` (detect), ``"db"`` or ``"linear"`` (power, converted to dB).
        mask_output: optional uint8 GeoTIFF of the cloud mask used (1 cloud/shadow, 0 clear, 255 nodata).
        change_output: optional float32 GeoTIFF of the per-pixel change: mean absolute change in
            reflectance over the bands between output and input (0 where the input was kept; -1 =
            nodata). It measures how much was changed, NOT how right it is (formerly "confidence").
        uncertainty_output: optional float32 GeoTIFF, band ``predicted_abs_error``: the trust layer, the
            predicted absolute error of each output pixel (reflectance 0-1, mean over the bands; -1 =
            nodata); pixels kept from the input get the model's calibrated clear-sky difference. Needs
            a model with an error head (docs/TRUST.md).
        feather: width (px) of the soft transition around masked clouds when keeping clear pixels.
        smooth_coarse_bands: under cloud, feed the network the 20 m / 60 m bands Gaussian-smoothed instead
            of as 2 x 2 / 6 x 6 blocks (removes the block grid from the fill; see :mod:`mmcanet.coarse_bands`).
        tame_bright_cloud: under the mask, hand the network the simulator's opaque cloud where the input
            is brighter than any cloud it learned from (real overcast, high ice cloud), so it fills from
            the SAR instead of extrapolating from the cloud's colour (see :mod:`mmcanet.bright_cloud`).
        clear_weight: with ``keep_clear``, the share (0-1) of the restored value in pixels the mask calls
            clear: 0 keeps them exactly; higher values also remove haze the detector missed.
        harmonise: scale (px) over which the fill under the cloud mask takes the local brightness of the
            restored clear pixels around it (one factor for all bands, weighted by how much clear land is
            near); 0 = off. Corrects the fill's drift towards the training set's level (docs/QUALITY.md).
            On Level-2A input whose clear pixels are kept, the fill then also takes, band by band, the
            local level of those input pixels over the same scale (the network restores with Level-1C
            levels; :func:`mmcanet.inference.blending.shift_fill_to_input`).
        sar_structure: scale (px) below which the fill's detail under the cloud mask is replaced by the
            detail the SAR predicts, from a ridge regression fitted per tile on its clear pixels; 0 = off.
        threads: CPU threads for torch; None = automatic (see :func:`mmcanet.devices.configure_threads`).
        extent: area of interest ``(xmin, ymin, xmax, ymax)``; None = the whole optical image. Only the
            optical pixels it touches are read, restored and written (snapped outward to the optical
            grid, clipped to the image); the output covers exactly that window.
        extent_crs: CRS of ``extent`` as GDAL reads it (``"EPSG:4326"``, WKT, PROJ string); None = the
            optical image's CRS.
        precision: the model's arithmetic, one of :data:`PRECISION_CHOICES` (mixed precision through
            ``torch.autocast``; see :func:`mmcanet.devices.resolve_precision`).
        overviews: build internal overviews in every output of at least
            :data:`~mmcanet.raster_write.OVERVIEW_MIN_SIZE` px on a side, so QGIS draws a zoomed-out view
            from a reduced copy instead of reading every pixel (docs/ENGINE.md); False: none.
        cog: write the outputs as Cloud-Optimised GeoTIFFs (GDAL's COG driver) for sharing, e.g. over
            HTTP; same pixels, tags and band names, one more copy at the end of the run.
    """

    sar: PathLike
    optical: PathLike
    output: PathLike
    cloud_mask: PathLike | None = None
    model: PathLike | None = None
    strategy: str | None = None
    device: str = DEFAULT_DEVICE
    tile_size: int | None = None
    overlap: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    keep_clear: bool | None = DEFAULT_KEEP_CLEAR
    sar_units: str = DEFAULT_SAR_UNITS
    mask_output: PathLike | None = None
    change_output: PathLike | None = None
    uncertainty_output: PathLike | None = None
    feather: int = DEFAULT_FEATHER
    clear_weight: float = DEFAULT_CLEAR_WEIGHT
    harmonise: int = DEFAULT_HARMONISE
    sar_structure: int = DEFAULT_SAR_STRUCTURE
    smooth_coarse_bands: bool = True
    tame_bright_cloud: bool = True
    threads: int | None = None
    extent: tuple[float, float, float, float] | None = None
    extent_crs: str | None = None
    precision: str = DEFAULT_PRECISION
    overviews: bool = DEFAULT_OVERVIEWS
    cog: bool = DEFAULT_COG


def is_level_2a(band_names: Sequence[str]) -> bool:
    """Whether an optical image with these band names is Level-2A: it has no B10 (cirrus), which L2A drops."""
    return "B10" not in band_names


def keeps_clear(keep_clear: bool | None, band_names: Sequence[str]) -> bool:
    """Whether clear pixels are kept: ``keep_clear`` when set, else True for Level-2A input (no B10 band).

    Args:
        keep_clear: the option (None = automatic).
        band_names: the optical image's band names (L1C or L2A names, any order).
    """
    if keep_clear is not None:
        return keep_clear
    return is_level_2a(band_names)


def defaults() -> dict[str, Any]:
    """Field name -> default of every :class:`RestoreOptions` field that has one."""
    return {f.name: f.default for f in fields(RestoreOptions) if f.default is not f.default_factory}


def max_overlap(tile_size: int) -> int:
    """Largest overlap (px) allowed for tiles of ``tile_size`` px: half a tile.

    Beyond it a pixel can lie in more than two tiles per axis, and the blending ramps of neighbours
    no longer hand over within their overlap.
    """
    return tile_size // 2


def tiling_problems(tile_size: int | None, overlap: int | None) -> list[str]:
    """What is wrong with a tile size / overlap pair (None: the model card's value, checked later)."""
    problems = []
    if tile_size is not None and tile_size < MIN_TILE_SIZE:
        problems.append(f"tile size {tile_size}: must be at least {MIN_TILE_SIZE} px")
    if tile_size is not None and overlap is not None and not 0 <= overlap <= max_overlap(tile_size):
        problems.append(
            f"overlap {overlap}: must be between 0 and half the tile size ({max_overlap(tile_size)} px)"
        )
    elif overlap is not None and overlap < 0:
        problems.append(f"overlap {overlap}: must be >= 0")
    return problems


def device_problem(device: str) -> str | None:
    """Why ``device`` is not a device name (None when it is one: a choice or ``cuda:N``)."""
    choice = (device or "").strip().lower()
    if choice in DEVICE_CHOICES:
        return None
    if choice.startswith("cuda:") and choice[5:].isdigit():
        return None
    return f"device '{device}': unknown; choose one of {', '.join(DEVICE_CHOICES)} (or cuda:N)"


def problems(options: RestoreOptions) -> list[str]:
    """Every rule ``options`` breaks that can be checked without opening a file or loading a model."""
    found = [p for p in (device_problem(options.device),) if p]
    if options.strategy is not None and options.strategy not in STRATEGIES:
        found.append(f"strategy '{options.strategy}': choose one of {', '.join(STRATEGIES)}")
    found += tiling_problems(options.tile_size, options.overlap)
    if options.batch_size < 1:
        found.append(f"batch size {options.batch_size}: must be >= 1")
    if options.sar_units not in SAR_UNITS:
        found.append(f"SAR units '{options.sar_units}': choose one of {', '.join(SAR_UNITS)}")
    if options.feather < 0:
        found.append(f"feather {options.feather}: must be >= 0")
    if not 0 <= options.harmonise <= MAX_HARMONISE:
        found.append(f"harmonise {options.harmonise}: must be a scale from 0 (off) to {MAX_HARMONISE} px")
    if not 0 <= options.sar_structure <= MAX_SAR_STRUCTURE:
        found.append(f"SAR structure {options.sar_structure}: must be a scale from 0 (off) to {MAX_SAR_STRUCTURE} px")
    if not 0.0 <= options.clear_weight <= 1.0:
        found.append(f"clear weight {options.clear_weight}: must be between 0 (keep clear pixels) and 1 (restore them)")
    if options.precision not in PRECISION_CHOICES:
        found.append(f"precision '{options.precision}': choose one of {', '.join(PRECISION_CHOICES)}")
    if options.threads is not None and options.threads < 1:
        found.append(f"threads {options.threads}: must be >= 1 (or unset for automatic)")
    found += extent_problems(options.extent)
    return found


def extent_problems(extent: Any) -> list[str]:
    """What is wrong with an area of interest ``(xmin, ymin, xmax, ymax)`` (None: whole image, fine)."""
    if extent is None:
        return []
    try:
        values = [float(v) for v in extent]
    except (TypeError, ValueError):
        return [f"extent {extent!r}: expected four numbers xmin, ymin, xmax, ymax"]
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        return [f"extent {extent!r}: expected four finite numbers xmin, ymin, xmax, ymax"]
    xmin, ymin, xmax, ymax = values
    if not (xmin < xmax and ymin < ymax):
        return [f"extent {values}: empty; xmin must be below xmax and ymin below ymax"]
    return []


def validate(options: RestoreOptions) -> None:
    """Raise :class:`~mmcanet.errors.InputError` listing every rule ``options`` breaks (see :func:`problems`)."""
    found = problems(options)
    if found:
        raise InputError("; ".join(found))


def resolve_tiling(options: RestoreOptions, card_tile_size: int, card_overlap: int) -> tuple[int, int]:
    """Tile size and overlap of a run: the options', else the model card's; checked against the rules.

    Raises:
        InputError: when the combination (e.g. an explicit overlap with the card's tile size) breaks a rule.
    """
    tile_size = int(options.tile_size or card_tile_size)
    overlap = int(card_overlap if options.overlap is None else options.overlap)
    found = tiling_problems(tile_size, overlap)
    if found:
        raise InputError("; ".join(found))
    return tile_size, overlap
