"""Full-scene restoration: any size, any grid, bounded memory, no seams.

Pipeline of :func:`restore_scene` (see docs/ENGINE.md for the design and measurements):

1. open and validate every input and output *before* any work (band counts, readability, overlap,
   writable output): each problem is an :class:`~mmcanet.errors.InputError` naming the input;
2. align the SAR (and a given cloud mask) onto the optical grid with a lazy GDAL warped VRT
   (:mod:`mmcanet.alignment`); detect dB vs linear SAR (overridable);
3. plan overlapping tiles (:mod:`mmcanet.tiling`); for each tile row read one strip of every input,
   cut tiles out of it, run them in batches through the model under ``torch.inference_mode``;
4. blend overlapping tiles with > 0 raised-cosine weights into a strip buffer
   (:mod:`mmcanet.blending`); rows no later tile touches are composited (clear pixels kept where
   the cloud mask says clear, with a slightly feathered edge), nodata applied and written;
5. write a tiled DEFLATE GeoTIFF to a temporary file in the output folder and rename it on success;
   on any error or cancel the temporary files are removed (:class:`~mmcanet.raster_io.RasterWriter`).

Memory is ``O(tile_size x width)``, independent of the scene height; progress and cancellation are
plain callables polled once per batch, so the same engine drives the CLI, QGIS Processing and the dock.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np
from osgeo import gdal

from . import __version__
from .alignment import Aligned, align_to, check_sar_values, detect_sar_units, sample_sar
from .bands import S2_BANDS_L1C, S2_BANDS_L2A, normalise_band_name
from .blending import StripAccumulator
from .errors import CancelledError, InputError, MMCANetError
from .normalization import Normalization, linear_to_db
from .raster_io import (
    RasterInfo,
    RasterWriter,
    check_readable,
    check_writable,
    open_raster,
    read_into,
    read_window,
)
from .stacking import open_input
from .tiling import Tile, TilePlan, Window, plan_tiles

if TYPE_CHECKING:  # torch is imported when a scene is run, so importing this module stays light (QGIS)
    import torch
    from torch import nn

logger = logging.getLogger(__name__)

Progress = Callable[[float], None]
IsCanceled = Callable[[], bool]
Log = Callable[[str], None]

SAR_UNITS: tuple[str, ...] = ("auto", "db", "linear")
MASK_NODATA = 255
_I = TypeVar("_I")
_O = TypeVar("_O")
_MAX_WORKERS = 4  # threads for the per-tile numpy work between forwards
_CHANNELS_LAST_ON_CPU = True  # run the model on NHWC (channels-last) tensors when it is on the CPU
_COMPOSITE_COLUMNS = 512  # column chunk of the compositing step (bounds its float temporaries)
_READ_COLUMNS = 2048  # column chunk of strip reads (bounds GDAL's cached blocks); a multiple of 256
_PREFETCH_ON_CPU = False  # read the next strip in a background thread also when the model runs on the CPU
_SOURCE_CACHE_BYTES = 64 * 1024 * 1024  # GDAL cache use above which warped sources' blocks are released
CHANGE_NODATA = -1.0


def l2a_b10_fill_dn() -> float:
    """DN put into the cirrus band B10 missing from Level-2A inputs: the training readers' value.

    Imported lazily: :mod:`mmcanet.datasets` imports torch, and this module must stay light to import.
    """
    try:
        from .datasets import B10_FILL_DN
    except ImportError:  # pragma: no cover - datasets module absent in a trimmed build
        return 13.0
    return float(B10_FILL_DN)


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
class RestoreOptions:
    """What to restore and how; the defaults here are the defaults of the CLI and of QGIS.

    Args:
        sar: Sentinel-1 raster, 2 bands (VV, VH), dB or linear power, any grid overlapping the optical.
        optical: cloudy Sentinel-2 raster, 13 bands L1C (or 12 bands L2A), uint16 DN.
        output: restored GeoTIFF (same bands, grid and data type as the optical input).
        cloud_mask: optional 1-band mask (non-zero = cloud or shadow); default: detected.
        model: model file; None = the bundled default model.
        strategy: progressive strategy; None = the model card's.
        device: ``"auto"`` (CUDA when usable), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        tile_size: tile edge (px); None = the model card's.
        overlap: overlap between neighbouring tiles (px); None = the model card's.
        batch_size: tiles per forward pass (halved automatically on CUDA out-of-memory).
        keep_clear: keep input pixels where the cloud mask says clear (feathered edge).
        sar_units: ``"auto"`` (detect), ``"db"`` or ``"linear"`` (power, converted to dB).
        mask_output: optional uint8 GeoTIFF of the cloud mask used (1 cloud/shadow, 0 clear, 255 nodata).
        confidence_output: optional float32 GeoTIFF of the per-pixel change: mean absolute change in
            reflectance over the bands (0 where the input was kept; -1 = nodata).
        feather: width (px) of the soft transition around masked clouds when keeping clear pixels.
        threads: CPU threads for torch; None = automatic (see :func:`mmcanet.devices.configure_threads`).
    """

    sar: str | os.PathLike[str]
    optical: str | os.PathLike[str]
    output: str | os.PathLike[str]
    cloud_mask: str | os.PathLike[str] | None = None
    model: str | os.PathLike[str] | None = None
    strategy: str | None = None
    device: str = "auto"
    tile_size: int | None = None
    overlap: int | None = None
    batch_size: int = 4
    keep_clear: bool = True
    sar_units: str = "auto"
    mask_output: str | os.PathLike[str] | None = None
    confidence_output: str | os.PathLike[str] | None = None
    feather: int = 2
    threads: int | None = None


@dataclass
class RestoreResult:
    """What a restoration produced and how it went.

    Attributes:
        output: the restored GeoTIFF.
        mask_output: the cloud-mask GeoTIFF, when requested.
        confidence_output: the change GeoTIFF, when requested.
        width: scene width (px).
        height: scene height (px).
        tiles: tiles planned.
        tiles_run: tiles that went through the model (the others were all clear or all nodata).
        device: device used.
        model_name: model card name.
        model_version: model card version.
        strategy: strategy used.
        tile_size: tile edge used (px).
        overlap: overlap used (px).
        sar_units: ``"db"`` or ``"linear"`` (as read).
        sar_warped: the SAR was resampled onto the optical grid.
        sar_coverage: fraction of the optical grid covered by SAR.
        cloud_mask_source: ``"given"``, ``"detected"`` or ``"none"``.
        cloud_fraction: fraction of valid pixels masked as cloud or shadow (NaN without a mask).
        nodata_fraction: fraction of output pixels that are nodata.
        seconds: wall time of the whole call.
        timings: seconds per phase on the calling thread: ``read`` (first strip, waiting for the
            prefetch, tile preparation), ``detect``, ``model`` (forward only), ``blend``, ``write``
            (compositing and output); ``read_background``: the prefetch thread's time (reading and
            warping the next strip while the model runs; overlaps the others).
        warnings: everything the user should know (also sent to ``log``).
    """

    output: Path
    mask_output: Path | None
    confidence_output: Path | None
    width: int
    height: int
    tiles: int
    tiles_run: int
    device: str
    model_name: str
    model_version: str
    strategy: str
    tile_size: int
    overlap: int
    sar_units: str
    sar_warped: bool
    sar_coverage: float
    cloud_mask_source: str
    cloud_fraction: float
    nodata_fraction: float
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------
# Opening and validating the inputs
# ----------------------------------------------------------------------------------------------------


@dataclass
class _Inputs:
    """Open, validated inputs on the optical grid (datasets stay referenced here)."""

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
    confidence_output: Path | None


class _Reporter:
    """Sends messages to the caller's log and keeps the warnings for the result."""

    def __init__(self, log: Log | None) -> None:
        self._log = log
        self.warnings: list[str] = []

    def info(self, msg: str) -> None:
        logger.info(msg) if self._log is None else self._log(msg)

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        logger.warning(msg) if self._log is None else self._log(f"warning: {msg}")


def _optical_band_names(info: RasterInfo, what: str, rep: _Reporter) -> tuple[str, ...]:
    """Canonical names of the optical bands in file order, from descriptions or the band count."""
    if info.count not in (12, 13):
        hint = " (this looks like an RGB/RGBA image)" if info.count in (3, 4) else ""
        hint = " (this looks like a Sentinel-1 image: pass it as SAR)" if info.count == 2 else hint
        raise InputError(
            f"{what} has {info.count} band(s){hint}; expected a Sentinel-2 image with 13 bands "
            f"(Level-1C: {' '.join(S2_BANDS_L1C)}) or 12 bands (Level-2A, no B10)"
        )
    default = S2_BANDS_L1C if info.count == 13 else S2_BANDS_L2A
    names = tuple(normalise_band_name(d) for d in info.descriptions)
    if any(info.descriptions):
        if sorted(names) == sorted(default):
            return names
        rep.warn(
            f"{what}: band descriptions {list(info.descriptions)} are not Sentinel-2 band names; "
            f"assuming the standard order {' '.join(default)}"
        )
    return default


def _sar_band_order(info: RasterInfo, what: str) -> tuple[int, int]:
    """1-based file bands of VV and VH (descriptions 'VV...'/'VH...' if present, else bands 1, 2)."""
    if info.count != 2:
        hint = ""
        if info.count in (12, 13):
            hint = " (this looks like a Sentinel-2 image: pass it as the optical input)"
        raise InputError(f"{what} has {info.count} band(s){hint}; expected 2 Sentinel-1 bands (VV, VH)")
    found: dict[str, int] = {}
    for i, d in enumerate(info.descriptions):
        for pol in ("VV", "VH"):
            if pol in d.upper():
                found.setdefault(pol, i + 1)
    if set(found) == {"VV", "VH"} and found["VV"] != found["VH"]:
        return found["VV"], found["VH"]
    return 1, 2


def _open_inputs(opts: RestoreOptions, rep: _Reporter) -> _Inputs:
    """Open and check everything (cheaply) before any model or tile work; raises InputError."""
    if opts.sar_units not in SAR_UNITS:
        raise InputError(f"SAR units '{opts.sar_units}': choose one of {', '.join(SAR_UNITS)}")
    if opts.batch_size < 1:
        raise InputError(f"batch size {opts.batch_size}: must be >= 1")
    if opts.feather < 0:
        raise InputError(f"feather {opts.feather}: must be >= 0")

    opt_what = f"optical image '{os.fspath(opts.optical)}'"
    sar_what = f"SAR image '{os.fspath(opts.sar)}'"
    opt_ds, opt_info = open_input(opts.optical, "optical image")
    names = _optical_band_names(opt_info, opt_what, rep)
    if opt_info.dtype.kind == "f":
        rep.warn(f"{opt_what} has floating-point pixels; they are read as DN (reflectance x 10000)")
    sar_ds, sar_info = open_input(opts.sar, "SAR image", sar=True)
    sar_order = _sar_band_order(sar_info, sar_what)
    check_readable(opt_ds, opt_what)
    check_readable(sar_ds, sar_what)
    if opt_info.count == 12:
        rep.warn(
            f"{opt_what} has 12 bands (Level-2A, no cirrus band B10): B10 is filled with {l2a_b10_fill_dn():g} DN "
            "for the model and the output has the same 12 bands. Models trained on Level-1C see "
            "surface instead of top-of-atmosphere reflectance: expect lower quality"
        )

    sar = align_to(sar_ds, sar_info, opt_info, what=sar_what, ref_what=opt_what, resample="bilinear", warn=rep.warn)
    if opts.sar_units == "auto":
        units = detect_sar_units(sar_ds, sar_info, sar_what)
        if units == "linear":
            rep.info(f"{sar_what}: values look like linear power; converting to dB (override with sar_units='db')")
    else:
        check_sar_values(sample_sar(sar_ds, sar_info, sar_what), sar_info, sar_what)
        units = opts.sar_units

    mask: Aligned | None = None
    mask_what = ""
    if opts.cloud_mask:
        mask_what = f"cloud mask '{os.fspath(opts.cloud_mask)}'"
        mask_ds, mask_info = open_raster(opts.cloud_mask, "cloud mask")
        if mask_info.count != 1:
            raise InputError(f"{mask_what} has {mask_info.count} bands; expected 1 band (non-zero = cloud)")
        check_readable(mask_ds, mask_what)
        mask = align_to(mask_ds, mask_info, opt_info, what=mask_what, ref_what=opt_what, resample="near", warn=rep.warn)

    output = check_writable(opts.output, "output")
    extra = {}
    for key, label in (("mask_output", "mask output"), ("confidence_output", "confidence output")):
        value = getattr(opts, key)
        extra[key] = check_writable(value, label) if value else None
    ins = {Path(os.fspath(p)).expanduser().absolute() for p in (opts.sar, opts.optical, opts.cloud_mask) if p}
    outs = [p for p in (output, extra["mask_output"], extra["confidence_output"]) if p is not None]
    for p in outs:
        if p in ins:
            raise InputError(f"output '{p}' is also an input; choose another file name")
    if len(set(outs)) != len(outs):
        raise InputError(f"output files must differ: {', '.join(map(str, outs))}")

    nodata = opt_info.nodata[0]
    return _Inputs(
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
        confidence_output=extra["confidence_output"],
    )


def _model_band_map(card: ModelCardLike, names: Sequence[str], what: str) -> list[int]:
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


# ----------------------------------------------------------------------------------------------------
# Per-tile work
# ----------------------------------------------------------------------------------------------------


def _sliding(a: np.ndarray, radius: int, op: str) -> np.ndarray:
    """Separable ``(2 radius + 1)^2`` max or mean filter of a 2-D array (edges: window clipped)."""
    out = a
    for axis in (0, 1):
        n = out.shape[axis]
        if op == "max":
            pad = [(0, 0), (0, 0)]
            pad[axis] = (radius, radius)
            padded = np.pad(out, pad, mode="edge")
            acc = np.take(padded, range(0, n), axis=axis)
            for k in range(1, 2 * radius + 1):
                acc = np.maximum(acc, np.take(padded, range(k, k + n), axis=axis))
            out = acc
        else:
            c = np.cumsum(np.moveaxis(out, axis, 0), axis=0, dtype=np.float64)
            c = np.concatenate([np.zeros((1, *c.shape[1:])), c])
            i = np.arange(n)
            hi, lo = np.minimum(i + radius + 1, n), np.maximum(i - radius, 0)
            mean = (c[hi] - c[lo]) / (hi - lo)[:, None]
            out = np.moveaxis(mean, 0, axis)
    return out


def _feather(mask: np.ndarray, radius: int) -> np.ndarray:
    """Soft restore weight: 1 on the mask, falling linearly to 0 over ``2 * radius`` px outside it.

    Args:
        mask: bool ``(H, W)``.
        radius: px.

    Returns:
        float32 ``(H, W)`` in [0, 1].
    """
    m = mask.astype(np.float32)
    if radius > 0 and mask.any() and not mask.all():
        m = _sliding(_sliding(m, radius, "max"), radius, "mean")
    return np.clip(m, 0.0, 1.0).astype(np.float32)


_LIBC: Any = None
_TRIM_GROWTH = 1.15  # RSS growth over the first strips' that triggers giving free heap pages back


def _rss_bytes() -> int | None:
    """Resident set size of this process (Linux ``/proc/self/statm``), None elsewhere."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _release_free_memory() -> None:
    """Give freed heap pages back to the OS (glibc ``malloc_trim``). No-op off glibc."""
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes

            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


class _MemoryGuard:
    """Trims the heap only when the RSS creeps above what the first strips needed.

    Model activations and strip temporaries of different sizes alternate; glibc may keep the
    fragmented free memory, and the peak RSS would creep up with the scene. Trimming after every
    strip stops that but costs time: the next forward has to fault the released pages back in. So the
    RSS is checked after every strip and the heap trimmed only when it has grown by more than
    ``_TRIM_GROWTH`` over the level after the second strip.
    """

    def __init__(self) -> None:
        self.strips = 0
        self.baseline: int | None = None

    def after_strip(self) -> None:
        self.strips += 1
        rss = _rss_bytes()
        if rss is None:  # no /proc: trim every strip, as memory cannot be watched
            _release_free_memory()
            return
        if self.strips <= 2:
            self.baseline = max(self.baseline or 0, rss)
        elif self.baseline is not None and rss > self.baseline * _TRIM_GROWTH:
            _release_free_memory()


def _all_bands_equal(stack: np.ndarray, value: np.ndarray) -> np.ndarray:
    """``np.all(stack == value, axis=0)`` for a ``(bands, h, w)`` stack, reading the other bands only
    where the first band holds ``value`` (usually nowhere: one pass instead of one per band)."""
    first = stack[0] == value
    if not first.any():
        return first
    rows, cols = np.nonzero(first)
    first[rows, cols] = np.all(stack[:, rows, cols] == value, axis=0)
    return first


def _detector() -> Callable[[np.ndarray], Any] | None:
    try:
        from .clouds.detect import detect_clouds
    except ImportError:
        return None
    return detect_clouds


@dataclass
class _Strip:
    """One tile row's worth of input rows, on the optical grid."""

    row_off: int
    s2_dn: np.ndarray  # (n_in, h, W) file dtype, file band order
    s1_db: np.ndarray  # (2, h, W) float32 dB, VV VH
    invalid: np.ndarray  # bool (h, W): optical nodata or SAR missing
    mask: np.ndarray | None  # bool (h, W) given cloud mask (unknown = cloud)


class _Runner:
    """Runs one scene through a model; holds the plan, the strip buffer and the outputs."""

    def __init__(
        self,
        model: nn.Module,
        card: ModelCardLike,
        device: torch.device,
        opts: RestoreOptions,
        ins: _Inputs,
        rep: _Reporter,
        progress: Progress | None,
        is_canceled: IsCanceled | None,
    ) -> None:
        self.model, self.card, self.device, self.opts, self.ins, self.rep = model, card, device, opts, ins, rep
        self.progress = progress or (lambda _f: None)
        self.is_canceled = is_canceled or (lambda: False)
        self.norm: Normalization = card.normalization
        self.opt_what = f"optical image '{ins.optical_info.path}'"
        self.sar_what = f"SAR image '{ins.sar_info.path}'"
        self.band_map = _model_band_map(card, ins.optical_names, self.opt_what)
        self.b10_fill = np.float32(l2a_b10_fill_dn() / self.norm.s2_max_dn)
        names = ins.optical_names
        self.out_from_model = [list(card.s2_bands).index(n) if n in card.s2_bands else -1 for n in names]
        if any(i < 0 for i in self.out_from_model):
            missing = [n for n, i in zip(names, self.out_from_model, strict=True) if i < 0]
            raise InputError(f"model '{card.name}' does not produce bands {missing} of {self.opt_what}")
        self.detect_order = [names.index(n) for n in (S2_BANDS_L1C if len(names) == 13 else S2_BANDS_L2A)]
        self.detect = None
        self.mask_source = "none"
        if ins.mask is not None:
            self.mask_source = "given"
        else:  # detected even without keep_clear: the model may use the mask
            self.detect = _detector()
            if self.detect is None:
                rep.warn("no cloud detector in this build and no cloud mask given: every pixel is restored")
            else:
                self.mask_source = "detected"
        self.tile_size = int(opts.tile_size or card.tile_size)
        self.overlap = int(card.overlap if opts.overlap is None else opts.overlap)
        if self.tile_size < 16:
            raise InputError(f"tile size {self.tile_size}: must be at least 16 px")
        if not 0 <= self.overlap <= self.tile_size // 2:
            raise InputError(f"overlap {self.overlap}: must be between 0 and half the tile size ({self.tile_size // 2} px)")
        info = ins.optical_info
        self.plan: TilePlan = plan_tiles(info.width, info.height, self.tile_size, self.overlap)
        self.n_in = len(names)
        # strip channels: composited DN (n_in), cloud mask
        self.acc = StripAccumulator(self.plan, self.n_in + 1, self.overlap)
        # datasets whose blocks are released after each read chunk; the sources behind warped VRTs
        # are released when GDAL's cache holds more than _SOURCE_CACHE_BYTES (their blocks straddle
        # strips and are worth keeping briefly, but would otherwise fill the cache as the scene is read)
        self._datasets = [ins.optical] + [a.dataset for a in (ins.sar, ins.mask) if a is not None]
        self._sources = [a.source for a in (ins.sar, ins.mask) if a is not None and a.warped and a.source is not None]
        self.batch_size = opts.batch_size
        self.timings = {"read": 0.0, "read_background": 0.0, "detect": 0.0, "model": 0.0, "blend": 0.0, "write": 0.0}
        self.tiles_run = 0
        self.masked_px = 0
        self.valid_px = 0
        self.nodata_px = 0
        self._checked_output = False
        self._pool: ThreadPoolExecutor | None = None
        self._memory = _MemoryGuard()
        self._same_bands = self.band_map == list(range(len(self.band_map)))
        self._out_in_order = self.out_from_model == list(range(len(self.out_from_model)))
        self._detect_in_order = self.detect_order == list(range(len(self.detect_order)))
        self._s2_batch = np.zeros((0, len(self.band_map), 1, 1), np.float32)
        self._s1_batch = np.zeros((0, 2, 1, 1), np.float32)

    # -- reading -------------------------------------------------------------------------------

    def _new_strip(self) -> _Strip:
        """Strip buffers for one tile row (allocated twice per run: one in use, one being read)."""
        th, width = self.plan.tile_height, self.ins.optical_info.width
        return _Strip(
            row_off=-1,
            s2_dn=np.zeros((self.n_in, th, width), self.ins.optical_info.dtype),
            s1_db=np.zeros((2, th, width), np.float32),
            invalid=np.zeros((th, width), bool),
            mask=np.zeros((th, width), bool) if self.ins.mask is not None else None,
        )

    def _read_rows(self, strip: _Strip, row_off: int, n: int, dst: int) -> None:
        """Read raster rows ``[row_off, row_off + n)`` of every input into strip rows ``[dst, dst + n)``.

        Reads go straight into the strip buffers, in column chunks after each of which the inputs'
        GDAL blocks are released: memory does not depend on the size of GDAL's (shared) cache.
        """
        ins = self.ins
        width = ins.optical_info.width
        rows = slice(dst, dst + n)
        for c0 in range(0, width, _READ_COLUMNS):
            cw = min(_READ_COLUMNS, width - c0)
            cs = slice(c0, c0 + cw)
            win = Window(c0, row_off, cw, n)
            s2 = strip.s2_dn[:, rows, cs]
            read_into(ins.optical, win, s2, self.opt_what)
            invalid = _all_bands_equal(s2, np.array(ins.optical_nodata).astype(s2.dtype))
            if s2.dtype.kind == "f":
                invalid |= ~np.isfinite(s2).all(axis=0)
            s1 = strip.s1_db[:, rows, cs]
            read_into(ins.sar.dataset, win, s1, self.sar_what, bands=list(ins.sar_order))
            invalid |= ~np.isfinite(s1).all(axis=0)
            if ins.sar.nodata is not None and math.isfinite(ins.sar.nodata):
                invalid |= (s1 == np.float32(ins.sar.nodata)).any(axis=0)
            if ins.sar_units == "linear":
                invalid |= (s1 <= 0).any(axis=0)
                s1[...] = linear_to_db(s1)
            strip.invalid[rows, cs] = invalid
            if ins.mask is not None and strip.mask is not None:
                m = read_window(ins.mask.dataset, win, ins.mask_what)[0]
                strip.mask[rows, cs] = m != 0  # unknown (nodata / outside) counts as cloud: never kept blindly
            for ds in self._datasets:
                ds.FlushCache()
            if self._sources and gdal.GetCacheUsed() > _SOURCE_CACHE_BYTES:
                for ds in self._sources:
                    ds.FlushCache()

    def _fill(self, strip: _Strip, row_off: int, prev: _Strip | None) -> None:
        """Load the strip of the tile row at ``row_off``; rows shared with ``prev`` are copied from it,
        so every input row is read (and SAR-warped) exactly once."""
        height = self.plan.tile_height
        keep = 0
        if prev is not None and prev.row_off <= row_off < prev.row_off + height:
            keep = prev.row_off + height - row_off
            shift = row_off - prev.row_off
            for dst, src in ((strip.s2_dn, prev.s2_dn), (strip.s1_db, prev.s1_db), (strip.invalid, prev.invalid),
                             (strip.mask, prev.mask)):
                if dst is not None and src is not None:
                    dst[..., :keep, :] = src[..., shift : shift + keep, :]
        if keep < height:
            self._read_rows(strip, row_off + keep, height - keep, keep)
        strip.row_off = row_off

    def _prefetch(self, strip: _Strip, row_off: int, prev: _Strip) -> tuple[threading.Thread, list[BaseException]]:
        """Fill the next strip in a background thread while the current tile row runs through the model.

        Only this thread touches the input datasets meanwhile (GDAL handles are not shared across
        threads); GDAL decoding and warping release the GIL, so reading overlaps the model's work.
        """
        errors: list[BaseException] = []

        def work() -> None:
            t0 = time.perf_counter()
            try:
                self._fill(strip, row_off, prev)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                errors.append(exc)
            self.timings["read_background"] += time.perf_counter() - t0

        thread = threading.Thread(target=work, name="mmcanet-prefetch", daemon=True)
        thread.start()
        return thread, errors

    # -- model ---------------------------------------------------------------------------------

    def _s2_unit(self, dn: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """S2 DN -> model units (float32 0-1), into ``out`` when given; integer DN take a fast path
        (no NaN/inf to clean): ``min(dn / max_dn, 1)``, the same values as ``Normalization.s2_to_unit``."""
        if dn.dtype.kind not in "ui":
            unit = self.norm.s2_to_unit(dn)
            if out is None:
                return unit
            out[...] = unit
            return out
        unit = np.divide(dn, np.float32(self.norm.s2_max_dn), out=out, dtype=np.float32)
        np.minimum(unit, np.float32(1.0), out=unit)
        return unit

    def _ensure_batch_buffers(self, n: int) -> None:
        """Model-input buffers for ``n`` tiles (grown once; reused for every batch)."""
        if self._s2_batch.shape[0] < n:
            th, tw = self.plan.tile_height, self.plan.tile_width
            self._s2_batch = np.zeros((n, len(self.band_map), th, tw), np.float32)
            self._s1_batch = np.zeros((n, 2, th, tw), np.float32)

    def _forward(self, s2: torch.Tensor, s1: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Model forward with automatic batch splitting on CUDA out-of-memory."""
        import torch

        try:
            y = self.model(s2, s1, mask=mask)
        except torch.cuda.OutOfMemoryError:
            if s2.shape[0] == 1:
                raise MMCANetError(
                    f"out of GPU memory even for one {s2.shape[-2]}x{s2.shape[-1]} tile; use a smaller tile size or --device cpu"
                ) from None
            torch.cuda.empty_cache()
            half = s2.shape[0] // 2
            self.batch_size = max(1, min(self.batch_size, half))
            self.rep.warn(f"out of GPU memory: batch size reduced to {self.batch_size}")
            parts = [
                self._forward(s2[a:b], s1[a:b], None if mask is None else mask[a:b])
                for a, b in ((0, half), (half, s2.shape[0]))
            ]
            return torch.cat(parts)
        if not isinstance(y, torch.Tensor) or y.shape != (s2.shape[0], len(self.card.s2_bands), *s2.shape[-2:]):
            shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise MMCANetError(
                f"model '{self.card.name}' returned {shape}; expected {(s2.shape[0], len(self.card.s2_bands), *s2.shape[-2:])}"
            )
        return y

    def _prepare(self, tile: Tile, strip: _Strip, slot: int) -> tuple[np.ndarray | None, np.ndarray, float, float]:
        """Model inputs of one tile into batch slot ``slot``; its cloud mask and restore weight.

        Thread-safe: reads the strip and writes only its own slot of the batch buffers.
        Returns ``(mask or None, alpha, seconds detecting, seconds in total)``.
        """
        t0 = time.perf_counter()
        w = tile.window
        rows = slice(w.row_off - strip.row_off, w.row_end - strip.row_off)
        cols = slice(w.col_off, w.col_end)
        s2_slot = self._s2_batch[slot]
        if self._same_bands:  # normalise straight into the batch buffer
            unit = self._s2_unit(strip.s2_dn[:, rows, cols], out=s2_slot)
        else:
            unit = self._s2_unit(strip.s2_dn[:, rows, cols])
            for k, j in enumerate(self.band_map):
                s2_slot[k] = unit[j] if j >= 0 else self.b10_fill
        invalid = strip.invalid[rows, cols]
        mask = strip.mask[rows, cols] if strip.mask is not None else None
        detect_s = 0.0
        if mask is None and self.detect is not None:
            t1 = time.perf_counter()
            cm = self.detect(unit if self._detect_in_order else unit[self.detect_order])
            mask = np.asarray(cm.cloud) | np.asarray(cm.shadow)
            detect_s = time.perf_counter() - t1
        if self.opts.keep_clear and mask is not None:
            alpha = _feather(mask, self.opts.feather)
        else:
            alpha = np.ones(invalid.shape, np.float32)
        alpha[invalid] = 0.0
        self._s1_batch[slot] = self.norm.s1_to_unit(strip.s1_db[:, rows, cols])
        return mask, alpha, detect_s, time.perf_counter() - t0

    def _map(self, fn: Callable[[_I], _O], items: list[_I]) -> list[_O]:
        """``[fn(x) for x in items]``, on the CPU worker threads when there is more than one item.

        The model has the cores while it runs; between forwards this per-tile numpy work (most of it
        GIL-free) would otherwise leave all but one core idle.
        """
        if self._pool is None or len(items) < 2:
            return [fn(x) for x in items]
        return list(self._pool.map(fn, items))

    def _run_tiles(self, tiles: list[Tile], strip: _Strip) -> None:
        """Prepare, run and accumulate one batch of tiles of the current strip."""
        t0 = time.perf_counter()
        self._ensure_batch_buffers(len(tiles))
        prepared = self._map(lambda k: self._prepare(tiles[k], strip, k), list(range(len(tiles))))
        masks = [p[0] for p in prepared]
        alphas = [p[1] for p in prepared]
        run = [bool(a.any()) for a in alphas]
        elapsed = time.perf_counter() - t0
        # wall time split between detection and the rest of the preparation by their thread times
        busy = sum(p[3] for p in prepared)
        detect_s = elapsed * sum(p[2] for p in prepared) / busy if busy > 0 else 0.0
        self.timings["detect"] += detect_s
        self.timings["read"] += elapsed - detect_s  # reading + tile preparation

        outputs: dict[int, np.ndarray] = {}
        idx = [i for i, r in enumerate(run) if r]
        if idx:
            import torch

            # the batch buffers are used in place when every tile runs (the usual case)
            s2_np = self._s2_batch[: len(tiles)] if len(idx) == len(tiles) else self._s2_batch[idx]
            s1_np = self._s1_batch[: len(tiles)] if len(idx) == len(tiles) else self._s1_batch[idx]
            s2_t = torch.from_numpy(s2_np).to(self.device, memory_format=self._memory_format)
            s1_t = torch.from_numpy(s1_np).to(self.device, memory_format=self._memory_format)
            m_t = None
            given = [m for m in (masks[i] for i in idx) if m is not None]
            if len(given) == len(idx):
                m_t = torch.from_numpy(np.stack(given).astype(np.float32)[:, None]).to(self.device)
            t1 = time.perf_counter()
            with torch.inference_mode():
                y = self._forward(s2_t, s1_t, m_t).float().clamp_(0.0, 1.0).cpu().contiguous().numpy()
            self.timings["model"] += time.perf_counter() - t1
            for k, i in enumerate(idx):
                outputs[i] = y[k]
            self.tiles_run += len(idx)

        t2 = time.perf_counter()
        scale = np.float32(self.norm.s2_max_dn)

        def weighted(i: int) -> np.ndarray:
            w = tiles[i].window
            # each tile contributes its composited DN: alpha * restored + (1 - alpha) * input. The input
            # is the same in every tile, so blending these equals compositing the blend, and no alpha
            # plane is needed; where alpha = 0 the input DN comes back exactly (even above 10000).
            values = np.empty((self.n_in + 1, w.height, w.width), np.float32)
            restored = None
            if i in outputs:
                restored = outputs[i] if self._out_in_order else outputs[i][self.out_from_model]
            if restored is not None and alphas[i].min() >= 1.0:  # restored everywhere: the input drops out
                np.multiply(restored, scale, out=values[: self.n_in])
            else:
                rows = slice(w.row_off - strip.row_off, w.row_end - strip.row_off)
                values[: self.n_in] = strip.s2_dn[:, rows, w.col_off : w.col_end]
                if restored is not None:
                    values[: self.n_in] += alphas[i] * (restored * scale - values[: self.n_in])
            values[self.n_in] = 0.0 if masks[i] is None else masks[i]
            return self.acc.apply_weight(tiles[i], values)

        for i, values in enumerate(self._map(weighted, list(range(len(tiles))))):
            self.acc.add_weighted(tiles[i], values)
        self.timings["blend"] += time.perf_counter() - t2

    # -- compositing and writing -----------------------------------------------------------------

    def _composite(self, strip: _Strip, upto_row: int, writers: dict[str, RasterWriter]) -> None:
        """Turn the finished blended rows into output DN (keeping clear input pixels) and write them.

        Rows are split at the outputs' block-row boundaries and composited straight into the writers'
        buffers, column chunk by column chunk, so no full-width float (or extra uint16) copy exists.
        """
        t0 = time.perf_counter()
        row0, sums = self.acc.finished(upto_row)
        width = sums.shape[2]
        out_writer = writers["output"]
        nodata = np.float32(self.ins.optical_nodata)
        row = row0
        while row < upto_row:
            n = min(upto_row - row, *(w.room() for w in writers.values()))
            out_rows = out_writer.region(row, n)
            mask_rows = writers["mask"].region(row, n) if "mask" in writers else None
            change_rows = writers["confidence"].region(row, n) if "confidence" in writers else None
            a = row - row0  # rows in the accumulator
            r = slice(row - strip.row_off, row - strip.row_off + n)  # rows in the strip

            def chunk(c0: int, row: int = row, n: int = n, a: int = a, r: slice = r,
                      out_rows: np.ndarray = out_rows, mask_rows: np.ndarray | None = mask_rows,
                      change_rows: np.ndarray | None = change_rows) -> tuple[int, int, int]:
                cs = slice(c0, min(width, c0 + _COMPOSITE_COLUMNS))
                mean = sums[:, a : a + n, cs] / self.acc.weight(slice(row, row + n), cs)
                invalid = strip.invalid[r, cs]
                out = mean[: self.n_in]
                if out_writer.dtype.kind in "ui":
                    info = np.iinfo(out_writer.dtype)
                    np.clip(np.rint(out, out=out), info.min, info.max, out=out)
                valid = ~invalid
                # a restored pixel must not read as nodata (nodata = every band equal to the nodata value)
                clash = valid & np.all(out == nodata, axis=0)
                if clash.any():
                    out[:, clash] = nodata + (1 if nodata < 1 else -1)
                out[:, invalid] = nodata
                out_rows[:, :, cs] = out
                cloud = mean[self.n_in] >= 0.5
                if mask_rows is not None:
                    mask_rows[0, :, cs] = np.where(invalid, MASK_NODATA, cloud)
                if change_rows is not None:
                    dn_in = strip.s2_dn[:, r, cs].astype(np.float32)
                    change = np.mean(np.abs(out - dn_in), axis=0) / np.float32(self.norm.s2_max_dn)
                    change[invalid] = CHANGE_NODATA
                    change_rows[0, :, cs] = change
                n_valid = int(valid.sum())
                return n_valid, invalid.size - n_valid, int((cloud & valid).sum())

            # column chunks write disjoint columns of the output buffers: they run on the worker threads
            for n_valid, n_nodata, n_masked in self._map(chunk, list(range(0, width, _COMPOSITE_COLUMNS))):
                self.valid_px += n_valid
                self.nodata_px += n_nodata
                self.masked_px += n_masked
            for w in writers.values():
                w.wrote(row, n)
            row += n
        self.acc.advance(upto_row)
        self._memory.after_strip()
        self.timings["write"] += time.perf_counter() - t0

    def run(self, writers: dict[str, RasterWriter]) -> None:
        import torch

        self._memory_format = torch.contiguous_format
        if self.device.type == "cpu" and _CHANNELS_LAST_ON_CPU:
            # oneDNN's convolutions are faster on NHWC: 0.372 -> 0.293 s per batch of 4 for the bundled
            # model on the 2-core CPU, outputs within 1e-5 (bench/bench_layout.py, docs/ENGINE.md)
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # (runtime API; stubs lack it)
            self._memory_format = torch.channels_last
        workers = min(_MAX_WORKERS, torch.get_num_threads() if self.device.type == "cpu" else (os.cpu_count() or 1))
        if workers > 1:
            self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mmcanet-tiles")
        try:
            self._run(writers)
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def _run(self, writers: dict[str, RasterWriter]) -> None:
        plan = self.plan
        n_rows = len(plan.row_offsets)
        done = 0
        self.progress(0.0)
        # a background reader pays off when the model runs on a GPU (the CPU is idle meanwhile); on the
        # CPU torch already uses every core, and measured wall times did not improve (docs/ENGINE.md)
        prefetch = n_rows > 1 and (self.device.type != "cpu" or _PREFETCH_ON_CPU)
        strips = (self._new_strip(), self._new_strip()) if prefetch else (self._new_strip(),)
        t0 = time.perf_counter()
        strip = strips[0]
        self._fill(strip, plan.row_offsets[0], None)
        self.timings["read"] += time.perf_counter() - t0
        for r in range(n_rows):
            if self.is_canceled():
                raise CancelledError("restoration cancelled; no output was written")
            pending = None
            if r > 0 and not prefetch:  # one buffer: shift the shared rows up, read the rest now
                t0 = time.perf_counter()
                self._fill(strip, plan.row_offsets[r], strip)
                self.timings["read"] += time.perf_counter() - t0
            if prefetch and r + 1 < n_rows:
                pending = self._prefetch(strips[(r + 1) % 2], plan.row_offsets[r + 1], strip)
            try:
                row_tiles = plan.tile_row(r)
                start = 0
                while start < len(row_tiles):
                    if self.is_canceled():
                        raise CancelledError("restoration cancelled; no output was written")
                    batch = row_tiles[start : start + self.batch_size]
                    self._run_tiles(batch, strip)
                    start += len(batch)
                    done += len(batch)
                    self.progress(min(0.999, done / plan.n_tiles))
                self._composite(strip, plan.final_row(r), writers)
            finally:
                if pending is not None:
                    t0 = time.perf_counter()
                    pending[0].join()
                    self.timings["read"] += time.perf_counter() - t0  # waiting for the prefetch
            if pending is not None:
                if pending[1]:
                    raise pending[1][0]
                strip = strips[(r + 1) % 2]


# ----------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------


def _tags(card: ModelCardLike, strategy: str, runner: _Runner, ins: _Inputs, keep_clear: bool) -> dict[str, str]:
    return {
        "TIFFTAG_SOFTWARE": f"mmcanet {__version__}",
        "MMCANET_VERSION": __version__,
        "MMCANET_MODEL": str(card.name),
        "MMCANET_MODEL_VERSION": str(card.version),
        "MMCANET_STRATEGY": strategy,
        "MMCANET_TILE_SIZE": str(runner.tile_size),
        "MMCANET_OVERLAP": str(runner.overlap),
        "MMCANET_KEEP_CLEAR": "yes" if keep_clear else "no",
        "MMCANET_CLOUD_MASK": runner.mask_source,
        "MMCANET_SAR_UNITS": ins.sar_units,
        "MMCANET_SAR": os.path.basename(ins.sar_info.path),
        "MMCANET_OPTICAL": os.path.basename(ins.optical_info.path),
    }


def _apply_strategy(model: nn.Module, card: ModelCardLike, requested: str | None) -> str:
    setter: Callable[[str], None] | None = getattr(model, "set_strategy", None)
    if not requested or requested == card.strategy:
        if requested and setter is not None:
            setter(requested)
        return str(card.strategy)
    if setter is None:
        raise InputError(f"strategy '{requested}': model '{card.name}' only runs its own strategy '{card.strategy}'")
    try:
        setter(requested)
    except (ValueError, KeyError) as exc:
        raise InputError(f"strategy '{requested}': {exc}") from None
    return requested


def _model_device(model: nn.Module) -> torch.device:
    import torch

    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def restore_scene_with_model(
    model: nn.Module,
    card: ModelCardLike,
    options: RestoreOptions,
    progress: Progress | None = None,
    is_canceled: IsCanceled | None = None,
    log: Log | None = None,
    device: torch.device | None = None,
) -> RestoreResult:
    """Restore a scene with an already-loaded model (tests, benchmarks, batch runs).

    ``options.model`` and ``options.device`` are ignored; the model runs where it is (or on ``device``).

    Args:
        model: ``model(s2 (B,13,H,W), s1 (B,2,H,W), mask=None|(B,1,H,W)) -> (B,13,H,W)``, all 0-1.
        card: its model card (bands, normalisation, default tile size / overlap / strategy).
        options: inputs, outputs and settings.
        progress: called with the fraction done (0-1) after every batch.
        is_canceled: polled before every batch; True stops with :class:`CancelledError`.
        log: receives progress messages and warnings (default: the ``mmcanet.engine`` logger).
        device: device of the input tensors (default: the model's).

    Returns:
        :class:`RestoreResult`.

    Raises:
        InputError: bad input (before any work; the message names the input).
        CancelledError: ``is_canceled()`` returned True; no output is left.
        MMCANetError: any other failure; no output is left.
    """
    t_start = time.perf_counter()
    rep = _Reporter(log)
    ins = _open_inputs(options, rep)
    return _restore(model, card, device or _model_device(model), options, ins, rep, progress, is_canceled, t_start)


def _restore(
    model: nn.Module,
    card: ModelCardLike,
    device: torch.device,
    options: RestoreOptions,
    ins: _Inputs,
    rep: _Reporter,
    progress: Progress | None,
    is_canceled: IsCanceled | None,
    t_start: float,
) -> RestoreResult:
    strategy = _apply_strategy(model, card, options.strategy)
    model.eval()
    runner = _Runner(model, card, device, options, ins, rep, progress, is_canceled)
    info = ins.optical_info
    rep.info(
        f"restoring {info.width}x{info.height} px: {runner.plan.n_tiles} tiles of {runner.plan.tile_width}x"
        f"{runner.plan.tile_height} (overlap {runner.overlap}), model {card.name} v{card.version}, strategy "
        f"{strategy}, SAR {ins.sar_units}{' warped' if ins.sar.warped else ''}, cloud mask {runner.mask_source}"
    )
    tags = _tags(card, strategy, runner, ins, options.keep_clear)
    common: dict[str, Any] = {"width": info.width, "height": info.height, "geotransform": info.geotransform if info.georeferenced else None,
              "crs_wkt": info.crs_wkt, "tags": tags}
    out_dtype = np.dtype(np.uint16) if info.dtype.kind in "ui" else np.dtype(np.float32)
    writers: dict[str, RasterWriter] = {}
    try:
        writers["output"] = RasterWriter(
            ins.output, count=runner.n_in, dtype=out_dtype, nodata=ins.optical_nodata,
            descriptions=ins.optical_names, what="output", **common,
        )
        if ins.mask_output is not None:
            writers["mask"] = RasterWriter(
                ins.mask_output, count=1, dtype=np.uint8, nodata=MASK_NODATA,
                descriptions=("cloud_or_shadow",), what="mask output", **common,
            )
        if ins.confidence_output is not None:
            writers["confidence"] = RasterWriter(
                ins.confidence_output, count=1, dtype=np.float32, nodata=CHANGE_NODATA,
                descriptions=("mean_abs_change_reflectance",), what="confidence output", **common,
            )
        runner.run(writers)
        paths = {k: w.commit() for k, w in writers.items()}
    except BaseException:
        for w in writers.values():
            w.discard()
        raise
    if progress is not None:
        progress(1.0)
    seconds = time.perf_counter() - t_start
    total = info.width * info.height
    result = RestoreResult(
        output=paths["output"],
        mask_output=paths.get("mask"),
        confidence_output=paths.get("confidence"),
        width=info.width,
        height=info.height,
        tiles=runner.plan.n_tiles,
        tiles_run=runner.tiles_run,
        device=str(device),
        model_name=str(card.name),
        model_version=str(card.version),
        strategy=strategy,
        tile_size=runner.tile_size,
        overlap=runner.overlap,
        sar_units=ins.sar_units,
        sar_warped=ins.sar.warped,
        sar_coverage=ins.sar.coverage,
        cloud_mask_source=runner.mask_source,
        cloud_fraction=runner.masked_px / runner.valid_px if runner.valid_px and runner.mask_source != "none" else math.nan,
        nodata_fraction=runner.nodata_px / total if total else 0.0,
        seconds=seconds,
        timings=dict(runner.timings),
        warnings=list(rep.warnings),
    )
    rep.info(
        f"wrote {result.output} in {seconds:.1f} s ({total / 1e6 / max(seconds, 1e-9):.2f} Mpx/s; "
        f"{result.tiles_run}/{result.tiles} tiles through the model)"
    )
    return result


def restore_scene(
    options: RestoreOptions,
    progress: Progress | None = None,
    is_canceled: IsCanceled | None = None,
    log: Log | None = None,
    model: tuple[nn.Module, ModelCardLike] | None = None,
) -> RestoreResult:
    """Restore a cloudy Sentinel-2 scene with Sentinel-1 SAR; writes ``options.output``.

    Inputs are validated before the model is loaded. The model is ``options.model`` (None: the
    bundled default), on ``options.device``; pass ``model=(module, card)`` to reuse a loaded one.

    Args:
        options: inputs, outputs and settings (see :class:`RestoreOptions`).
        progress: called with the fraction done (0-1) after every batch.
        is_canceled: polled before every batch; True stops with :class:`CancelledError`.
        log: receives progress messages and warnings (default: the ``mmcanet.engine`` logger).
        model: an already-loaded ``(model, card)``; it must be on the device ``options.device`` picks.

    Returns:
        :class:`RestoreResult`.

    Raises:
        InputError: bad input (the message names it); nothing is written.
        ModelFileError: the model file is missing, corrupt or incompatible.
        CancelledError: ``is_canceled()`` returned True; no output is left.
        MMCANetError: any other failure; no output is left.
    """
    from .devices import configure_threads, resolve_device

    t_start = time.perf_counter()
    rep = _Reporter(log)
    ins = _open_inputs(options, rep)
    if model is not None:
        net, card = model
        device = _model_device(net)
    else:
        device = resolve_device(options.device, rep.info)
        net, card = load_model_for(options.model, device, rep)
    if device.type == "cpu":
        rep.info(f"torch CPU threads: {configure_threads(device, options.threads)}")
    return _restore(net, card, device, options, ins, rep, progress, is_canceled, t_start)


def load_model_for(path: str | os.PathLike[str] | None, device: torch.device, rep: _Reporter | None = None) -> tuple[nn.Module, Any]:
    """Load a model file (None: the bundled default) onto ``device``; raises ModelFileError."""
    from .modelfile import default_model_path, load_model

    p = Path(os.fspath(path)) if path else default_model_path()
    model, card = load_model(p, device)
    if rep is not None:
        rep.info(f"model: {p} ({card.name} v{card.version}, strategy {card.strategy})")
    return model, card
