"""The Processing provider `mmcanet` ("MMCANet cloud removal"): registers the algorithms, imports no torch."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms import ALGORITHMS
from .algorithms.base import ICON_PATH, tr


class MMCANetProvider(QgsProcessingProvider):
    """Provider of mmcanet:remove_clouds, train_model, evaluate_model, simulate_clouds, detect_clouds."""

    def id(self) -> str:  # noqa: D102
        return "mmcanet"

    def name(self) -> str:  # noqa: D102
        return tr("MMCANet cloud removal")

    def longName(self) -> str:  # noqa: N802, D102
        try:
            from mmcanet import __version__
        except ImportError:
            return self.name()
        return f"{self.name()} {__version__}"

    def icon(self) -> QIcon:  # noqa: D102
        return QIcon(str(ICON_PATH))

    def svgIconPath(self) -> str:  # noqa: N802, D102
        return str(ICON_PATH)

    def loadAlgorithms(self) -> None:  # noqa: N802, D102
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())
