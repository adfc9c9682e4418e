"""How the plugin's rasters look when loaded: restored images in true colour (B4, B3, B2, 2-98 % stretch),
the predicted-error layer in fixed reflectance classes on a sequential colour ramp."""

from __future__ import annotations

import math
from collections.abc import Callable

from qgis.core import (
    QgsColorRampShader,
    QgsContrastEnhancement,
    QgsMultiBandColorRenderer,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
    QgsRasterMinMaxOrigin,
    QgsRasterShader,
    QgsSingleBandPseudoColorRenderer,
)
from qgis.PyQt.QtGui import QColor

TRUE_COLOUR_BANDS: tuple[int, int, int] = (4, 3, 2)
"""1-based band numbers of B4, B3, B2 in the 13-band Level-1C order (also the 12-band L2A order)."""
CUT: tuple[float, float] = (0.02, 0.98)
"""Cumulative-cut stretch limits (fractions of the histogram)."""
SAMPLE_SIZE = 250_000
"""Pixels sampled for the histogram (QGIS's own default for estimated statistics)."""


def style_true_colour(layer: QgsRasterLayer, bands: tuple[int, int, int] = TRUE_COLOUR_BANDS) -> bool:
    """Render ``layer`` as RGB = ``bands`` with a 2-98 % cumulative-cut stretch over the whole raster.

    Returns False (layer untouched) when the layer has fewer bands than needed.
    """
    if not layer.isValid() or layer.bandCount() < max(bands):
        return False
    provider = layer.dataProvider()
    renderer = QgsMultiBandColorRenderer(provider, *bands)
    origin = QgsRasterMinMaxOrigin()
    origin.setLimits(QgsRasterMinMaxOrigin.CumulativeCut)
    origin.setCumulativeCutLower(CUT[0])
    origin.setCumulativeCutUpper(CUT[1])
    origin.setExtent(QgsRasterMinMaxOrigin.WholeRaster)
    origin.setStatAccuracy(QgsRasterMinMaxOrigin.Estimated)
    renderer.setMinMaxOrigin(origin)
    setters = (renderer.setRedContrastEnhancement, renderer.setGreenContrastEnhancement,
               renderer.setBlueContrastEnhancement)
    for band, setter in zip(bands, setters, strict=True):
        low, high = provider.cumulativeCut(band, CUT[0], CUT[1], layer.extent(), SAMPLE_SIZE)
        enhancement = QgsContrastEnhancement(provider.dataType(band))
        enhancement.setContrastEnhancementAlgorithm(QgsContrastEnhancement.StretchToMinimumMaximum)
        enhancement.setMinimumValue(low)
        enhancement.setMaximumValue(high)
        setter(enhancement)
    layer.setRenderer(renderer)
    layer.triggerRepaint()
    return True


PREDICTED_ERROR_BAND = "predicted_abs_error"
"""Band description of the predicted-error raster (``mmcanet restore --uncertainty-output``)."""
ERROR_BREAKS: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1)
"""Class limits of the predicted-error style, in reflectance (0-1): fixed, so a legend reads the same on
every scene and an analyst can threshold by class ("hide pixels whose predicted error is over 0.05")."""
ERROR_COLOURS: tuple[str, ...] = ("#ffffb2", "#fecc5c", "#fd8d3c", "#f03b20", "#bd0026")
"""One colour per class, light = small error to dark red = large (ColorBrewer YlOrRd, 5 classes)."""


def error_class_labels(breaks: tuple[float, ...] = ERROR_BREAKS) -> list[str]:
    """Legend labels of the classes ``breaks`` make: '≤ 0.01', '0.01 – 0.02', …, '> 0.1'."""
    labels = [f"≤ {breaks[0]:g}"]
    labels += [f"{low:g} – {high:g}" for low, high in zip(breaks, breaks[1:], strict=False)]
    labels.append(f"> {breaks[-1]:g}")
    return labels


def is_predicted_error_layer(layer: QgsRasterLayer) -> bool:
    """True for a valid 1-band layer whose band is described ``predicted_abs_error``."""
    return (layer.isValid() and layer.bandCount() == 1
            and layer.bandName(1).rstrip().endswith(PREDICTED_ERROR_BAND))


def style_predicted_error(layer: QgsRasterLayer, breaks: tuple[float, ...] = ERROR_BREAKS,
                          hide_above: float | None = None) -> bool:
    """Draw a predicted-error layer (reflectance) in fixed classes on a sequential ramp (Singleband pseudocolor).

    Class ``i`` holds the values up to ``breaks[i]`` (the last one everything above ``breaks[-1]``), so
    the legend says in reflectance how far off a pixel is expected to be. ``hide_above``: classes whose
    lower limit is at or above it are drawn transparent (e.g. 0.05 leaves only pixels predicted within
    0.05 coloured). Returns False (layer untouched) for anything but a 1-band layer.
    """
    if not layer.isValid() or layer.bandCount() != 1:
        return False
    if len(ERROR_COLOURS) < len(breaks) + 1:
        raise ValueError(f"{len(breaks)} breaks need {len(breaks) + 1} colours, there are {len(ERROR_COLOURS)}")
    ramp = QgsColorRampShader(0.0, breaks[-1])
    ramp.setColorRampType(QgsColorRampShader.Discrete)
    items = []
    lows = (-math.inf, *breaks)
    colours = ERROR_COLOURS[: len(breaks) + 1]
    for upper, low, label, colour in zip((*breaks, math.inf), lows, error_class_labels(breaks), colours, strict=True):
        color = QColor(colour)
        if hide_above is not None and low >= hide_above:
            color.setAlpha(0)
        items.append(QgsColorRampShader.ColorRampItem(upper, color, label))
    ramp.setColorRampItemList(items)
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(ramp)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, shader)
    renderer.setClassificationMin(0.0)
    renderer.setClassificationMax(breaks[-1])
    layer.setRenderer(renderer)
    layer.triggerRepaint()
    return True


class StylePostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Styles an output layer once Processing has loaded it (runs in the main thread)."""

    _instances: list[StylePostProcessor] = []

    def __init__(self, style: Callable[[QgsRasterLayer], bool]) -> None:
        super().__init__()
        self._style = style

    def postProcessLayer(  # noqa: N802 - QGIS API
        self, layer: QgsRasterLayer, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> None:
        if isinstance(layer, QgsRasterLayer):
            self._style(layer)

    @classmethod
    def create(cls, style: Callable[[QgsRasterLayer], bool]) -> StylePostProcessor:
        """A new instance kept alive on the class: Processing holds only a C++ pointer to it."""
        instance = cls(style)
        cls._instances.append(instance)
        return instance


def style_on_load(context: QgsProcessingContext, output: str | None,
                  style: Callable[[QgsRasterLayer], bool] = style_true_colour) -> None:
    """Ask Processing to style ``output`` (a layer id or path) with ``style`` (default: true colour) when
    it loads it."""
    if output and context.willLoadLayerOnCompletion(output):
        context.layerToLoadOnCompletionDetails(output).setPostProcessor(StylePostProcessor.create(style))


def copy_true_colour(reference: QgsRasterLayer, target: QgsRasterLayer) -> bool:
    """Give ``target`` exactly the RGB bands and min/max stretch of ``reference``'s colour renderer.

    For a fair before/after: one stretch, computed once (on the restored layer by ``style_true_colour``),
    drawn on both layers, so a difference on screen is a difference in the pixels, not in the styling.
    The copied limits are fixed values (no automatic re-stretch on the target). Returns False (target
    untouched) when ``reference`` has no multiband colour renderer or ``target`` lacks a band.
    """
    source = reference.renderer()
    if not isinstance(source, QgsMultiBandColorRenderer) or not target.isValid():
        return False
    bands = (source.redBand(), source.greenBand(), source.blueBand())
    if min(bands) < 1 or target.bandCount() < max(bands):
        return False
    provider = target.dataProvider()
    renderer = QgsMultiBandColorRenderer(provider, *bands)
    enhancements = (source.redContrastEnhancement(), source.greenContrastEnhancement(),
                    source.blueContrastEnhancement())
    setters = (renderer.setRedContrastEnhancement, renderer.setGreenContrastEnhancement,
               renderer.setBlueContrastEnhancement)
    for band, enhancement, setter in zip(bands, enhancements, setters, strict=True):
        copy = QgsContrastEnhancement(provider.dataType(band))
        if enhancement is not None:
            copy.setContrastEnhancementAlgorithm(enhancement.contrastEnhancementAlgorithm())
            copy.setMinimumValue(enhancement.minimumValue())
            copy.setMaximumValue(enhancement.maximumValue())
        setter(copy)
    origin = QgsRasterMinMaxOrigin()
    origin.setLimits(QgsRasterMinMaxOrigin.None_)
    renderer.setMinMaxOrigin(origin)
    target.setRenderer(renderer)
    target.triggerRepaint()
    return True
