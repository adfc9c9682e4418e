"""How restored rasters look when Processing loads them: true colour (B4, B3, B2), 2-98 % stretch."""

from __future__ import annotations

from qgis.core import (
    QgsContrastEnhancement,
    QgsMultiBandColorRenderer,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
    QgsRasterMinMaxOrigin,
)

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


class TrueColourPostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Styles an output layer in true colour once Processing has loaded it (runs in the main thread)."""

    _instances: list[TrueColourPostProcessor] = []

    def postProcessLayer(  # noqa: N802 - QGIS API
        self, layer: QgsRasterLayer, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> None:
        if isinstance(layer, QgsRasterLayer):
            style_true_colour(layer)

    @classmethod
    def create(cls) -> TrueColourPostProcessor:
        """A new instance kept alive on the class: Processing holds only a C++ pointer to it."""
        instance = cls()
        cls._instances.append(instance)
        return instance


def style_on_load(context: QgsProcessingContext, output: str) -> None:
    """Ask Processing to style ``output`` (a layer id or path) in true colour when it loads it."""
    if context.willLoadLayerOnCompletion(output):
        context.layerToLoadOnCompletionDetails(output).setPostProcessor(TrueColourPostProcessor.create())


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
