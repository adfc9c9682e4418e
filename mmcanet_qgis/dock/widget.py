"""The cloud-removal dock: gather choices, check them cheaply, run mmcanet:remove_clouds in the background.

No model or tensor code here: the fields live in `form.py`, the checks in `checks.py`; the dock builds the
algorithm's parameters and hands them to a QgsProcessingAlgRunnerTask (`run.py`); the outcome is added to
the project by `results.py`.
"""

from __future__ import annotations

import os
from typing import Any

from qgis.core import QgsCoordinateReferenceSystem, QgsProject, QgsRasterLayer, QgsRectangle
from qgis.gui import QgsDockWidget
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from . import checks, contract, modelcard, preselect, results, settings
from .compare import ComparePanel
from .contract import AlgorithmSpec
from .form import BLOCKING_STYLE, MAP_EXTENT, SELECTED_POLYGONS, ChoicesForm
from .run import CANCELLED, FAILED, SUCCEEDED, RestoreRun, RunOutcome, default_output, plan_outputs

MINIMUM_WIDTH = 260
"""The dock's narrowest width in px: every field stays readable down to it (QGIS 3.22 opens a new dock
~300 px wide in its default 1280 px window; tests/qgis/test_dock.py checks both widths)."""


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
        self._run_warnings = 0  # warnings logged by the current / last run (named in the status line)
        self._cancel_on_destroy: Any = None
        self._run_inputs: dict[str, str] = {}
        self._card: Any = None  # mmcanet.modelfile.ModelCard of the chosen model, when readable
        self._finished_inputs: tuple[Any, ...] | None = None  # what the last finished run was given
        self.problems: list[checks.Problem] = []

        self.form = ChoicesForm(self._spec)
        if self._spec is not None:
            self.form.apply(settings.load(self._spec))
        self._build_run_panel()
        self._ticker = QTimer(self)
        self._ticker.setInterval(500)
        self._ticker.timeout.connect(self._show_elapsed)

        self.form.inputs_changed.connect(self.revalidate)
        self.form.options_changed.connect(self._save_choices)
        self._project.layersAdded.connect(self._on_layers_added)
        self._project.layersRemoved.connect(self.revalidate)
        self._project.readProject.connect(self._on_project_read)
        canvas = iface.mapCanvas() if iface is not None else None
        if canvas is not None:  # the map extent is an input when "Current map extent" is chosen
            canvas.extentsChanged.connect(self._on_map_moved)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self._on_project_read()

    def _build_run_panel(self) -> None:
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
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.form, 1)
        layout.addLayout(buttons)
        layout.addLayout(progress)
        layout.addWidget(self.status_label)
        layout.addWidget(self.log_view)
        layout.addWidget(self.compare_panel)
        self.setWidget(host)
        self.setMinimumWidth(MINIMUM_WIDTH)
        if self._spec is None:
            self._set_status(
                self.tr(
                    "The Processing algorithm {id} is not available: "
                    "enable the MMCANet plugin (its Processing provider) and reopen this panel."
                ).format(id=contract.ALGORITHM_ID),
                BLOCKING_STYLE,
            )

    # ---- checks ---------------------------------------------------------------------------------

    def revalidate(self) -> list[checks.Problem]:
        """Run the cheap checks, show each problem next to its field, enable Run only when none blocks."""
        form = self.form
        problems = checks.check_layers(
            form.sar_combo.currentLayer(),
            form.optical_combo.currentLayer(),
            form.mask_combo.currentLayer(),
            self._project.transformContext(),
        )
        if form.area() == SELECTED_POLYGONS:
            problems += checks.selected_polygons_extent(form.polygon_layer(), form.optical_combo.currentLayer(),
                                                        self._project.transformContext())[1]
        else:
            problems += checks.check_area(*self.area_of_interest(), form.optical_combo.currentLayer(),
                                          self._project.transformContext())
        problems += self._check_model()
        if self._spec is not None:
            problems += checks.check_tiling(*self.effective_tiling(), form.batch_spin.value())
        problems += checks.check_output(form.output_widget.filePath())
        self.problems = problems
        form.show_problems(problems)
        self._show_output_hint()
        self._reset_status_if_inputs_changed()
        self._update_buttons()
        return problems

    def default_output(self) -> str:
        """The file a run writes when no output is chosen ("" without an optical layer)."""
        optical = self.form.optical_combo.currentLayer()
        if optical is None:
            return ""
        return default_output(optical.source(), optical.name(), self.form.output_folder())

    def _show_output_hint(self) -> None:
        chosen = self.form.output_widget.filePath()
        automatic = "" if chosen else self.default_output()
        if automatic:
            text = self.tr("Writes {name} in {folder}").format(
                name=_breakable(os.path.basename(automatic)), folder=_breakable(os.path.dirname(automatic))
            )
        else:
            text = ""
        self.form.output_hint.setText(text)
        self.form.output_hint.setToolTip(automatic)
        self.form.output_hint.setVisible(bool(text))

    def _inputs(self) -> tuple[Any, ...]:
        """What a run would be given, to notice when the user changes something after a run."""
        form = self.form
        layers = (form.sar_combo.currentLayer(), form.optical_combo.currentLayer(), form.mask_combo.currentLayer())
        return (
            *(layer.id() if layer is not None else "" for layer in layers),
            form.model_path(),
            form.output_widget.filePath(),
            form.tile_spin.value(),
            form.overlap_spin.value(),
            form.batch_spin.value(),
            form.area(),
        )

    def _reset_status_if_inputs_changed(self) -> None:
        """A finished run's status (done, cancelled, failed) no longer applies once an input changes."""
        if self._run is None and self._finished_inputs is not None and self._inputs() != self._finished_inputs:
            self._finished_inputs = None
            self.progress_bar.setValue(0)
            self.elapsed_label.setText("")
            self._set_status("", "")

    def effective_tiling(self) -> tuple[int | None, int | None]:
        """Tile size and overlap the run will use: the fields, or the model card's where they say
        "model default" (None when that card cannot be read)."""
        values: list[int | None] = []
        for spin, key in ((self.form.tile_spin, "tile_size"), (self.form.overlap_spin, "overlap")):
            value: int | None = spin.value()
            if self._spec is not None and getattr(self._spec, key).means_model_default(spin.value()):
                value = getattr(self._card, key, None)
            values.append(value)
        return values[0], values[1]

    def _check_model(self) -> list[checks.Problem]:
        """Read the chosen (or bundled) model's card: the summary line, or why the file is unusable."""
        path = self.form.model_path()
        self._card = None
        self.form.model_summary.setText("")
        if not path:
            return [checks.Problem(checks.MODEL, self.tr("No bundled model was found: choose a model file."))]
        if not os.path.isfile(path):
            message = self.tr("The model file {path} does not exist.").format(path=path)
            return [checks.Problem(checks.MODEL, message)]
        try:
            self._card = modelcard.read_model_card(path)
        except modelcard.CardError as exc:
            self.form.set_error_available(False, self.tr("Choose a readable model file first."))
            return [checks.Problem(checks.MODEL, str(exc))]
        bundled = not self.form.model_widget.filePath()
        summary = (self.tr("Bundled: ") if bundled else "") + self._card.summary()
        if modelcard.predicts_error(self._card):
            self.form.set_error_available(True)
            summary += self.tr("; predicts its own error")
        else:
            self.form.set_error_available(False, self.tr(
                "Model '{name}' has no trust layer (no fitted error predictor, no error head), so it cannot "
                "predict its own error: add one with scripts/fit_trust.py (docs/TRUST.md) or choose a model "
                "whose summary above says 'predicts its own error'."
            ).format(name=self._card.name))
        self.form.model_summary.setText(summary)
        return []

    def _update_buttons(self) -> None:
        running = self._run is not None
        blocked = any(p.blocking for p in self.problems) or self._spec is None
        self.run_button.setEnabled(not running and not blocked)
        self.cancel_button.setEnabled(running)

    def _raster_layers(self) -> list[QgsRasterLayer]:
        """The project's raster layers in layer-list order, top first; layers not in the list yet (the
        layer tree is filled after `layersAdded`) follow in the order they were added."""
        ordered = [n.layer() for n in self._project.layerTreeRoot().findLayers()]
        seen = {layer.id() for layer in ordered if layer is not None}
        ordered += [layer for lid, layer in self._project.mapLayers().items() if lid not in seen]
        return [layer for layer in ordered if isinstance(layer, QgsRasterLayer)]

    def _on_map_moved(self) -> None:
        if self.form.area() == MAP_EXTENT and self._run is None:
            self.revalidate()

    def _on_layers_added(self) -> None:
        self.form.preselect_layers(self._raster_layers(), self._project.transformContext())
        self.revalidate()

    def _on_project_read(self) -> None:
        """A project was opened (or the dock was built): its remembered pair first, then the rules."""
        self.form.preselect_layers(
            self._raster_layers(), self._project.transformContext(), preselect.remembered_pair(self._project)
        )
        self.revalidate()

    def _save_choices(self) -> None:
        if self._spec is not None:
            settings.save(self.form.choices())

    # ---- running --------------------------------------------------------------------------------

    def area_of_interest(self) -> tuple[QgsRectangle | None, QgsCoordinateReferenceSystem]:
        """The area to restore and its CRS: the map extent in the map's CRS ("Current map extent"), the box
        around the selected polygons in the optical layer's CRS ("Selected polygons"); (None, invalid CRS)
        for the whole layer, or when the selection gives no area (then `revalidate` blocks the run)."""
        if self.form.area() == SELECTED_POLYGONS:
            optical = self.form.optical_combo.currentLayer()
            box, _ = checks.selected_polygons_extent(self.form.polygon_layer(), optical, self._project.transformContext())
            if box is None or optical is None:
                return None, QgsCoordinateReferenceSystem()
            return box, optical.crs()
        canvas = self._iface.mapCanvas() if self._iface is not None else None
        if self.form.area() != MAP_EXTENT or canvas is None:
            return None, QgsCoordinateReferenceSystem()
        return canvas.extent(), canvas.mapSettings().destinationCrs()

    def build_parameters(self) -> tuple[dict[str, Any], list[str]]:
        """The algorithm's parameters for the current choices, and the paths this run will create."""
        form = self.form
        sar, optical, mask = (c.currentLayer() for c in (form.sar_combo, form.optical_combo, form.mask_combo))
        assert sar is not None and optical is not None
        plan = plan_outputs(form.output_widget.filePath() or self.default_output(),
                            form.add_mask_check.isChecked(), form.wants_error_layer())
        parameters: dict[str, Any] = {
            contract.SAR: sar.source(),
            contract.OPTICAL: optical.source(),
            contract.CLOUD_MASK: mask.source() if mask is not None else None,
            contract.MODEL: form.model_path(),
            contract.STRATEGY: form.strategy_combo.currentIndex(),
            contract.DEVICE: form.device_combo.currentIndex(),
            contract.KEEP_CLEAR: form.keep_clear_check.isChecked(),
            contract.TILE_SIZE: self._spec_value("tile_size", form.tile_spin.value()),
            contract.OVERLAP: self._spec_value("overlap", form.overlap_spin.value()),
            contract.BATCH_SIZE: form.batch_spin.value(),
            contract.OUTPUT: plan.output,
        }
        if plan.mask_output:
            parameters[contract.MASK_OUTPUT] = plan.mask_output
        if plan.error_output:
            parameters[contract.UNCERTAINTY_OUTPUT] = plan.error_output
        extent, crs = self.area_of_interest()
        if extent is not None:
            # Processing's text form of an extent: "xmin,xmax,ymin,ymax [CRS]"; the core moves it onto the optical grid
            where = f" [{crs.authid()}]" if crs.isValid() and crs.authid() else ""
            parameters[contract.EXTENT] = (f"{extent.xMinimum()!r},{extent.xMaximum()!r},"
                                           f"{extent.yMinimum()!r},{extent.yMaximum()!r}{where}")
        return parameters, plan.created

    def _spec_value(self, key: str, value: int) -> int | None:
        """A tiling spin box's value as the algorithm takes it (None: the model card's)."""
        return getattr(self._spec, key).parameter_value(value) if self._spec is not None else value

    def run(self) -> RestoreRun | None:
        """Start the restoration in QGIS's task manager; returns the run (None when checks block it)."""
        if self._run is not None or self._algorithm is None:
            return None
        if any(p.blocking for p in self.revalidate()):
            return None
        self._save_choices()
        optical = self.form.optical_combo.currentLayer()
        sar = self.form.sar_combo.currentLayer()
        preselect.remember_pair(self._project, sar, optical)
        self._finished_inputs = None
        parameters, created = self.build_parameters()
        os.makedirs(os.path.dirname(parameters[contract.OUTPUT]) or ".", exist_ok=True)
        area = ""
        if contract.EXTENT in parameters:
            area = self.tr("selected polygons") if self.form.area() == SELECTED_POLYGONS else self.tr("map extent")
        self._run_inputs = {"optical_id": optical.id(), "optical_name": optical.name(), "area": area}
        self._run = RestoreRun(self._algorithm, parameters, self._project, created)
        self._run.progress.connect(self._show_progress)
        self._run.logged.connect(self._log)
        self._run.finished.connect(self._on_finished)
        self.log_view.clear()
        self._run_warnings = 0
        self.progress_bar.setValue(0)
        self.elapsed_label.setText(_format_seconds(0))
        self._set_status(self.tr("Running…"), "")
        output = parameters[contract.OUTPUT]
        self._log("info", self.tr("Restoring '{name}' → {output}").format(name=optical.name(), output=output))
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
        self._finished_inputs = self._inputs()
        if outcome.state == SUCCEEDED:
            self._add_results(outcome.results)
        elif outcome.state == CANCELLED:
            self.progress_bar.setValue(0)
            self._set_status(self.tr("Cancelled: nothing was added and no output was kept."), "")
            self._log("cancelled", self.tr("Cancelled by the user."))
        elif outcome.state == FAILED:
            self._set_status(self.tr("Failed: ") + outcome.error, BLOCKING_STYLE)
        self._update_buttons()

    def _add_results(self, outputs: dict[str, Any]) -> None:
        optical_name = self._run_inputs.get("optical_name", "optical")
        area = self._run_inputs.get("area", "")
        name = results.restored_layer_name(optical_name, area)
        restored = QgsRasterLayer(str(outputs.get(contract.OUTPUT, "")), name)
        if not restored.isValid():
            message = self.tr("Failed: the restored file {path} cannot be read.")
            self._set_status(message.format(path=outputs.get(contract.OUTPUT)), BLOCKING_STYLE)
            return
        anchor = self._run_inputs.get("optical_id")
        original = self._project.mapLayer(anchor) if anchor else None
        mask_path = outputs.get(contract.MASK_OUTPUT)
        if mask_path:
            mask = QgsRasterLayer(str(mask_path), results.mask_layer_name(optical_name, area))
            if mask.isValid():
                results.mark_output(mask, "mask")
                results.style_mask(mask)
                results.add_above(self._project, mask, anchor)
        results.mark_output(restored, "restored")
        same_style = results.style_pair(restored, original if isinstance(original, QgsRasterLayer) else None)
        results.add_above(self._project, restored, anchor)
        error_path = outputs.get(contract.UNCERTAINTY_OUTPUT)
        if error_path:
            error = QgsRasterLayer(str(error_path), results.error_layer_name(optical_name, area))
            if error.isValid():
                results.mark_output(error, "predicted_error")
                results.style_error(error)
                results.add_above(self._project, error, restored.id())
                self._log("info", self.tr("Added '{name}': the error the model expects per pixel, in reflectance; "
                                          "hide it to see the restored image.").format(name=error.name()))
        self.compare_panel.set_layer(restored, original if isinstance(original, QgsRasterLayer) else None)
        self.progress_bar.setValue(100)
        done = self.tr("Done: added '{name}'.").format(name=name)
        cloud = outputs.get(contract.CLOUD_FRACTION)
        if isinstance(cloud, float) and cloud > 0:
            done += " " + self.tr("{share:.0%} of it was under cloud or shadow and is filled.").format(share=cloud)
        warned = self._run_warnings
        if warned:  # the run's warnings (most of the image a fill, SAR missing, ...) are in the log below
            done += " " + (self.tr("1 warning below.") if warned == 1 else self.tr("{n} warnings below.").format(n=warned))
        self._set_status(done, "")
        self._log("info", self.tr("Added '{name}' from {path}").format(name=name, path=restored.source()))
        if same_style:
            self._log("info", self.tr("'{name}' is drawn with the same bands and stretch (style '{style}'); "
                                      "its previous style is kept in Layer Properties > Styles.").format(
                name=optical_name, style=results.COMPARE_STYLE))

    # ---- display --------------------------------------------------------------------------------

    def _log(self, level: str, text: str) -> None:
        prefix = {"warning": "⚠ ", "error": "✖ "}.get(level, "")  # "cancelled": no mark, not an error
        if level == "warning":
            self._run_warnings += 1
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
        """Remember the choices when the panel is closed (a hidden group box reports no collapsing)."""
        self._save_choices()
        super().closeEvent(event)


def _breakable(path: str) -> str:
    """`path` with a zero-width space after each separator and underscore, so a narrow dock can wrap it."""
    for sep in {os.sep, "/", "_"}:
        path = path.replace(sep, sep + "\u200b")
    return path


def _format_seconds(seconds: float) -> str:
    """'4.2 s' under a minute, then 'm:ss'."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:d}:{secs:02d}"
