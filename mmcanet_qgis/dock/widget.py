"""The cloud-removal dock: gather choices, check them cheaply, run mmcanet:remove_clouds in the background.

No model or tensor code here: the dock builds the algorithm's parameters and hands them to a
QgsProcessingAlgRunnerTask (see `run.py`); results are added to the project by `results.py`.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from qgis.core import (
    QgsMapLayerProxyModel,
    QgsProcessingUtils,
    QgsProject,
    QgsRasterLayer,
)
from qgis.gui import QgsCollapsibleGroupBox, QgsDockWidget, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from . import checks, contract, modelcard, results, settings
from .compare import ComparePanel
from .contract import AlgorithmSpec
from .run import CANCELLED, FAILED, SUCCEEDED, RestoreRun, RunOutcome

_BLOCKING_STYLE = "color: #b00020;"
_WARNING_STYLE = "color: #8a5a00;"


class CloudRemovalDock(QgsDockWidget):
    """Dock widget that restores a cloudy Sentinel-2 layer with a Sentinel-1 layer of the project."""

    def __init__(self, iface: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("MMCANetCloudRemovalDock")
        self.setWindowTitle(self.tr("Cloud removal (MMCANet)"))
        self._iface = iface
        self._project = QgsProject.instance()
        self._algorithm = contract.find_algorithm()
        self._spec = AlgorithmSpec.from_algorithm(self._algorithm) if self._algorithm is not None else None
        self._run: RestoreRun | None = None
        self._cancel_on_destroy: Any = None
        self._run_inputs: dict[str, str] = {}
        self._card: Any = None  # mmcanet.modelfile.ModelCard of the chosen model, when readable
        self._loading = True
        self.problems: list[checks.Problem] = []
        self._ticker = QTimer(self)
        self._ticker.setInterval(500)
        self._ticker.timeout.connect(self._show_elapsed)
        self._build()
        if self._spec is not None:
            self._apply(settings.load(self._spec))
        self._loading = False
        self._connect()
        self.preselect_layers()
        self.revalidate()

    # ---- building -------------------------------------------------------------------------------

    def _build(self) -> None:
        form_host = QWidget()
        form = QFormLayout(form_host)
        self._problem_labels: dict[str, QLabel] = {}

        self.sar_combo = self._layer_combo()
        self._add_field(form, self.tr("SAR (S1)"), self.sar_combo, checks.SAR)
        self.optical_combo = self._layer_combo()
        self._add_field(form, self.tr("Cloudy optical (S2)"), self.optical_combo, checks.OPTICAL)
        self.mask_combo = self._layer_combo()
        self.mask_combo.setAllowEmptyLayer(True)
        self.mask_combo.setLayer(None)
        self.mask_combo.setToolTip(self.tr("Optional: a 1-band cloud mask (1 = cloud); detected when empty"))
        self._add_field(form, self.tr("Cloud mask"), self.mask_combo, checks.MASK)

        self.model_widget = QgsFileWidget()
        self.model_widget.setStorageMode(QgsFileWidget.GetFile)
        self.model_widget.setFilter(self.tr("MMCANet model (*.safetensors);;All files (*)"))
        self.model_widget.lineEdit().setPlaceholderText(self.tr("Bundled model"))
        self.model_summary = QLabel()
        self.model_summary.setWordWrap(True)
        form.addRow(self.tr("Model"), self.model_widget)
        form.addRow("", self.model_summary)
        self._add_problem_label(form, checks.MODEL)

        self.strategy_combo = QComboBox()
        self.device_combo = QComboBox()
        if self._spec is not None:
            self.strategy_combo.addItems(list(self._spec.strategies))
            self.device_combo.addItems(list(self._spec.devices))
        form.addRow(self.tr("Strategy"), self.strategy_combo)
        form.addRow(self.tr("Device"), self.device_combo)
        self.keep_clear_check = QCheckBox(self.tr("Keep clear pixels"))
        self.keep_clear_check.setToolTip(
            self.tr("Copy pixels outside clouds from the input instead of the model")
        )
        form.addRow("", self.keep_clear_check)
        self.add_mask_check = QCheckBox(self.tr("Add the cloud mask layer"))
        form.addRow("", self.add_mask_check)

        self.output_widget = QgsFileWidget()
        self.output_widget.setStorageMode(QgsFileWidget.SaveFile)
        self.output_widget.setFilter(self.tr("GeoTIFF (*.tif *.tiff)"))
        self.output_widget.lineEdit().setPlaceholderText(self.tr("[Save to temporary file]"))
        self._add_field(form, self.tr("Output"), self.output_widget, checks.OUTPUT)

        self.advanced_box = QgsCollapsibleGroupBox(self.tr("Advanced"))
        self.advanced_box.setSaveCollapsedState(False)
        advanced = QFormLayout(self.advanced_box)
        self.tile_spin, self.overlap_spin, self.batch_spin = QSpinBox(), QSpinBox(), QSpinBox()
        for spin, label, suffix, key in (
            (self.tile_spin, self.tr("Tile size"), " px", "tile_size"),
            (self.overlap_spin, self.tr("Overlap"), " px", "overlap"),
            (self.batch_spin, self.tr("Batch size"), "", "batch_size"),
        ):
            spin.setSuffix(suffix)
            if self._spec is not None:
                bounds = getattr(self._spec, key)
                spin.setRange(bounds.minimum, bounds.maximum)
                if bounds.means_model_default(bounds.minimum):
                    spin.setSpecialValueText(self.tr("Model default"))
            advanced.addRow(label, spin)
        self.reset_advanced_button = QPushButton(self.tr("Defaults"))
        advanced.addRow("", self.reset_advanced_button)
        self._add_problem_label(advanced, checks.ADVANCED)
        form.addRow(self.advanced_box)

        for combo in (self.strategy_combo, self.device_combo):
            combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(10)
        form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        scroll.setWidget(form_host)

        self.run_button = QPushButton(self.tr("Run"))
        self.cancel_button = QPushButton(self.tr("Cancel"))
        self.cancel_button.setEnabled(False)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button, 1)
        buttons.addWidget(self.cancel_button)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 100)
        self.progress_bar.setValue(0)
        self.elapsed_label = QLabel()
        progress = QHBoxLayout()
        progress.addWidget(self.progress_bar, 1)
        progress.addWidget(self.elapsed_label)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(1000)
        self.log_view.setMaximumHeight(110)
        self.compare_panel = ComparePanel(self._project)

        host = QWidget()
        layout = QVBoxLayout(host)
        layout.addWidget(scroll, 1)
        layout.addLayout(buttons)
        layout.addLayout(progress)
        layout.addWidget(self.status_label)
        layout.addWidget(self.log_view)
        layout.addWidget(self.compare_panel)
        self.setWidget(host)
        if self._spec is None:
            self.advanced_box.setEnabled(False)
            self._set_status(
                self.tr(
                    "The Processing algorithm {id} is not available: "
                    "enable the MMCANet plugin (its Processing provider) and reopen this panel."
                ).format(id=contract.ALGORITHM_ID),
                _BLOCKING_STYLE,
            )

    def _layer_combo(self) -> QgsMapLayerComboBox:
        combo = QgsMapLayerComboBox()
        combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        combo.setShowCrs(True)
        # long layer names must not widen the dock: elide instead
        combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(14)
        return combo

    def _add_field(self, form: QFormLayout, label: str, widget: QWidget, field: str) -> None:
        form.addRow(label, widget)
        self._add_problem_label(form, field)

    def _add_problem_label(self, form: QFormLayout, field: str) -> None:
        label = QLabel()
        label.setWordWrap(True)
        label.setVisible(False)
        form.addRow("", label)
        self._problem_labels[field] = label

    def _connect(self) -> None:
        for combo in (self.sar_combo, self.optical_combo, self.mask_combo):
            combo.layerChanged.connect(self.revalidate)
        for file_widget in (self.model_widget, self.output_widget):
            file_widget.fileChanged.connect(self.revalidate)
        for spin in (self.tile_spin, self.overlap_spin, self.batch_spin):
            spin.valueChanged.connect(self.revalidate)
        for combo in (self.strategy_combo, self.device_combo):
            combo.currentIndexChanged.connect(self._save_choices)
        for check in (self.keep_clear_check, self.add_mask_check):
            check.toggled.connect(self._save_choices)
        self.advanced_box.collapsedStateChanged.connect(self._save_choices)
        self.reset_advanced_button.clicked.connect(self.reset_advanced)
        self._project.layersAdded.connect(self.preselect_layers)
        self._project.layersRemoved.connect(self.revalidate)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)

    # ---- choices --------------------------------------------------------------------------------

    def choices(self) -> settings.DockChoices:
        """The current choices as they are remembered between sessions."""
        return settings.DockChoices(
            model_path=self.model_widget.filePath(),
            strategy=self.strategy_combo.currentText(),
            device=self.device_combo.currentText(),
            keep_clear=self.keep_clear_check.isChecked(),
            add_mask=self.add_mask_check.isChecked(),
            tile_size=self.tile_spin.value(),
            overlap=self.overlap_spin.value(),
            batch_size=self.batch_spin.value(),
            advanced_collapsed=self.advanced_box.isCollapsed(),
        )

    def _apply(self, choices: settings.DockChoices) -> None:
        self.model_widget.setFilePath(choices.model_path)
        self.strategy_combo.setCurrentText(choices.strategy)
        self.device_combo.setCurrentText(choices.device)
        self.keep_clear_check.setChecked(choices.keep_clear)
        self.add_mask_check.setChecked(choices.add_mask)
        self.tile_spin.setValue(choices.tile_size)
        self.overlap_spin.setValue(choices.overlap)
        self.batch_spin.setValue(choices.batch_size)
        self.advanced_box.setCollapsed(choices.advanced_collapsed)

    def _save_choices(self) -> None:
        if not self._loading and self._spec is not None:
            settings.save(self.choices())

    def reset_advanced(self) -> None:
        """Tile size, overlap and batch size back to the algorithm's defaults."""
        if self._spec is not None:
            self.tile_spin.setValue(self._spec.tile_size.default)
            self.overlap_spin.setValue(self._spec.overlap.default)
            self.batch_spin.setValue(self._spec.batch_size.default)

    def preselect_layers(self) -> None:
        """Point the SAR / optical pickers at a layer with the right band count unless they already do."""
        for combo, counts, other in (
            (self.sar_combo, contract.SAR_BAND_COUNTS, self.optical_combo),
            (self.optical_combo, contract.OPTICAL_BAND_COUNTS, self.sar_combo),
        ):
            if checks.band_count_matches(combo.currentLayer(), counts):
                continue
            for i in range(combo.count()):
                layer = combo.layer(i)
                if checks.band_count_matches(layer, counts) and layer is not other.currentLayer():
                    combo.setLayer(layer)
                    break
        self.revalidate()

    # ---- checks ---------------------------------------------------------------------------------

    def model_path(self) -> str:
        """The chosen model file, or the bundled one when the field is empty."""
        return self.model_widget.filePath() or (self._spec.default_model if self._spec else "")

    def revalidate(self) -> list[checks.Problem]:
        """Run the cheap checks, show each problem next to its field, enable Run only when none blocks."""
        problems = checks.check_layers(
            self.sar_combo.currentLayer(),
            self.optical_combo.currentLayer(),
            self.mask_combo.currentLayer(),
            self._project.transformContext(),
        )
        problems += self._check_model()
        if self._spec is not None:
            problems += checks.check_tiling(*self.effective_tiling(), self.batch_spin.value())
        problems += checks.check_output(self.output_widget.filePath())
        self.problems = problems
        for field, label in self._problem_labels.items():
            mine = [p for p in problems if p.field == field]
            label.setText("\n".join(p.message for p in mine))
            label.setStyleSheet(_BLOCKING_STYLE if any(p.blocking for p in mine) else _WARNING_STYLE)
            label.setVisible(bool(mine))
        self._update_buttons()
        self._save_choices()
        return problems

    def effective_tiling(self) -> tuple[int | None, int | None]:
        """Tile size and overlap the run will use: the fields, or the model card's where they say
        "model default" (None when that card cannot be read)."""
        values: list[int | None] = []
        for spin, key in ((self.tile_spin, "tile_size"), (self.overlap_spin, "overlap")):
            value: int | None = spin.value()
            if self._spec is not None and getattr(self._spec, key).means_model_default(spin.value()):
                value = getattr(self._card, key, None)
            values.append(value)
        return values[0], values[1]

    def _check_model(self) -> list[checks.Problem]:
        path = self.model_path()
        self._card = None
        self.model_summary.setText("")
        if not path:
            return [checks.Problem(checks.MODEL, self.tr("No bundled model was found: choose a model file."))]
        if not os.path.isfile(path):
            return [
                checks.Problem(
                    checks.MODEL, self.tr("The model file {path} does not exist.").format(path=path)
                )
            ]
        try:
            self._card = modelcard.read_model_card(path)
        except modelcard.CardError as exc:
            return [checks.Problem(checks.MODEL, str(exc))]
        summary = self._card.summary()
        self.model_summary.setText(
            self.tr("Bundled: ") + summary if not self.model_widget.filePath() else summary
        )
        return []

    def _update_buttons(self) -> None:
        running = self._run is not None
        blocked = any(p.blocking for p in self.problems) or self._spec is None
        self.run_button.setEnabled(not running and not blocked)
        self.cancel_button.setEnabled(running)

    # ---- running --------------------------------------------------------------------------------

    def build_parameters(self) -> tuple[dict[str, Any], list[str]]:
        """The algorithm's parameters for the current choices, and the paths this run will create.

        Outputs go to a new folder in QGIS's Processing temporary folder unless the user chose a file;
        nothing is created on disk here (see `run`).
        """
        sar, optical, mask = (c.currentLayer() for c in (self.sar_combo, self.optical_combo, self.mask_combo))
        assert sar is not None and optical is not None
        output = self.output_widget.filePath()
        temp_folder = ""
        if output:
            mask_output = os.path.splitext(output)[0] + "_cloudmask.tif"
        else:
            temp_folder = os.path.join(QgsProcessingUtils.tempFolder(), f"mmcanet_{uuid.uuid4().hex[:12]}")
            output = os.path.join(temp_folder, _safe_name(optical.name()) + "_cloud_free.tif")
            mask_output = os.path.join(temp_folder, _safe_name(optical.name()) + "_cloudmask.tif")
        parameters: dict[str, Any] = {
            contract.SAR: sar.source(),
            contract.OPTICAL: optical.source(),
            contract.CLOUD_MASK: mask.source() if mask is not None else None,
            contract.MODEL: self.model_path(),
            contract.STRATEGY: self.strategy_combo.currentIndex(),
            contract.DEVICE: self.device_combo.currentIndex(),
            contract.KEEP_CLEAR: self.keep_clear_check.isChecked(),
            contract.TILE_SIZE: self.tile_spin.value(),
            contract.OVERLAP: self.overlap_spin.value(),
            contract.BATCH_SIZE: self.batch_spin.value(),
            contract.OUTPUT: output,
        }
        if self.add_mask_check.isChecked():
            parameters[contract.MASK_OUTPUT] = mask_output
        created = [p for p in (output, parameters.get(contract.MASK_OUTPUT)) if p and not os.path.exists(p)]
        if temp_folder:
            created.append(temp_folder)  # removed, when empty, after a failed or cancelled run
        return parameters, created

    def run(self) -> RestoreRun | None:
        """Start the restoration in QGIS's task manager; returns the run (None when checks block it)."""
        if self._run is not None or self._algorithm is None:
            return None
        if any(p.blocking for p in self.revalidate()):
            return None
        optical = self.optical_combo.currentLayer()
        parameters, created = self.build_parameters()
        os.makedirs(os.path.dirname(parameters[contract.OUTPUT]) or ".", exist_ok=True)
        self._run_inputs = {"optical_id": optical.id(), "optical_name": optical.name()}
        self._run = RestoreRun(self._algorithm, parameters, self._project, created)
        self._run.progress.connect(self._show_progress)
        self._run.logged.connect(self._log)
        self._run.finished.connect(self._on_finished)
        self.log_view.clear()
        self.progress_bar.setValue(0)
        self._set_status(self.tr("Running…"), "")
        self._log(
            "info",
            self.tr("Restoring '{name}' → {output}").format(
                name=optical.name(), output=parameters[contract.OUTPUT]
            ),
        )
        self._update_buttons()
        self._ticker.start()
        self._run.start()
        self._cancel_on_destroy = self._run.cancel  # the run outlives a deleted dock: stop it then
        self.destroyed.connect(self._cancel_on_destroy)
        return self._run

    def cancel(self) -> None:
        """Stop the running restoration; its partial outputs are removed."""
        if self._run is not None:
            self._set_status(self.tr("Cancelling…"), "")
            self._run.cancel()

    def is_running(self) -> bool:
        """True while a restoration runs."""
        return self._run is not None

    def _on_finished(self, outcome: RunOutcome) -> None:
        self._ticker.stop()
        run, self._run = self._run, None
        if run is not None:
            self.destroyed.disconnect(self._cancel_on_destroy)
            run.deleteLater()
        self.elapsed_label.setText(_format_seconds(outcome.elapsed_s))
        if outcome.state == SUCCEEDED:
            self._add_results(outcome.results)
        elif outcome.state == CANCELLED:
            self.progress_bar.setValue(0)
            self._set_status(self.tr("Cancelled: nothing was added and no output was kept."), _WARNING_STYLE)
            self._log("warning", self.tr("Cancelled by the user."))
        elif outcome.state == FAILED:
            self._set_status(self.tr("Failed: ") + outcome.error, _BLOCKING_STYLE)
        self._update_buttons()

    def _add_results(self, outputs: dict[str, Any]) -> None:
        name = results.restored_layer_name(self._run_inputs.get("optical_name", "optical"))
        restored = QgsRasterLayer(str(outputs.get(contract.OUTPUT, "")), name)
        if not restored.isValid():
            self._set_status(
                self.tr("Failed: the restored file {path} cannot be read.").format(
                    path=outputs.get(contract.OUTPUT)
                ),
                _BLOCKING_STYLE,
            )
            return
        anchor = self._run_inputs.get("optical_id")
        mask_path = outputs.get(contract.MASK_OUTPUT)
        if mask_path and self.add_mask_check.isChecked():
            mask = QgsRasterLayer(
                str(mask_path),
                self.tr("{name} (cloud mask)").format(name=self._run_inputs.get("optical_name")),
            )
            if mask.isValid():
                results.style_mask(mask)
                results.add_above(self._project, mask, anchor)
        results.style_true_colour(restored)
        results.add_above(self._project, restored, anchor)
        self.compare_panel.set_layer(restored)
        self.progress_bar.setValue(100)
        self._set_status(self.tr("Done: added '{name}'.").format(name=name), "")
        self._log("info", self.tr("Added '{name}' from {path}").format(name=name, path=restored.source()))

    # ---- display --------------------------------------------------------------------------------

    def _log(self, level: str, text: str) -> None:
        prefix = {"warning": "⚠ ", "error": "✖ "}.get(level, "")
        self.log_view.appendPlainText(prefix + text)

    def _set_status(self, text: str, style: str) -> None:
        self.status_label.setText(text)
        self.status_label.setStyleSheet(style)

    def _show_progress(self, percent: float) -> None:
        self.progress_bar.setValue(round(percent))

    def _show_elapsed(self) -> None:
        if self._run is not None:
            self.elapsed_label.setText(_format_seconds(self._run.elapsed_s()))

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        """Remember the choices when the dock is closed."""
        self._save_choices()
        super().closeEvent(event)


def _safe_name(name: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._")
    return keep or "restored"


def _format_seconds(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:d}:{secs:02d}"
