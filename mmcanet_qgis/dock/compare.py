"""Before/after in QGIS 3.22: flip the restored layer on and off over the identically styled original.

QGIS 3.22 has no map swipe (that arrived as a plugin, not in core), so the comparison is a blink: the
restored layer sits directly above the cloudy one, both drawn with the same bands and the same stretch
(`results.style_pair`), and one button hides or shows it. Nothing moves between the two states, so the
eye sees exactly the pixels that changed; the opacity slider fades between them for a second look.
"""

from __future__ import annotations

from qgis.core import QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSlider, QVBoxLayout, QWidget


class ComparePanel(QWidget):
    """A 'Before / after' toggle and an opacity slider acting on the last restored layer."""

    def __init__(self, project: QgsProject, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._project = project
        self._layer_id = ""
        self._original_id = ""
        self.toggle = QPushButton(self.tr("Before / after"))
        self.toggle.setCheckable(True)
        self.toggle.setToolTip(
            self.tr("Pressed: the restored layer. Released: the cloudy original underneath, same style.")
        )
        self.state_label = QLabel()
        self.opacity = QSlider(Qt.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(100)
        self.opacity.setToolTip(self.tr("Opacity of the restored layer"))
        top = QHBoxLayout()
        top.addWidget(self.toggle)
        top.addWidget(self.state_label, 1)
        fade = QHBoxLayout()
        fade.addWidget(QLabel(self.tr("Opacity")))
        fade.addWidget(self.opacity, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addLayout(fade)
        self.toggle.toggled.connect(self._show_restored)
        self.opacity.valueChanged.connect(self._set_opacity)
        project.layersRemoved.connect(self._forget_removed)
        self.set_layer(None)

    def set_layer(self, layer: QgsRasterLayer | None, original: QgsRasterLayer | None = None) -> None:
        """Compare this restored layer (with `original` under it) from now on; None disables the controls."""
        self._layer_id = layer.id() if layer is not None else ""
        self._original_id = original.id() if original is not None and layer is not None else ""
        self.setEnabled(layer is not None)
        self.toggle.blockSignals(True)
        self.toggle.setChecked(layer is not None)
        self.toggle.blockSignals(False)
        self._show_state(layer is not None)
        if layer is not None:
            self.opacity.setValue(round(layer.opacity() * 100))

    def layer(self) -> QgsRasterLayer | None:
        """The restored layer being compared, if it is still in the project."""
        return self._project.mapLayer(self._layer_id) if self._layer_id else None

    def original(self) -> QgsRasterLayer | None:
        """The cloudy layer under it, if it is still in the project."""
        return self._project.mapLayer(self._original_id) if self._original_id else None

    def _show_restored(self, visible: bool) -> None:
        root = self._project.layerTreeRoot()
        node = root.findLayer(self._layer_id) if self._layer_id else None
        if node is not None:
            node.setItemVisibilityChecked(visible)
        original = root.findLayer(self._original_id) if self._original_id else None
        if original is not None and not visible:
            original.setItemVisibilityChecked(True)  # "before" must show the original, even if it was off
        self._show_state(visible)

    def _show_state(self, restored: bool) -> None:
        if not self._layer_id:
            self.state_label.setText("")
        else:
            self.state_label.setText(self.tr("showing: restored") if restored else self.tr("showing: cloudy"))

    def _set_opacity(self, value: int) -> None:
        layer = self.layer()
        if layer is not None:
            layer.setOpacity(value / 100.0)
            layer.triggerRepaint()

    def _forget_removed(self, layer_ids: list[str]) -> None:
        if self._layer_id in layer_ids:
            self.set_layer(None)
        elif self._original_id in layer_ids:
            self._original_id = ""
