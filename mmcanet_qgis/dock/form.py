"""The dock's input fields, built in code: layers, model, options, output, Advanced; problems shown inline."""

from __future__ import annotations

import contextlib
import os

from qgis.core import (
    QgsCoordinateTransformContext,
    QgsMapLayer,
    QgsMapLayerProxyModel,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.gui import QgsCollapsibleGroupBox, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QWidget,
)

from . import checks, preselect
from .contract import AlgorithmSpec
from .settings import DockChoices

BLOCKING_STYLE = "color: #b00020;"
WHOLE_LAYER, MAP_EXTENT, SELECTED_POLYGONS = "whole", "map_extent", "selected_polygons"
AREAS: tuple[tuple[str, str], ...] = ((WHOLE_LAYER, "Whole layer"), (MAP_EXTENT, "Current map extent"),
                                      (SELECTED_POLYGONS, "Selected polygons"))
"""The area choices: key (remembered, sent to the widget) and label."""
WARNING_STYLE = "color: #8a5a00;"


class ChoicesForm(QScrollArea):
    """Every choice the user makes before pressing Run.

    `inputs_changed` fires when something the pre-run checks look at changes (layers, files, tiling);
    `options_changed` when any remembered choice changes. Option lists and spin box ranges come from
    `spec` (the algorithm's parameter definitions); without it those fields stay empty and disabled.
    """

    inputs_changed = pyqtSignal()
    options_changed = pyqtSignal()

    def __init__(self, spec: AlgorithmSpec | None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._spec = spec
        self._problem_labels: dict[str, QLabel] = {}
        self._output_folder = ""
        host = QWidget()
        form = QFormLayout(host)
        form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
        # labels above their fields: a new dock is ~300 px wide (QGIS 3.22, 1280 px window), too narrow
        # for a label column plus a layer picker with its CRS
        form.setRowWrapPolicy(QFormLayout.WrapAllRows)
        form.setContentsMargins(2, 2, 2, 2)

        # an empty entry: the pickers never fill themselves with whatever layer comes first (an output,
        # an unrelated scene); `preselect_layers` chooses, or leaves them empty with a hint
        self.sar_combo = _layer_combo()
        self._add_row(form, self.tr("SAR (S1)"), self.sar_combo, checks.SAR)
        self.optical_combo = _layer_combo()
        self._add_row(form, self.tr("Cloudy optical (S2)"), self.optical_combo, checks.OPTICAL)
        self.mask_combo = _layer_combo()
        self.mask_combo.setToolTip(self.tr("Optional: a 1-band cloud mask (1 = cloud); detected when empty"))
        self._add_row(form, self.tr("Cloud mask"), self.mask_combo, checks.MASK)
        self.area_combo = QComboBox()
        for key, label in AREAS:
            self.area_combo.addItem(self.tr(label), key)
        self.area_combo.setToolTip(self.tr(
            "Whole layer: restore the whole optical image. Current map extent: restore only the optical "
            "pixels inside what the map shows now (faster for a field, a town, a lake). Selected polygons: "
            "only the rectangle around the features selected in a polygon layer. The result covers just "
            "that area, aligned with the optical image's pixels."))
        form.addRow(self.tr("Area"), self.area_combo)
        self.polygon_combo = QgsMapLayerComboBox()
        self.polygon_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.polygon_combo.setAllowEmptyLayer(True)
        self.polygon_combo.setLayer(None)
        self.polygon_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.polygon_combo.setMinimumContentsLength(10)
        self.polygon_combo.setToolTip(self.tr("The polygon layer whose selected features mark the area"))
        self._add_row(form, None, self.polygon_combo, checks.AREA)
        self._watched_polygons: QgsVectorLayer | None = None

        self.model_widget = QgsFileWidget()
        self.model_widget.setStorageMode(QgsFileWidget.GetFile)
        self.model_widget.setFilter(self.tr("MMCANet model (*.safetensors);;All files (*)"))
        self.model_widget.lineEdit().setPlaceholderText(self.tr("Bundled model"))
        self.model_summary = QLabel()
        self.model_summary.setWordWrap(True)
        form.addRow(self.tr("Model"), self.model_widget)
        self._add_row(form, None, self.model_summary, checks.MODEL)

        self.strategy_combo = _options_combo(spec.strategies if spec else ())
        self.device_combo = _options_combo(spec.devices if spec else ())
        form.addRow(self.tr("Restoration strategy"), self.strategy_combo)
        form.addRow(self.tr("Device"), self.device_combo)
        self.keep_clear_check = QCheckBox(self.tr("Keep clear pixels"))
        self.keep_clear_check.setToolTip(
            self.tr("Copy pixels outside clouds from the input instead of the model. Unchecked, Level-2A images "
                    "keep them anyway (the model corrects haze only in Level-1C) and Level-1C images have every "
                    "pixel restored")
        )
        form.addRow(self.keep_clear_check)
        self.add_mask_check = QCheckBox(self.tr("Add the cloud mask"))
        self.add_mask_check.setToolTip(self.tr("Also write the cloud/shadow mask that was used and add it as a layer"))
        form.addRow(self.add_mask_check)
        self.add_error_check = QCheckBox(self.tr("Add predicted error"))
        self._error_tooltip = self.tr(
            "Also write the model's predicted error for every pixel (reflectance, 0-1: the absolute error "
            "it expects in its own result, mean over bands) and add it as a layer in fixed classes "
            "≤ 0.01, 0.01–0.02, 0.02–0.05, 0.05–0.1, > 0.1 (light to dark red). Use it to decide where the "
            "restored image can be believed: e.g. ignore pixels whose predicted error is over 0.05 (in "
            "Layer Properties > Symbology make those classes transparent, or mask them with the Raster "
            "Calculator). Kept clear pixels get a small error too, not zero.")
        self.add_error_check.setToolTip(self._error_tooltip)
        form.addRow(self.add_error_check)

        self.output_widget = QgsFileWidget()
        self.output_widget.setStorageMode(QgsFileWidget.SaveFile)
        self.output_widget.setFilter(self.tr("GeoTIFF (*.tif *.tiff)"))
        self.output_widget.lineEdit().setPlaceholderText(self.tr("Automatic name (see below)"))
        self.output_widget.setToolTip(
            self.tr("Empty: a new file named after the optical layer, in the folder shown below")
        )
        self._add_row(form, self.tr("Output GeoTIFF"), self.output_widget, checks.OUTPUT)
        self.output_hint = QLabel()
        self.output_hint.setWordWrap(True)
        form.addRow(self.output_hint)

        self.advanced_box = QgsCollapsibleGroupBox(self.tr("Advanced"))
        self.advanced_box.setSaveCollapsedState(False)  # remembered with the other choices instead
        advanced = QFormLayout(self.advanced_box)
        advanced.setRowWrapPolicy(QFormLayout.WrapLongRows)
        self.tile_spin = self._tiling_spin("tile_size", " px")
        self.overlap_spin = self._tiling_spin("overlap", " px")
        self.batch_spin = self._tiling_spin("batch_size", "")
        advanced.addRow(self.tr("Tile size"), self.tile_spin)
        advanced.addRow(self.tr("Overlap"), self.overlap_spin)
        advanced.addRow(self.tr("Batch size"), self.batch_spin)
        self.reset_advanced_button = QPushButton(self.tr("Defaults"))
        self._add_row(advanced, None, self.reset_advanced_button, checks.ADVANCED)
        self.advanced_box.setEnabled(spec is not None)
        form.addRow(self.advanced_box)

        self.setWidgetResizable(True)
        self.setFrameShape(QScrollArea.NoFrame)
        # never clip: should the dock be dragged narrower than the fields' minimum, scroll instead
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAsNeeded)
        self.setWidget(host)
        self._connect()

    def _tiling_spin(self, key: str, suffix: str) -> QSpinBox:
        spin = QSpinBox()
        spin.setSuffix(suffix)
        if self._spec is not None:
            bounds = getattr(self._spec, key)
            spin.setRange(bounds.minimum, bounds.maximum)
            if bounds.means_model_default(bounds.minimum):
                spin.setSpecialValueText(self.tr("Model default"))
        return spin

    def _add_row(self, form: QFormLayout, label: str | None, widget: QWidget, field: str) -> None:
        """A field (with its label above it; None: no label), and under it a hidden label for its problems."""
        if label is None:
            form.addRow(widget)
        else:
            form.addRow(label, widget)
        problem = QLabel()
        problem.setWordWrap(True)
        problem.setVisible(False)
        form.addRow(problem)
        self._problem_labels[field] = problem

    def _connect(self) -> None:
        changed, options = self.inputs_changed.emit, self.options_changed.emit
        for combo in (self.sar_combo, self.optical_combo, self.mask_combo):
            combo.layerChanged.connect(changed)
        for file_widget in (self.model_widget, self.output_widget):
            file_widget.fileChanged.connect(changed)
        self.output_widget.fileChanged.connect(self._remember_output_folder)
        for spin in (self.tile_spin, self.overlap_spin, self.batch_spin):
            spin.valueChanged.connect(changed)
        self.model_widget.fileChanged.connect(options)
        for spin in (self.tile_spin, self.overlap_spin, self.batch_spin):
            spin.valueChanged.connect(options)
        for combo in (self.strategy_combo, self.device_combo):
            combo.currentIndexChanged.connect(options)
        for check in (self.keep_clear_check, self.add_mask_check, self.add_error_check):
            check.toggled.connect(options)
        self.area_combo.currentIndexChanged.connect(changed)
        self.area_combo.currentIndexChanged.connect(options)
        self.area_combo.currentIndexChanged.connect(self._show_polygon_picker)
        self.polygon_combo.layerChanged.connect(self._watch_selection)
        self.polygon_combo.layerChanged.connect(changed)
        self._show_polygon_picker()
        self.advanced_box.collapsedStateChanged.connect(options)
        self.reset_advanced_button.clicked.connect(self.reset_advanced)

    # ---- values ---------------------------------------------------------------------------------

    def choices(self) -> DockChoices:
        """The choices remembered between sessions (layers excepted: they belong to the project)."""
        return DockChoices(
            model_path=self.model_widget.filePath(),
            strategy=self.strategy_combo.currentText(),
            device=self.device_combo.currentText(),
            keep_clear=self.keep_clear_check.isChecked(),
            add_mask=self.add_mask_check.isChecked(),
            add_error=self.add_error_check.isChecked(),
            area=self.area(),
            tile_size=self.tile_spin.value(),
            overlap=self.overlap_spin.value(),
            batch_size=self.batch_spin.value(),
            advanced_collapsed=self.advanced_box.isCollapsed(),
            output_folder=self._output_folder,
        )

    def apply(self, choices: DockChoices) -> None:
        """Show remembered choices."""
        self.model_widget.setFilePath(choices.model_path)
        self.strategy_combo.setCurrentText(choices.strategy)
        self.device_combo.setCurrentText(choices.device)
        self.keep_clear_check.setChecked(choices.keep_clear)
        self.add_mask_check.setChecked(choices.add_mask)
        self.add_error_check.setChecked(choices.add_error)
        self.area_combo.setCurrentIndex(max(self.area_combo.findData(choices.area), 0))
        self.tile_spin.setValue(choices.tile_size)
        self.overlap_spin.setValue(choices.overlap)
        self.batch_spin.setValue(choices.batch_size)
        self.advanced_box.setCollapsed(choices.advanced_collapsed)
        self._output_folder = choices.output_folder

    def area(self) -> str:
        """The chosen area: WHOLE_LAYER, MAP_EXTENT or SELECTED_POLYGONS."""
        return str(self.area_combo.currentData() or WHOLE_LAYER)

    def polygon_layer(self) -> QgsVectorLayer | None:
        """The polygon layer whose selection is the area (None when none is chosen)."""
        layer = self.polygon_combo.currentLayer()
        return layer if isinstance(layer, QgsVectorLayer) else None

    def _show_polygon_picker(self) -> None:
        self.polygon_combo.setVisible(self.area() == SELECTED_POLYGONS)
        if self.area() == SELECTED_POLYGONS and self.polygon_layer() is None:
            layers = [self.polygon_combo.layer(i) for i in range(self.polygon_combo.count())]
            selected = [layer for layer in layers if isinstance(layer, QgsVectorLayer) and layer.selectedFeatureCount()]
            if selected:  # the layer the user has just selected in, as QGIS's own "selected features only"
                self.polygon_combo.setLayer(selected[0])

    def _watch_selection(self, layer: QgsMapLayer | None) -> None:
        """Re-check when the selection of the chosen polygon layer changes (it is the area)."""
        if self._watched_polygons is not None:
            with contextlib.suppress(TypeError, RuntimeError):  # the layer is already gone
                self._watched_polygons.selectionChanged.disconnect(self._on_selection_changed)
        self._watched_polygons = layer if isinstance(layer, QgsVectorLayer) else None
        if self._watched_polygons is not None:
            self._watched_polygons.selectionChanged.connect(self._on_selection_changed)

    def _on_selection_changed(self) -> None:
        if self.area() == SELECTED_POLYGONS:
            self.inputs_changed.emit()

    def set_error_available(self, available: bool, why_not: str = "") -> None:
        """Enable "Add predicted error" only for a model that predicts its error (`why_not` as tooltip)."""
        self.add_error_check.setEnabled(available)
        self.add_error_check.setToolTip(self._error_tooltip if available else why_not)

    def wants_error_layer(self) -> bool:
        """The predicted-error layer is asked for and the model can write it."""
        return self.add_error_check.isEnabled() and self.add_error_check.isChecked()

    def output_folder(self) -> str:
        """The folder of the last output file the user chose ("" when never chosen)."""
        return self._output_folder

    def _remember_output_folder(self, path: str) -> None:
        if path:
            self._output_folder = os.path.dirname(os.path.abspath(path))
            self.options_changed.emit()

    def reset_advanced(self) -> None:
        """Tile size, overlap and batch size back to the algorithm's defaults."""
        if self._spec is not None:
            self.tile_spin.setValue(self._spec.tile_size.default)
            self.overlap_spin.setValue(self._spec.overlap.default)
            self.batch_spin.setValue(self._spec.batch_size.default)

    def model_path(self) -> str:
        """The chosen model file, or the bundled one when the field is empty ("" when there is none)."""
        return self.model_widget.filePath() or (self._spec.default_model if self._spec else "")

    def preselect_layers(
        self,
        layers: list[QgsRasterLayer],
        transform_context: QgsCoordinateTransformContext,
        remembered: preselect.Pair | None = None,
    ) -> None:
        """Point the SAR / optical pickers at the best pair of `layers` (rules: `preselect.choose_pair`)."""
        current = preselect.Pair(self.sar_combo.currentLayer(), self.optical_combo.currentLayer())
        pair = preselect.choose_pair(
            layers, current, remembered or preselect.Pair(None, None), transform_context
        )
        for combo, layer in ((self.sar_combo, pair.sar), (self.optical_combo, pair.optical)):
            if layer is not None and combo.currentLayer() is not layer:
                combo.setLayer(layer)

    def show_problems(self, problems: list[checks.Problem]) -> None:
        """Each problem under its field: red when it blocks the run, amber for a warning."""
        for field, label in self._problem_labels.items():
            mine = [p for p in problems if p.field == field]
            label.setText("\n".join(p.message for p in mine))
            label.setStyleSheet(BLOCKING_STYLE if any(p.blocking for p in mine) else WARNING_STYLE)
            label.setVisible(bool(mine))

    def problem_text(self, field: str) -> str:
        """What is shown under `field` ("" when nothing)."""
        label = self._problem_labels[field]
        return "" if label.isHidden() else label.text()


def _layer_combo() -> QgsMapLayerComboBox:
    combo = QgsMapLayerComboBox()
    combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
    combo.setAllowEmptyLayer(True)
    combo.setLayer(None)
    combo.setShowCrs(True)
    # long layer names must not widen the dock: elide instead
    combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(10)
    return combo


def _options_combo(options: tuple[str, ...]) -> QComboBox:
    combo = QComboBox()
    combo.addItems(list(options))
    combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(10)
    return combo
