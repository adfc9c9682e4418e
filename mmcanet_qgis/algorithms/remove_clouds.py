"""mmcanet:remove_clouds: restore the cloudy parts of a Sentinel-2 scene with Sentinel-1 SAR."""

from __future__ import annotations

import math
from typing import Any

from mmcanet import options as core_options
from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from .base import (
    DEVICES,
    FILE,
    INTEGER,
    MODEL_FILTER,
    STRATEGIES,
    MMCANetAlgorithm,
    advanced,
    core_callbacks,
    core_errors,
    device_parameter,
    tr,
)
from .styling import style_on_load, style_predicted_error

MODEL_DEFAULT_STRATEGY = "model default"

_MODEL_CACHE: Any = None


def model_cache() -> Any:
    """The loaded model kept between runs in this QGIS (:class:`mmcanet.inference.ModelCache`; created on first use)."""
    global _MODEL_CACHE
    if _MODEL_CACHE is None:
        from mmcanet.inference.model_cache import ModelCache

        _MODEL_CACHE = ModelCache()
    return _MODEL_CACHE


def release_model_cache() -> None:
    """Forget the kept model and give its GPU memory back (the plugin unloads)."""
    if _MODEL_CACHE is not None:
        _MODEL_CACHE.release()


def bundled_model() -> str | None:
    """Path of the bundled model file when it exists (read without torch), else None."""
    try:
        from mmcanet.modelfile import default_model_path
    except ImportError:
        return None
    path = default_model_path()
    return str(path) if path.is_file() else None


def bundled_model_name() -> str:
    """'<name> v<version>' of the bundled model from its card (header only, no torch); '' if unreadable."""
    path = bundled_model()
    if path is None:
        return ""
    try:
        from mmcanet.modelfile import read_card

        card = read_card(path)
    except Exception:  # noqa: BLE001 - a label only: an unreadable file is reported when a run uses it
        return ""
    return f"{card.name} v{card.version}"


class RemoveCloudsAlgorithm(MMCANetAlgorithm):
    """Parameters -> mmcanet.options.RestoreOptions -> mmcanet.inference.restore_scene."""

    SAR = "SAR"
    OPTICAL = "OPTICAL"
    CLOUD_MASK = "CLOUD_MASK"
    MODEL = "MODEL"
    STRATEGY = "STRATEGY"
    DEVICE = "DEVICE"
    KEEP_CLEAR = "KEEP_CLEAR"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    BATCH_SIZE = "BATCH_SIZE"
    OUTPUT = "OUTPUT"
    EXTENT = "EXTENT"
    OVERVIEWS = "OVERVIEWS"
    HARMONISE = "HARMONISE"
    SAR_STRUCTURE = "SAR_STRUCTURE"
    COG = "COG"
    MASK_OUTPUT = "MASK_OUTPUT"
    UNCERTAINTY_OUTPUT = "UNCERTAINTY_OUTPUT"
    CHANGE_OUTPUT = "CHANGE_OUTPUT"
    CONFIDENCE_OUTPUT = "CONFIDENCE_OUTPUT"
    CLOUD_FRACTION = "CLOUD_FRACTION"
    """Old id of CHANGE_OUTPUT (it was called "Confidence"): still accepted, hidden, for saved models and scripts."""

    NAME = "remove_clouds"
    DISPLAY_NAME = "Remove clouds (Sentinel-1 + Sentinel-2)"
    GROUP = "Cloud removal"
    GROUP_ID = "cloud_removal"
    HELP = (
        "Replaces the masked parts of a Sentinel-2 scene (clouds and cloud shadows, as detected or as given "
        "in a cloud mask) with what a trained network infers from the cloudy image and a Sentinel-1 SAR "
        "image of the same area (SAR sees through clouds).\n\n"
        "Sentinel-1 SAR: 2 bands VV, VH (dB, or linear power, detected automatically), any grid: "
        "it is reprojected onto the optical grid. Acquired as close in time to the optical image as possible.\n"
        "Cloudy Sentinel-2: 13 bands B1..B12 with B8A (Level-1C order) or 12 bands (Level-2A, no B10), "
        "digital numbers = reflectance x 10000. Only the area covered by both images is restored; the "
        "rest is nodata.\n"
        "Cloud mask (optional): 1 band, >0 = replace (cloud or shadow). Without it, clouds and cloud shadows "
        "are detected with spectral rules (the 'Detect clouds and shadows' algorithm).\n"
        "Model file: a .safetensors model; empty = the model bundled with the plugin.\n"
        "Strategy: progressive restoration strategy; 'model default' uses the one the model was "
        "trained with.\n"
        "Keep clear pixels: copy the input where the mask says clear, so only masked pixels change. "
        "Unchecked: Level-2A images keep them anyway (the network corrects haze only in Level-1C, and the fill "
        "takes the clear pixels' band levels), Level-1C images get every pixel from the network (haze too).\n"
        "Device: auto uses an NVIDIA GPU when PyTorch sees one, else the CPU.\n\n"
        "Area of interest (optional): only the optical pixels inside this extent are read, restored and "
        "written (snapped outward to the optical pixel grid); the outputs cover just that window, aligned "
        "with the whole scene. Empty: the whole image. An extent without a CRS is in the optical image's CRS.\n\n"
        "Output: a GeoTIFF with the optical input's bands, grid, CRS and data type, shown in true "
        "colour (B4, B3, B2). Optional:\n"
        "- Cloud mask used: 1 = cloud or shadow, 0 = clear.\n"
        "- Predicted error (reflectance): per pixel, the absolute error the model expects in its own "
        "result (mean over bands, reflectance 0-1; 0.05 = 5 % reflectance), from the model's trust layer "
        "(a fitted error predictor or an error head), "
        "calibrated on real validation images. Shown in fixed classes (0.01, 0.02, 0.05, 0.1) so you can "
        "hide or mask pixels above a threshold. Only models with a trust layer write it (the model "
        "summary says so); others stop with a message.\n"
        "- Mean absolute change (reflectance): how much each pixel changed from the input (0 where it was "
        "kept). It is NOT a measure of trust: a large change can be right and a small one wrong.\n"
        "Advanced: tile size / overlap in pixels (left 'Not set': the values stored in the model file), "
        "batch size (tiles per step; lower it if memory runs out); fill harmonisation (the fill under "
        "cloud takes the brightness of the clear land around it, measured over this many pixels; 0 turns it "
        "off); SAR structure (under cloud, the detail finer than this many pixels is predicted from the SAR by "
        "a regression fitted on each tile's clear pixels, so field edges, rivers and roads the SAR shows appear "
        "in the fill; 0 turns it off); overviews (built into every output of "
        "1024 px or more on a side, so QGIS draws zoomed-out views fast; off saves their write time and about "
        "a third of the file size); Cloud-Optimised GeoTIFF (for sharing the files, e.g. over HTTP; one more "
        "copy of each output at the end of the run)."
    )

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802, D102
        # Defaults, choices and limits come from the torch-free mmcanet.options (the CLI's source too);
        # TILE_SIZE / OVERLAP / STRATEGY default to the model card's.
        self.addParameter(QgsProcessingParameterRasterLayer(self.SAR, tr("Sentinel-1 SAR (VV, VH)")))
        self.addParameter(QgsProcessingParameterRasterLayer(self.OPTICAL, tr("Cloudy Sentinel-2 (13 bands, L1C)")))
        self.addParameter(QgsProcessingParameterRasterLayer(self.CLOUD_MASK, tr("Cloud mask"), optional=True))
        bundled = bundled_model_name()
        model_label = (tr("Model file (empty: the bundled model, {name})").format(name=bundled) if bundled
                       else tr("Model file (empty: the bundled model)"))
        self.addParameter(QgsProcessingParameterFile(
            self.MODEL, model_label, behavior=FILE, fileFilter=MODEL_FILTER, optional=True))
        self.addParameter(QgsProcessingParameterEnum(
            self.STRATEGY, tr("Restoration strategy"), options=[MODEL_DEFAULT_STRATEGY, *STRATEGIES], defaultValue=0))
        self.addParameter(device_parameter(self.DEVICE, tr("Device"), core_options.DEFAULT_DEVICE))
        # unchecked = the core's automatic choice (Level-2A: kept, Level-1C: every pixel restored)
        self.addParameter(QgsProcessingParameterBoolean(
            self.KEEP_CLEAR, tr("Keep clear pixels from the input (unchecked: automatic, kept for Level-2A only)"),
            defaultValue=False))
        # Not set (None) = the model card's value: QGIS shows an optional number without a default as
        # "Not set", so no number stands for "model default"
        self.addParameter(advanced(QgsProcessingParameterNumber(
            self.TILE_SIZE, tr("Tile size in pixels (not set: the model file's)"), type=INTEGER,
            defaultValue=None, optional=True, minValue=core_options.MIN_TILE_SIZE,
            maxValue=core_options.MAX_TILE_SIZE)))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            self.OVERLAP, tr("Tile overlap in pixels (not set: the model file's; at most half the tile size)"),
            type=INTEGER, defaultValue=None, optional=True, minValue=0,
            maxValue=core_options.max_overlap(core_options.MAX_TILE_SIZE))))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            self.BATCH_SIZE, tr("Tiles per batch"), type=INTEGER, defaultValue=core_options.DEFAULT_BATCH_SIZE,
            minValue=1, maxValue=core_options.MAX_BATCH_SIZE)))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            self.HARMONISE, tr("Fill harmonisation: scale in pixels over which the fill takes the brightness of "
                               "the clear land around it (0: off)"),
            type=INTEGER, defaultValue=core_options.DEFAULT_HARMONISE, minValue=0,
            maxValue=core_options.MAX_HARMONISE)))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            self.SAR_STRUCTURE, tr("SAR structure: under clouds, detail finer than this many pixels comes from the "
                                   "SAR, as the clear pixels of each tile relate it to the optical (0: off)"),
            type=INTEGER, defaultValue=core_options.DEFAULT_SAR_STRUCTURE, minValue=0,
            maxValue=core_options.MAX_SAR_STRUCTURE)))
        self.addParameter(advanced(QgsProcessingParameterBoolean(
            self.OVERVIEWS, tr("Build overviews (outputs of 1024 px or more on a side; QGIS draws them faster)"),
            defaultValue=core_options.DEFAULT_OVERVIEWS)))
        self.addParameter(advanced(QgsProcessingParameterBoolean(
            self.COG, tr("Write Cloud-Optimised GeoTIFFs (for sharing)"), defaultValue=core_options.DEFAULT_COG)))
        self.addParameter(QgsProcessingParameterExtent(
            self.EXTENT, tr("Area of interest (empty: the whole optical image)"), optional=True))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, tr("Cloud-free Sentinel-2")))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.MASK_OUTPUT, tr("Cloud mask used"), optional=True, createByDefault=False))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.UNCERTAINTY_OUTPUT, tr("Predicted error (reflectance)"), optional=True, createByDefault=False))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.CHANGE_OUTPUT, tr("Mean absolute change (reflectance; not a measure of trust)"),
            optional=True, createByDefault=False))
        old_change = QgsProcessingParameterRasterDestination(
            self.CONFIDENCE_OUTPUT, tr("Mean absolute change (old id CONFIDENCE_OUTPUT)"), optional=True,
            createByDefault=False)
        old_change.setFlags(old_change.flags() | QgsProcessingParameterDefinition.FlagHidden)
        self.addParameter(old_change)
        self.addOutput(QgsProcessingOutputNumber(
            self.CLOUD_FRACTION, tr("Share of valid pixels under cloud or shadow, filled (0-1)")))

    def restore_options(self, parameters: dict[str, Any], context: QgsProcessingContext) -> dict[str, Any]:
        """Keyword arguments of mmcanet.options.RestoreOptions for these parameters (runs nothing)."""
        strategy_index = self.parameterAsEnum(parameters, self.STRATEGY, context)
        tile_size = self._optional_int(parameters, self.TILE_SIZE, context)
        overlap = self._optional_int(parameters, self.OVERLAP, context)
        options: dict[str, Any] = {
            "sar": self.raster_path(parameters, self.SAR, context),
            "optical": self.raster_path(parameters, self.OPTICAL, context),
            "cloud_mask": self.raster_path(parameters, self.CLOUD_MASK, context, optional=True),
            "output": self.output_path(parameters, self.OUTPUT, context),
            "model": self.parameterAsFile(parameters, self.MODEL, context) or None,
            "strategy": STRATEGIES[strategy_index - 1] if strategy_index > 0 else None,
            "device": DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
            "keep_clear": True if self.parameterAsBool(parameters, self.KEEP_CLEAR, context) else None,
            "tile_size": tile_size,
            "overlap": overlap,
            "batch_size": self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            "mask_output": self.output_path(parameters, self.MASK_OUTPUT, context),
            "uncertainty_output": self.output_path(parameters, self.UNCERTAINTY_OUTPUT, context),
            "change_output": self.change_output(parameters, context),
            "harmonise": self.parameterAsInt(parameters, self.HARMONISE, context),
            "sar_structure": self.parameterAsInt(parameters, self.SAR_STRUCTURE, context),
            "overviews": self.parameterAsBool(parameters, self.OVERVIEWS, context),
            "cog": self.parameterAsBool(parameters, self.COG, context),
        }
        options.update(self.area_of_interest(parameters, self.EXTENT, context))
        return options

    def change_output(self, parameters: dict[str, Any], context: QgsProcessingContext) -> str | None:
        """CHANGE_OUTPUT, or the same output given under its old id CONFIDENCE_OUTPUT."""
        new = self.output_path(parameters, self.CHANGE_OUTPUT, context)
        old = self.output_path(parameters, self.CONFIDENCE_OUTPUT, context)
        if new and old and new != old:
            raise QgsProcessingException(tr(
                "CHANGE_OUTPUT and CONFIDENCE_OUTPUT (its old name) name different files; give only CHANGE_OUTPUT"))
        return new or old

    def _optional_int(self, parameters: dict[str, Any], name: str, context: QgsProcessingContext) -> int | None:
        """An optional integer parameter: None when not set (then the model card's value applies)."""
        value = parameters.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return self.parameterAsInt(parameters, name, context)

    def processAlgorithm(  # noqa: N802, D102
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        options = self.restore_options(parameters, context)
        with core_errors():
            from mmcanet.inference import restore_scene  # validates everything before the model loads

            # the model stays loaded for the next run with the same file and device (released on unload)
            result = restore_scene(core_options.RestoreOptions(**options), cache=model_cache(), **core_callbacks(feedback))
        if feedback is not None:
            feedback.pushInfo(tr("Ran on {device} in {seconds:.1f} s").format(device=result.device, seconds=result.seconds))
        style_on_load(context, options["output"])
        style_on_load(context, options.get("uncertainty_output"), style_predicted_error)
        change = options["change_output"]
        return {
            self.OUTPUT: options["output"],
            self.MASK_OUTPUT: options["mask_output"],
            self.UNCERTAINTY_OUTPUT: options.get("uncertainty_output"),
            self.CHANGE_OUTPUT: change,
            self.CONFIDENCE_OUTPUT: change,
            # NaN (no mask: every pixel restored as given) has no number in Processing: None
            self.CLOUD_FRACTION: None if math.isnan(result.cloud_fraction) else float(result.cloud_fraction),
        }

