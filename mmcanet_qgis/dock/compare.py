"""One-click before/after: show or hide the restored layer, and fade it over the cloudy original."""

from __future__ import annotations

from qgis.core import QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSlider, QWidget


class ComparePanel(QWidget):
    """A 'Show restored' toggle and an opacity slider acting on the last restored layer."""

    def __init__(self, project: QgsProject, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._project = project
        self._layer_id = ""
        self.toggle = QPushButton(self.tr("Before / after"))
        self.toggle.setCheckable(True)
        self.toggle.setToolTip(self.tr("Show the restored layer (pressed) or the cloudy original underneath"))
        self.opacity = QSlider(Qt.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(100)
        self.opacity.setToolTip(self.tr("Opacity of the restored layer"))
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.toggle)
        layout.addWidget(QLabel(self.tr("Opacity")))
        layout.addWidget(self.opacity, 1)
        self.toggle.toggled.connect(self._show_restored)
        self.opacity.valueChanged.connect(self._set_opacity)
        project.layersRemoved.connect(self._forget_removed)
        self.set_layer(None)

    def set_layer(self, layer: QgsRasterLayer | None) -> None:
        """Compare this restored layer from now on (None disables the controls)."""
        self._layer_id = layer.id() if layer is not None else ""
        self.setEnabled(layer is not None)
        self.toggle.blockSignals(True)
        self.toggle.setChecked(layer is not None)
        self.toggle.blockSignals(False)
        if layer is not None:
            self.opacity.setValue(round(layer.opacity() * 100))

    def layer(self) -> QgsRasterLayer | None:
        """The restored layer being compared, if it is still in the project."""
        return self._project.mapLayer(self._layer_id) if self._layer_id else None

    def _show_restored(self, visible: bool) -> None:
        node = self._project.layerTreeRoot().findLayer(self._layer_id) if self._layer_id else None
        if node is not None:
            node.setItemVisibilityChecked(visible)

    def _set_opacity(self, value: int) -> None:
        layer = self.layer()
        if layer is not None:
            layer.setOpacity(value / 100.0)
            layer.triggerRepaint()

    def _forget_removed(self, layer_ids: list[str]) -> None:
        if self._layer_id in layer_ids:
            self.set_layer(None)
