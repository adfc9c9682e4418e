"""Restore a whole scene: validate, load the model, run the tile loop into temporary outputs, commit.

:func:`restore_scene` is the one entry point of the CLI (``mmcanet restore``), QGIS Processing
(``mmcanet:remove_clouds``) and the dock; :func:`restore_scene_with_model` takes an already-loaded
model (tests, benchmarks, batch runs). Outputs are written to temporary files next to their
destination and renamed on success; on any error or cancel they are removed
(:class:`~mmcanet.raster_write.RasterWriter`).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__
from ..errors import InputError
from ..options import RestoreOptions
from ..raster_write import RasterWriter
from ..reporting import IsCanceled, Log, Progress, Reporter
from .blending import CHANGE_NODATA, ERROR_NODATA, MASK_NODATA
from .inputs import ModelCardLike, SceneInputs, open_inputs, output_dtype
from .model_cache import ModelCache
from .runner import SceneRunner
from .tuning import EngineTuning

if TYPE_CHECKING:  # torch is imported when a scene is run, so importing this module stays light (QGIS)
    import torch
    from torch import nn

logger = logging.getLogger("mmcanet.inference")


@dataclass
class RestoreResult:
    """What a restoration produced and how it went.

    Attributes:
        output: the restored GeoTIFF.
        mask_output: the cloud-mask GeoTIFF, when requested.
        change_output: the change GeoTIFF (mean absolute change), when requested.
        uncertainty_output: the predicted-error GeoTIFF (the trust layer), when requested.
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
        sar_coverage: fraction of the optical grid covered by SAR (bounding boxes, before the run).
        sar_missing_fraction: fraction of the valid optical pixels that had no SAR value (NaN, SAR
            nodata, outside its footprint); they were restored from the optical image alone.
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
    change_output: Path | None
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
    sar_missing_fraction: float = 0.0
    uncertainty_output: Path | None = None


def _tags(card: ModelCardLike, strategy: str, runner: SceneRunner, ins: SceneInputs, keep_clear: bool) -> dict[str, str]:
    return {
        "TIFFTAG_SOFTWARE": f"mmcanet {__version__}",
        "MMCANET_VERSION": __version__,
        "MMCANET_MODEL": str(card.name),
        "MMCANET_MODEL_VERSION": str(card.version),
        "MMCANET_STRATEGY": strategy,
        "MMCANET_TILE_SIZE": str(runner.tile_size),
        "MMCANET_OVERLAP": str(runner.overlap),
        "MMCANET_KEEP_CLEAR": "yes" if keep_clear else "no",
        "MMCANET_CLEAR_WEIGHT": f"{runner.opts.clear_weight:g}" if keep_clear else "1",
        "MMCANET_COARSE_BANDS": "smoothed under cloud in the network input (sigma 1 px 20 m, 3 px 60 m)",
        "MMCANET_CLOUD_MASK": runner.mask_source,
        "MMCANET_SAR_UNITS": ins.sar_units,
        "MMCANET_SAR": os.path.basename(ins.sar_info.path),
        "MMCANET_OPTICAL": os.path.basename(ins.optical_info.path),
    }


def _report_missing_sar(runner: SceneRunner, ins: SceneInputs, rep: Reporter, writers: dict[str, RasterWriter]) -> float:
    """Say how many valid pixels had no SAR (restored from the optical alone), in the log and the outputs' metadata."""
    missing = runner.reader.sar_missing_px
    fraction = missing / runner.valid_px if runner.valid_px else 0.0
    if missing:
        rep.warn(
            f"{ins.sar_what} has no value (NaN, its nodata, or outside its footprint) on {fraction:.1%} of the "
            f"valid optical pixels ({missing} px): they were restored from the optical image alone, without SAR "
            "(lower quality under thick clouds there)"
        )
        for w in writers.values():
            w.update_tags({"MMCANET_SAR_MISSING_FRACTION": f"{fraction:.6f}",
                           "MMCANET_SAR_MISSING": "restored from the optical image alone where SAR has no value"})
    return fraction


HEAVY_CLOUD_FRACTION = 0.5
"""Share of valid pixels under the cloud / shadow mask from which a run warns that most of its output is a fill."""


def _report_cloud_cover(runner: SceneRunner, rep: Reporter, writers: dict[str, RasterWriter]) -> float:
    """The share of valid pixels under the mask (NaN without a mask or valid pixels), written into the outputs'
    metadata; warns when most of the image is a fill, not an observation."""
    if runner.mask_source == "none" or not runner.valid_px:
        return math.nan
    fraction = runner.masked_px / runner.valid_px
    for w in writers.values():
        w.update_tags({"MMCANET_CLOUD_FRACTION": f"{fraction:.6f}"})
    if fraction >= HEAVY_CLOUD_FRACTION:
        rep.warn(
            f"{fraction:.0%} of the valid pixels are under cloud or cloud shadow: there the output is predicted "
            "from the SAR and the clear land around them, not observed. Field edges, rivers and roads the SAR shows "
            "are drawn in; colours and fine detail are approximate, and where the SAR shows no structure (forest, "
            "mountains) the fill is smooth. Check these areas before classifying them (the mask output shows "
            "which pixels they are; docs/TRUST.md)"
        )
    return fraction


def _require_error_head(model: nn.Module, card: ModelCardLike, options: RestoreOptions) -> None:
    """Refuse the uncertainty output for a model without an error head (message: which model, how to add one)."""
    from ..modelfile import default_model_path
    from ..trust import require_error_head

    source = os.fspath(options.model) if options.model else f"model file {default_model_path()}"
    if not hasattr(model, "forward_with_error"):
        raise InputError(f"model '{card.name}' ({source}) cannot predict its error (no forward_with_error); "
                         "restore without the uncertainty output")
    require_error_head(card, source)


def _trust_tags(card: ModelCardLike, runner: SceneRunner) -> dict[str, str]:
    """Metadata of the uncertainty output: what the values mean and how they were calibrated."""
    trust = getattr(card, "trust", None) or {}
    return {
        "MMCANET_UNITS": "reflectance (0-1): predicted absolute error, mean over the bands",
        "MMCANET_ERROR_CALIBRATED": "yes" if "error_scale" in trust else "no",
        "MMCANET_KEPT_ERROR": f"{runner.kept_error:.5f}",
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
    tuning: EngineTuning | None = None,
) -> RestoreResult:
    """Restore a scene with an already-loaded model (tests, benchmarks, batch runs).

    ``options.model`` and ``options.device`` are ignored; the model runs where it is (or on ``device``).

    Args:
        model: ``model(s2 (B,13,H,W), s1 (B,2,H,W), mask=None|(B,1,H,W)) -> (B,13,H,W)``, all 0-1.
        card: its model card (bands, normalisation, default tile size / overlap / strategy).
        options: inputs, outputs and settings.
        progress: called with the fraction done (0-1) after every batch.
        is_canceled: polled before every batch; True stops with :class:`CancelledError`.
        log: receives progress messages and warnings (default: the ``mmcanet.inference`` logger).
        device: device of the input tensors (default: the model's).
        tuning: chunk sizes and scheduling (default: :class:`EngineTuning`); never changes the output.

    Returns:
        :class:`RestoreResult`.

    Raises:
        InputError: bad input (before any work; the message names the input).
        CancelledError: ``is_canceled()`` returned True; no output is left.
        MMCANetError: any other failure; no output is left.
    """
    t_start = time.perf_counter()
    rep = Reporter(log, logger, progress, is_canceled)
    ins = open_inputs(options, rep)
    return _restore(model, card, device or _model_device(model), options, ins, rep, tuning or EngineTuning(), t_start)


def _restore(
    model: nn.Module,
    card: ModelCardLike,
    device: torch.device,
    options: RestoreOptions,
    ins: SceneInputs,
    rep: Reporter,
    tuning: EngineTuning,
    t_start: float,
) -> RestoreResult:
    if ins.uncertainty_output is not None:
        _require_error_head(model, card, options)
    strategy = _apply_strategy(model, card, options.strategy)
    model.eval()
    runner = SceneRunner(model, card, device, options, ins, rep, tuning)
    info = ins.optical_info
    rep.info(
        f"restoring {info.width}x{info.height} px: {runner.plan.n_tiles} tiles of {runner.plan.tile_width}x"
        f"{runner.plan.tile_height} (overlap {runner.overlap}), model {card.name} v{card.version}, strategy "
        f"{strategy}, SAR {ins.sar_units}{' warped' if ins.sar.warped else ''}, cloud mask {runner.mask_source}"
    )
    tags = _tags(card, strategy, runner, ins, runner.keep_clear)
    common: dict[str, Any] = {"width": info.width, "height": info.height,
                              "geotransform": info.geotransform if info.georeferenced else None,
                              "crs_wkt": info.crs_wkt, "tags": tags, "overviews": options.overviews, "cog": options.cog}
    out_dtype = output_dtype(info)
    writers: dict[str, RasterWriter] = {}
    try:
        writers["output"] = RasterWriter(
            ins.output, count=runner.n_in, dtype=out_dtype, nodata=ins.optical_nodata,
            descriptions=ins.optical_names, what="output", **common,
        )
        if ins.mask_output is not None:
            writers["mask"] = RasterWriter(
                ins.mask_output, count=1, dtype=np.uint8, nodata=MASK_NODATA,
                descriptions=("cloud_or_shadow",), what="mask output", resampling="NEAREST", **common,
            )
        if ins.change_output is not None:
            writers["change"] = RasterWriter(
                ins.change_output, count=1, dtype=np.float32, nodata=CHANGE_NODATA,
                descriptions=("mean_abs_change_reflectance",), what="change output", **common,
            )
        if ins.uncertainty_output is not None:
            writers["uncertainty"] = RasterWriter(
                ins.uncertainty_output, count=1, dtype=np.float32, nodata=ERROR_NODATA,
                descriptions=("predicted_abs_error",), what="uncertainty output",
                **{**common, "tags": {**tags, **_trust_tags(card, runner)}},
            )
        runner.run(writers)
        sar_missing = _report_missing_sar(runner, ins, rep, writers)
        cloud_fraction = _report_cloud_cover(runner, rep, writers)
        for w in writers.values():  # overviews / COG of every output before any is renamed into place
            w.finish(rep.canceled)
        paths = {k: w.commit() for k, w in writers.items()}
    except BaseException:
        for w in writers.values():
            w.discard()
        raise
    rep.progress(1.0)
    seconds = time.perf_counter() - t_start
    total = info.width * info.height
    result = RestoreResult(
        output=paths["output"],
        mask_output=paths.get("mask"),
        change_output=paths.get("change"),
        uncertainty_output=paths.get("uncertainty"),
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
        cloud_fraction=cloud_fraction,
        nodata_fraction=runner.nodata_px / total if total else 0.0,
        seconds=seconds,
        timings=dict(runner.timings),
        warnings=list(rep.warnings),
        sar_missing_fraction=sar_missing,
    )
    cloud = "" if math.isnan(result.cloud_fraction) else f"; {result.cloud_fraction:.0%} under cloud or shadow, filled"
    rep.info(
        f"wrote {result.output} in {seconds:.1f} s ({total / 1e6 / max(seconds, 1e-9):.2f} Mpx/s; "
        f"{result.tiles_run}/{result.tiles} tiles through the model{cloud})"
    )
    return result


def restore_scene(
    options: RestoreOptions,
    progress: Progress | None = None,
    is_canceled: IsCanceled | None = None,
    log: Log | None = None,
    model: tuple[nn.Module, ModelCardLike] | None = None,
    tuning: EngineTuning | None = None,
    cache: ModelCache | None = None,
) -> RestoreResult:
    """Restore a cloudy Sentinel-2 scene with Sentinel-1 SAR; writes ``options.output``.

    Options and inputs are validated before the model is loaded. The model is ``options.model``
    (None: the bundled default), on ``options.device``; pass ``model=(module, card)`` to reuse a loaded one.

    Args:
        options: inputs, outputs and settings (see :class:`~mmcanet.options.RestoreOptions`).
        progress: called with the fraction done (0-1) after every batch.
        is_canceled: polled before every batch; True stops with :class:`CancelledError`.
        log: receives progress messages and warnings (default: the ``mmcanet.inference`` logger).
        model: an already-loaded ``(model, card)``; it must be on the device ``options.device`` picks.
        tuning: chunk sizes and scheduling (default: :class:`EngineTuning`); never changes the output.
        cache: keeps the loaded model for the next call (same file and device); ignored with ``model``.

    Returns:
        :class:`RestoreResult`.

    Raises:
        InputError: bad input (the message names it); nothing is written.
        ModelFileError: the model file is missing, corrupt or incompatible.
        CancelledError: ``is_canceled()`` returned True; no output is left.
        MMCANetError: any other failure; no output is left.
    """
    from ..devices import configure_threads, resolve_device

    t_start = time.perf_counter()
    rep = Reporter(log, logger, progress, is_canceled)
    ins = open_inputs(options, rep)
    if model is not None:
        net, card = model
        device = _model_device(net)
    else:
        device = resolve_device(options.device, rep.info, rep.warn)
    if device.type == "cpu":
        rep.info(f"torch CPU threads: {configure_threads(device, options.threads)}")
    if model is not None:
        return _restore(net, card, device, options, ins, rep, tuning or EngineTuning(), t_start)
    if cache is None:
        net, card = load_model_for(options.model, device, rep)
        return _restore(net, card, device, options, ins, rep, tuning or EngineTuning(), t_start)
    with cache.borrow(options.model, device, lambda: load_model_for(options.model, device, rep), rep.info) as loaded:
        return _restore(*loaded, device, options, ins, rep, tuning or EngineTuning(), t_start)


def load_model_for(path: str | os.PathLike[str] | None, device: torch.device, rep: Reporter | None = None) -> tuple[nn.Module, Any]:
    """Load a model file (None: the bundled default) onto ``device``; raises ModelFileError."""
    from ..modelfile import default_model_path, load_model

    p = Path(os.fspath(path)) if path else default_model_path()
    model, card = load_model(p, device)
    if rep is not None:
        rep.info(f"model: {p} ({card.name} v{card.version}, strategy {card.strategy})")
    return model, card
