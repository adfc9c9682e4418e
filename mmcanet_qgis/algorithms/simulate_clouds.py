"""mmcanet:simulate_clouds: add realistic simulated clouds (and shadows) to a clear Sentinel-2 image."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from .base import INTEGER, MMCANetAlgorithm, core_callbacks, core_errors, tr
from .styling import style_on_load


def _thicknesses() -> tuple[str, ...]:
    """mmcanet.clouds.simulate.THICKNESS_MODES (numpy only), default first; ('mixed',) without the core."""
    try:
        from mmcanet.clouds.simulate import THICKNESS_MODES
    except ImportError:
        return ("mixed",)
    return tuple(THICKNESS_MODES)


class SimulateCloudsAlgorithm(MMCANetAlgorithm):
    """Parameters -> mmcanet.clouds.scene.simulate_scene (read, simulate, write), with progress and cancel."""

    INPUT = "INPUT"
    SEED = "SEED"
    THICKNESS = "THICKNESS"
    OUTPUT = "OUTPUT"
    OPACITY_OUTPUT = "OPACITY_OUTPUT"

    NAME = "simulate_clouds"
    DISPLAY_NAME = "Simulate clouds"
    GROUP = "Training and evaluation"
    GROUP_ID = "training"
    HELP = (
        "Adds simulated clouds and cloud shadows to a clear Sentinel-2 image, for training and testing "
        "cloud removal where the true ground is known.\n\n"
        "Clear Sentinel-2: 13 bands (Level-1C order) or 12 bands (Level-2A, no B10), digital "
        "numbers = reflectance x 10000.\n"
        "Seed: the same seed gives the same clouds.\n"
        "Cloud type: thick (opaque blobs with soft edges), thin (haze over most of the image) or "
        "mixed (both).\n\n"
        "Outputs: the cloudy image (same grid, bands and data type as the input) and, optionally, the cloud "
        "opacity (1 band, 0 = clear to 1 = opaque)."
    )

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802, D102
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, tr("Clear Sentinel-2")))
        self.addParameter(QgsProcessingParameterNumber(
            self.SEED, tr("Seed"), type=INTEGER, defaultValue=0, minValue=0))
        self.addParameter(QgsProcessingParameterEnum(
            self.THICKNESS, tr("Cloud type"), options=list(_thicknesses()), defaultValue=0))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, tr("Cloudy Sentinel-2")))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OPACITY_OUTPUT, tr("Cloud opacity"), optional=True, createByDefault=False))

    def processAlgorithm(  # noqa: N802, D102
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        source = self.raster_path(parameters, self.INPUT, context)
        output = self.output_path(parameters, self.OUTPUT, context)
        opacity = self.output_path(parameters, self.OPACITY_OUTPUT, context)
        seed = self.parameterAsInt(parameters, self.SEED, context)
        thickness = _thicknesses()[self.parameterAsEnum(parameters, self.THICKNESS, context)]
        with core_errors():
            from mmcanet.clouds.scene import simulate_scene

            simulate_scene(source, output, seed=seed, thickness=thickness, opacity_output=opacity,
                           **core_callbacks(feedback))
        style_on_load(context, output)
        return {self.OUTPUT: output, self.OPACITY_OUTPUT: opacity}
