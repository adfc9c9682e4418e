"""mmcanet:stack_bands: one multi-band GeoTIFF from a Sentinel-2 product / band folder or Sentinel-1 VV + VH files."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterRasterDestination,
)

from .base import FOLDER, MMCANetAlgorithm, core_callbacks, core_errors, tr
from .styling import style_on_load

SENSORS = ("Sentinel-2", "Sentinel-1")


class StackBandsAlgorithm(MMCANetAlgorithm):
    """Parameters -> mmcanet.stacking.write_stack (virtual stack, then one compressed GeoTIFF)."""

    INPUT = "INPUT"
    SENSOR = "SENSOR"
    OUTPUT = "OUTPUT"

    NAME = "stack_bands"
    DISPLAY_NAME = "Stack Sentinel bands into one raster"
    GROUP = "Prepare Sentinel data"
    GROUP_ID = "prepare"
    HELP = (
        "Makes the single multi-band raster that 'Remove clouds' and the MMCANet dock take, from data as "
        "it is downloaded.\n\n"
        "Sentinel-2: a .SAFE product folder (Level-1C: 13 bands; Level-2A: 12 bands, the finest file of "
        "each band) or any folder with one file per band (names ending in _B01 ... _B12 / _B8A, .jp2 or "
        ".tif). Every band is put on the grid of the finest band (10 m); 20 m and 60 m bands are resampled "
        "bilinearly. Band names are kept.\n"
        "Sentinel-1: a folder with exactly one VV and one VH raster (e.g. *_VV.tif, *_VH.tif).\n\n"
        "Output: a tiled, compressed GeoTIFF (Sentinel-2 shown in true colour)."
    )

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802, D102
        self.addParameter(QgsProcessingParameterFile(self.INPUT, tr("Product or band folder"), behavior=FOLDER))
        self.addParameter(QgsProcessingParameterEnum(self.SENSOR, tr("Sensor"), options=list(SENSORS), defaultValue=0))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, tr("Stacked raster")))

    def processAlgorithm(  # noqa: N802, D102
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        source = self.parameterAsFile(parameters, self.INPUT, context)
        sar = SENSORS[self.parameterAsEnum(parameters, self.SENSOR, context)] == "Sentinel-1"
        output = self.output_path(parameters, self.OUTPUT, context)
        callbacks = core_callbacks(feedback)
        with core_errors():
            from mmcanet.stacking import write_stack

            write_stack(source, output, sar=sar, progress=callbacks["progress"], is_canceled=callbacks["is_canceled"])
        if not sar:
            style_on_load(context, output)
        return {self.OUTPUT: output}
