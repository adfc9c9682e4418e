"""mmcanet:detect_clouds: rule-based cloud and cloud-shadow mask of a Sentinel-2 image."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingParameterExtent,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from .base import MMCANetAlgorithm, core_callbacks, core_errors, tr


class DetectCloudsAlgorithm(MMCANetAlgorithm):
    """Parameters -> mmcanet.clouds.scene.detect_scene (strip-wise, bounded memory), with progress and cancel."""

    INPUT = "INPUT"
    EXTENT = "EXTENT"
    OUTPUT = "OUTPUT"

    NAME = "detect_clouds"
    DISPLAY_NAME = "Detect clouds and shadows"
    GROUP = "Cloud removal"
    GROUP_ID = "cloud_removal"
    HELP = (
        "Finds clouds and cloud shadows in a Sentinel-2 image with spectral rules (no training data): "
        "bright, white, hazy and not snow for clouds; dark in NIR and SWIR near a cloud for shadows.\n\n"
        "Sentinel-2: 13 bands (Level-1C order; the cirrus band B10 adds thin cirrus) or 12 bands "
        "(Level-2A, no B10), digital numbers = reflectance x 10000.\n\n"
        "Output: a 1-band mask (uint8) on the input grid: 0 = clear, 1 = cloud, 2 = cloud shadow, "
        "255 = no data. Use it as the "
        "'Cloud mask' of 'Remove clouds', or to review what would be replaced. Dark water next to clouds "
        "may be marked as shadow.\n\n"
        "Area of interest (optional): only the pixels inside this extent are read and written (snapped "
        "outward to the image's pixel grid); empty: the whole image. An extent without a CRS is in the "
        "image's CRS."
    )

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802, D102
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, tr("Sentinel-2")))
        self.addParameter(QgsProcessingParameterExtent(
            self.EXTENT, tr("Area of interest (empty: the whole image)"), optional=True))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, tr("Cloud / shadow mask")))

    def processAlgorithm(  # noqa: N802, D102
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        source = self.raster_path(parameters, self.INPUT, context)
        output = self.output_path(parameters, self.OUTPUT, context)
        area = self.area_of_interest(parameters, self.EXTENT, context)
        with core_errors():
            from mmcanet.clouds.scene import detect_scene

            detect_scene(source, output, **area, **core_callbacks(feedback))
        return {self.OUTPUT: output}
