"""The cloud-removal dock driven like a user would: pickers, pre-run checks, Run, Cancel, settings.

Runs in a real QGIS (pytest-qgis, QT_QPA_PLATFORM=offscreen) on small generated GeoTIFFs with a real CRS
(tests/rasters.py); restorations use the tiny random model and the provider of tests/qgis/conftest.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import (
    QgsApplication,
    QgsMultiBandColorRenderer,
    QgsProject,
    QgsRasterLayer,
    QgsSettings,
    QgsTask,
)
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QEvent, Qt
from qgis.PyQt.QtWidgets import QMainWindow, QWidget

pytestmark = pytest.mark.qgis

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 120.0
RESTORED = "cloudy – clouds removed (MMCANet)"


# ---- small rasters (tests/rasters.py) -----------------------------------------------------------


@pytest.fixture
def rasters(tmp_path: Path) -> dict[str, Path]:
    """S1 / S2 on one 64x64 UTM grid, plus a 3-band image, a far-away S1 and the S1 warped to EPSG:4326."""
    import rasters as gen

    far = gen.default_geotransform(origin=(gen.ORIGIN[0] + 100_000, gen.ORIGIN[1]))
    paths = {
        "s1": gen.write_s1(tmp_path / "scene_s1.tif", 64, 64),
        "s2": gen.write_s2(tmp_path / "scene_s2.tif", 64, 64),
        "rgb": gen.write_raster(
            tmp_path / "rgb.tif", gen.s2_array(64, 64)[:3], geotransform=gen.default_geotransform()
        ),
        "s1_far": gen.write_s1(tmp_path / "far_s1.tif", 64, 64, geotransform=far),
        "s1_wgs84": tmp_path / "scene_s1_wgs84.tif",
    }
    gdal.Warp(str(paths["s1_wgs84"]), str(paths["s1"]), dstSRS="EPSG:4326")
    return paths


def add_layers(*items: tuple[Path, str]) -> list[QgsRasterLayer]:
    """Load (path, name) rasters into the current project, in order."""
    layers = [QgsRasterLayer(str(path), name) for path, name in items]
    assert all(layer.isValid() for layer in layers)
    QgsProject.instance().addMapLayers(layers)
    return layers


# ---- QGIS pieces -----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    """Every test starts from the algorithm's defaults, not from a previous test's choices."""
    from mmcanet_qgis.dock import settings

    settings.clear()
    yield
    settings.clear()


@pytest.fixture
def make_dock(qgis_iface: object, qgis_new_project: None) -> Iterator[Callable[[], object]]:
    """Build docks for the test's project; waits for and closes them afterwards."""
    docks = []

    def make() -> object:
        from mmcanet_qgis.dock import create_dock

        dock = create_dock(qgis_iface)
        docks.append(dock)
        return dock

    yield make
    for dock in docks:
        if sip.isdeleted(dock):
            continue
        if dock.is_running():
            dock.cancel()
            wait_until(lambda d=dock: not d.is_running())
        dock.deleteLater()
    QgsApplication.processEvents()


def wait_until(condition: Callable[[], bool], timeout: float = TIMEOUT_S) -> None:
    """Process Qt events until `condition()` holds (the task manager reports back through them)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s")
        QgsApplication.processEvents()
        time.sleep(0.005)


def problems_for(dock: object, field: str) -> list[str]:
    return [p.message for p in dock.problems if p.field == field]


# ---- pickers and checks ----------------------------------------------------------------------------


def test_pickers_list_rasters_and_preselect_by_band_count(make_dock, rasters):
    rgb, s2, s1 = add_layers((rasters["rgb"], "rgb"), (rasters["s2"], "cloudy"), (rasters["s1"], "radar"))
    dock = make_dock()

    assert dock.form.sar_combo.count() == 4  # the three rasters and the empty entry
    assert dock.form.sar_combo.currentLayer() is s1
    assert dock.form.optical_combo.currentLayer() is s2
    assert dock.form.mask_combo.currentLayer() is None  # optional, empty by default
    layer_fields = {"sar", "optical", "mask"}
    assert not [p for p in dock.problems if p.field in layer_fields]


def test_layers_added_after_opening_are_preselected(make_dock, rasters):
    dock = make_dock()
    assert problems_for(dock, "sar") == ["Choose a raster layer."]
    s2, s1 = add_layers((rasters["s2"], "cloudy"), (rasters["s1"], "radar"))
    assert dock.form.sar_combo.currentLayer() is s1
    assert dock.form.optical_combo.currentLayer() is s2
    assert not problems_for(dock, "sar") and not problems_for(dock, "optical")


def test_three_band_optical_is_flagged_next_to_the_field(make_dock, rasters):
    rgb, _, _ = add_layers((rasters["rgb"], "rgb"), (rasters["s2"], "cloudy"), (rasters["s1"], "radar"))
    dock = make_dock()
    dock.form.optical_combo.setLayer(rgb)

    [message] = problems_for(dock, "optical")
    assert "'rgb' has 3 bands" in message
    assert "3 bands" in dock.form.problem_text("optical")
    assert not dock.run_button.isEnabled()


def test_same_layer_twice_is_flagged(make_dock, rasters):
    (s2,) = add_layers((rasters["s2"], "cloudy"))
    dock = make_dock()
    dock.form.sar_combo.setLayer(s2)
    dock.form.optical_combo.setLayer(s2)
    dock.form.mask_combo.setLayer(s2)

    assert "The same layer is chosen as SAR and optical input." in problems_for(dock, "optical")
    assert any("same layer as the SAR input" in m for m in problems_for(dock, "mask"))
    assert not dock.run_button.isEnabled()


def test_extents_are_compared_in_a_common_crs(make_dock, rasters):
    s2, far, wgs84 = add_layers(
        (rasters["s2"], "cloudy"), (rasters["s1_far"], "far radar"), (rasters["s1_wgs84"], "radar 4326")
    )
    dock = make_dock()
    dock.form.optical_combo.setLayer(s2)

    dock.form.sar_combo.setLayer(far)
    [message] = problems_for(dock, "sar")
    assert "does not overlap the optical layer 'cloudy'" in message
    assert not dock.run_button.isEnabled()

    dock.form.sar_combo.setLayer(wgs84)  # same area in another CRS: reprojected, it overlaps
    assert not problems_for(dock, "sar")


def test_overlap_beyond_half_a_tile_is_flagged(make_dock, provider, rasters):
    """The dock applies the engine's rule (overlap <= tile / 2), not merely overlap < tile."""
    add_layers((rasters["s2"], "cloudy"), (rasters["s1"], "radar"))
    dock = make_dock()
    dock.form.tile_spin.setValue(64)
    dock.form.overlap_spin.setValue(33)  # < tile, but the engine refuses it: the dock must not start the run
    assert any("half the tile size (32 px)" in m for m in problems_for(dock, "advanced"))
    assert not dock.run_button.isEnabled()
    dock.form.overlap_spin.setValue(64)
    assert any("half the tile size" in m for m in problems_for(dock, "advanced"))
    dock.form.overlap_spin.setValue(32)
    assert not problems_for(dock, "advanced")
    assert dock.run_button.isEnabled()


def test_unreadable_model_file_is_flagged(make_dock, rasters, tmp_path):
    add_layers((rasters["s2"], "cloudy"), (rasters["s1"], "radar"))
    bogus = tmp_path / "not_a_model.safetensors"
    bogus.write_bytes(b"hello")
    dock = make_dock()
    dock.form.model_widget.setFilePath(str(bogus))
    [message] = problems_for(dock, "model")
    assert "not_a_model.safetensors" in message
    assert not dock.run_button.isEnabled()


# ---- preselection ----------------------------------------------------------------------------------


def write_output_like(path: Path, tags: dict[str, str]) -> Path:
    """A 13-band raster carrying the metadata tags the core writes into its results."""
    import rasters as gen

    gen.write_raster(path, gen.s2_array(64, 64), geotransform=gen.default_geotransform())
    ds = gdal.Open(str(path), gdal.GA_Update)
    ds.SetMetadata(tags)
    ds = None
    return path


def test_preselection_never_picks_the_plugins_outputs(make_dock, rasters, tmp_path):
    restored = write_output_like(tmp_path / "old_cloudfree.tif", {"MMCANET_MODEL": "mmcanet-default"})
    dock = make_dock()
    out, s1 = add_layers((restored, "old result"), (rasters["s1"], "radar"))
    assert dock.form.optical_combo.currentLayer() is not out  # the only 13-band layer, still not taken
    (s2,) = add_layers((rasters["s2"], "cloudy"))
    assert dock.form.optical_combo.currentLayer() is s2 and dock.form.sar_combo.currentLayer() is s1

    # a result the dock itself added (marked), on top of the list, is skipped by a new dock as well
    (copy,) = add_layers((rasters["s2"], "copy"))
    copy.setCustomProperty("mmcanet/output", "restored")
    again = make_dock()
    assert again.form.optical_combo.currentLayer() is s2


def test_preselection_prefers_a_pair_that_overlaps(make_dock, rasters):
    # listed first: a radar 100 km away, then the same area in another CRS, then the optical image
    far, wgs84, s2 = add_layers(
        (rasters["s1_far"], "far radar"), (rasters["s1_wgs84"], "radar 4326"), (rasters["s2"], "cloudy")
    )
    dock = make_dock()
    assert dock.form.optical_combo.currentLayer() is s2
    assert dock.form.sar_combo.currentLayer() is wgs84  # extents compared after reprojection
    assert not problems_for(dock, "sar")


def test_pair_is_remembered_in_the_project(make_dock, provider, rasters, tiny_model, tmp_path):
    s1, wgs84, s2 = add_layers(
        (rasters["s1"], "radar"), (rasters["s1_wgs84"], "radar 4326"), (rasters["s2"], "cloudy")
    )
    dock = make_dock()
    assert dock.form.sar_combo.currentLayer() is s1  # both cover the image: the one higher in the list
    dock.form.sar_combo.setLayer(wgs84)  # the user's choice
    dock.form.model_widget.setFilePath(str(tiny_model))
    dock.form.device_combo.setCurrentText("cpu")
    dock.form.output_widget.setFilePath(str(tmp_path / "out.tif"))
    dock.run()
    wait_until(lambda: not dock.is_running())
    project_file = tmp_path / "analysis.qgz"
    assert QgsProject.instance().write(str(project_file))

    QgsProject.instance().clear()
    assert QgsProject.instance().read(str(project_file))
    again = make_dock()
    assert again.form.sar_combo.currentLayer().name() == "radar 4326"
    assert again.form.optical_combo.currentLayer().name() == "cloudy"


# ---- layout ----------------------------------------------------------------------------------------

NEW_DOCK_WIDTH = 298
"""Width QGIS 3.22 gives this dock when it first opens (measured: real QGIS under Xvfb, fresh profile,
default 1280 px main window, dock added to the right area)."""


def clipped_widgets(dock: object) -> list[str]:
    """Visible widgets of the dock that are cut off horizontally, or squeezed below their minimum."""
    from qgis.PyQt.QtCore import QRect
    from qgis.PyQt.QtWidgets import QAbstractScrollArea

    problems = []
    viewport = dock.form.viewport()
    host = dock.widget()
    for widget in host.findChildren(QWidget):
        if not widget.isVisible() or widget.width() == 0:
            continue
        inside_form = dock.form.widget().isAncestorOf(widget)
        frame = viewport if inside_form else host
        rect = QRect(widget.mapTo(frame, widget.rect().topLeft()), widget.size())
        name = f"{type(widget).__name__} {widget.objectName() or getattr(widget, 'text', lambda: '')()!r}"
        if rect.left() < 0 or rect.right() > frame.width() - 1:
            problems.append(f"{name}: x {rect.left()}..{rect.right()} outside 0..{frame.width() - 1}")
        hint = widget.minimumSizeHint().width()
        if not isinstance(widget, QAbstractScrollArea) and hint > 0 and widget.width() < hint:
            problems.append(f"{name}: {widget.width()} px wide, needs {hint}")
    return problems


def widest_fields(host: object, n: int = 3) -> list[str]:
    """The `n` visible widgets with the largest minimum width, to say what is too wide."""
    from qgis.PyQt.QtWidgets import QWidget

    found = [(w.minimumSizeHint().width(), type(w).__name__) for w in host.findChildren(QWidget) if w.isVisible()]
    return [f"{name} {width} px" for width, name in sorted(found, reverse=True)[:n]]


@pytest.mark.parametrize("width", [NEW_DOCK_WIDTH, "minimum"])
def test_nothing_is_clipped_at_the_width_of_a_new_dock(make_dock, provider, rasters, width):
    from mmcanet_qgis.dock.widget import MINIMUM_WIDTH

    add_layers(
        (rasters["s1"], "S1A_IW_GRDH_1SDV_20190712T055231 (VV, VH) with a long name"),
        (rasters["s2"], "S2B_MSIL1C_20190712T103029_N0208_R108_T31UDQ cloudy"),
    )
    dock = make_dock()
    dock.form.advanced_box.setCollapsed(False)
    dock.form.add_mask_check.setChecked(True)
    pixels = MINIMUM_WIDTH if width == "minimum" else width
    window = QMainWindow()  # like QGIS's: a map in the middle, the dock in the right area
    window.setCentralWidget(QWidget())
    window.resize(1280, 900)
    window.addDockWidget(Qt.RightDockWidgetArea, dock)
    window.show()
    window.resizeDocks([dock], [pixels], Qt.Horizontal)
    QgsApplication.processEvents()

    assert dock.width() == pixels, "the dock refuses this width: its minimum is too large"
    assert dock.minimumWidth() == MINIMUM_WIDTH and dock.minimumSizeHint().width() <= MINIMUM_WIDTH
    host = dock.form.widget()
    assert not dock.form.horizontalScrollBar().isVisible(), (
        f"fields need {host.minimumSizeHint().width()} px, the dock has {dock.form.viewport().width()}: "
        + ", ".join(widest_fields(host))
    )
    assert clipped_widgets(dock) == []
    for widget in (dock.form.sar_combo, dock.form.model_widget, dock.form.output_widget, dock.run_button,
                   dock.cancel_button, dock.compare_panel.toggle, dock.form.keep_clear_check):
        assert widget.isVisible() and widget.width() >= widget.minimumSizeHint().width()
    window.removeDockWidget(dock)
    window.close()


# ---- defaults and settings -------------------------------------------------------------------------


def test_defaults_come_from_the_algorithm(make_dock, provider):
    dock = make_dock()
    algorithm = QgsApplication.processingRegistry().algorithmById("mmcanet:remove_clouds")
    assert dock.form.batch_spin.value() == int(algorithm.parameterDefinition("BATCH_SIZE").defaultValue())
    for spin, name in ((dock.form.tile_spin, "TILE_SIZE"), (dock.form.overlap_spin, "OVERLAP")):
        assert algorithm.parameterDefinition(name).defaultValue() is None  # not set: the model card's
        assert spin.text() == "Model default" and spin.value() == algorithm.parameterDefinition(name).minimum() - 1
    parameters, _ = dock.build_parameters() if dock.form.optical_combo.currentLayer() else ({}, [])
    assert parameters.get("TILE_SIZE") is None and parameters.get("OVERLAP") is None
    assert dock.form.strategy_combo.count() == len(algorithm.parameterDefinition("STRATEGY").options())
    assert dock.form.strategy_combo.currentIndex() == int(
        algorithm.parameterDefinition("STRATEGY").defaultValue()
    )
    assert dock.form.keep_clear_check.isChecked() == bool(
        algorithm.parameterDefinition("KEEP_CLEAR").defaultValue()
    )
    assert dock.form.advanced_box.isCollapsed()


def test_choices_are_remembered_with_their_types(make_dock, provider, tiny_model):
    dock = make_dock()
    dock.form.model_widget.setFilePath(str(tiny_model))
    dock.form.strategy_combo.setCurrentIndex(2)
    dock.form.device_combo.setCurrentText("cpu")
    dock.form.keep_clear_check.setChecked(False)
    dock.form.tile_spin.setValue(48)
    dock.form.advanced_box.setCollapsed(False)
    dock.close()  # closing the panel stores everything, the group box's state too

    stored = QgsSettings()
    assert stored.value("mmcanet/dock/tile_size", 0, type=int) == 48
    assert stored.value("mmcanet/dock/keep_clear", True, type=bool) is False

    again = make_dock()
    assert again.form.model_widget.filePath() == str(tiny_model)
    assert again.form.strategy_combo.currentIndex() == 2
    assert again.form.device_combo.currentText() == "cpu"
    assert not again.form.keep_clear_check.isChecked()
    assert again.form.tile_spin.value() == 48
    assert not again.form.advanced_box.isCollapsed()
    assert "tiny-test" in again.form.model_summary.text()


# ---- running ---------------------------------------------------------------------------------------


def ready_dock(
    make_dock, rasters, tiny_model, tile: int = 32, overlap: int = 8
) -> tuple[object, QgsRasterLayer]:
    layers = add_layers((rasters["s1"], "radar"), (rasters["s2"], "cloudy"))
    dock = make_dock()
    dock.form.model_widget.setFilePath(str(tiny_model))
    dock.form.device_combo.setCurrentText("cpu")
    dock.form.tile_spin.setValue(tile)
    dock.form.overlap_spin.setValue(overlap)
    dock.form.batch_spin.setValue(1)
    assert not [p for p in dock.problems if p.blocking], dock.problems
    assert dock.run_button.isEnabled()
    return dock, layers[1]


def test_run_completes_in_the_background_and_adds_a_styled_layer(make_dock, provider, rasters, tiny_model):
    dock, optical = ready_dock(make_dock, rasters, tiny_model)
    dock.run_button.click()
    assert dock.is_running() and dock.cancel_button.isEnabled() and not dock.run_button.isEnabled()
    wait_until(lambda: not dock.is_running())

    assert dock.status_label.text().startswith("Done"), dock.status_label.text() + dock.log_view.toPlainText()
    [restored] = QgsProject.instance().mapLayersByName(RESTORED)
    order = [node.layer() for node in QgsProject.instance().layerTreeRoot().findLayers()]
    assert order.index(restored) == order.index(optical) - 1  # directly above the optical layer
    renderer = restored.renderer()
    assert isinstance(renderer, QgsMultiBandColorRenderer)
    assert (renderer.redBand(), renderer.greenBand(), renderer.blueBand()) == (4, 3, 2)
    assert renderer.redContrastEnhancement().maximumValue() > renderer.redContrastEnhancement().minimumValue()
    assert dock.progress_bar.value() == 100 and dock.elapsed_label.text()
    assert dock.log_view.toPlainText()

    # a true before/after: the cloudy layer is drawn with the same bands and the very same stretch
    before = optical.renderer()
    assert isinstance(before, QgsMultiBandColorRenderer)
    assert (before.redBand(), before.greenBand(), before.blueBand()) == (4, 3, 2)
    for get in ("redContrastEnhancement", "greenContrastEnhancement", "blueContrastEnhancement"):
        a, b = getattr(renderer, get)(), getattr(before, get)()
        assert (a.minimumValue(), a.maximumValue()) == (b.minimumValue(), b.maximumValue())
    styles = optical.styleManager().styles()
    assert "MMCANet before/after" in styles and len(styles) == 2  # the user's own style is kept
    assert restored.customProperty("mmcanet/output") == "restored"

    node = QgsProject.instance().layerTreeRoot().findLayer(restored.id())
    original = QgsProject.instance().layerTreeRoot().findLayer(optical.id())
    original.setItemVisibilityChecked(False)
    dock.compare_panel.toggle.click()  # before
    assert not node.itemVisibilityChecked() and original.itemVisibilityChecked()
    assert dock.compare_panel.state_label.text() == "showing: cloudy"
    dock.compare_panel.toggle.click()  # after
    assert node.itemVisibilityChecked()
    dock.compare_panel.opacity.setValue(40)
    assert restored.opacity() == pytest.approx(0.4)


def test_cloud_mask_output_is_added_when_asked(make_dock, provider, rasters, tiny_model):
    dock, _ = ready_dock(make_dock, rasters, tiny_model)
    dock.form.add_mask_check.setChecked(True)
    dock.run_button.click()
    wait_until(lambda: not dock.is_running())
    [mask] = QgsProject.instance().mapLayersByName("cloudy – cloud/shadow mask used (MMCANet)")
    assert mask.customProperty("mmcanet/output") == "mask"


@pytest.fixture
def slow_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every model call takes 50 ms longer, so a run is reliably still going when Cancel is pressed."""
    from mmcanet.models import progressive
    forward = progressive.CloudRemovalNet.forward

    def slow_forward(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        time.sleep(0.05)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(progressive.CloudRemovalNet, "forward", slow_forward)


def test_cancel_stops_the_task_and_leaves_nothing_behind(
    make_dock, provider, rasters, tiny_model, slow_model
):
    dock, _ = ready_dock(make_dock, rasters, tiny_model, tile=16, overlap=4)  # 25 tiles
    layers_before = set(QgsProject.instance().mapLayers())
    run = dock.run()
    task = run.task
    parameters_output = run.parameters["OUTPUT"]
    wait_until(lambda: dock.progress_bar.value() > 0)
    assert task.status() == QgsTask.Running
    dock.cancel_button.click()
    wait_until(lambda: not dock.is_running(), timeout=30)

    assert dock.status_label.text().startswith("Cancelled")
    assert "b00020" not in dock.status_label.styleSheet()  # not shown as an error
    assert "✖" not in dock.log_view.toPlainText(), dock.log_view.toPlainText()
    assert set(QgsProject.instance().mapLayers()) == layers_before
    assert not os.path.exists(parameters_output)
    assert os.path.isfile(rasters["s2"])  # the output went next to the input, which is untouched
    assert dock.run_button.isEnabled()

    dock.form.batch_spin.setValue(2)  # the user changes something: the old status no longer applies
    assert dock.status_label.text() == "" and dock.progress_bar.value() == 0


def test_a_mostly_clouded_run_says_so_in_the_status_and_the_log(make_dock, provider, rasters, tiny_model, tmp_path):
    import rasters as gen

    mask = np.zeros((64, 64), np.uint8)
    mask[:48] = 1  # 75 % of the scene under the given cloud mask
    mask_path = gen.write_raster(tmp_path / "mostly_cloud.tif", mask, geotransform=gen.default_geotransform())
    dock, _ = ready_dock(make_dock, rasters, tiny_model)
    [mask_layer] = add_layers((mask_path, "mask"))
    dock.form.mask_combo.setLayer(mask_layer)
    dock.run_button.click()
    wait_until(lambda: not dock.is_running())
    status, log = dock.status_label.text(), dock.log_view.toPlainText()
    assert status.startswith("Done") and "warning below" in status, status + log
    assert "75% of it was under cloud or shadow and is filled" in status, status
    assert "⚠ 75% of the valid pixels are under cloud or cloud shadow" in log, log


def test_deleting_the_dock_stops_its_run(make_dock, provider, rasters, tiny_model, slow_model):
    """Unloading the plugin deletes the dock: a run it started is cancelled and cleaned up, no crash."""
    from mmcanet_qgis.dock.run import active_runs

    dock, _ = ready_dock(make_dock, rasters, tiny_model, tile=16, overlap=4)
    run = dock.run()
    output = run.parameters["OUTPUT"]
    wait_until(lambda: dock.progress_bar.value() > 0)
    dock.deleteLater()
    QgsApplication.sendPostedEvents(dock, QEvent.DeferredDelete)  # what QGIS's event loop would do
    assert sip.isdeleted(dock)
    wait_until(lambda: active_runs() == 0, timeout=30)
    assert not os.path.exists(output)
    assert not QgsProject.instance().mapLayersByName(RESTORED)


def test_failure_is_reported_in_plain_words(make_dock, provider, rasters, tiny_model, tmp_path):
    dock, _ = ready_dock(make_dock, rasters, tiny_model)
    os.remove(rasters["s1"])  # passes the pre-run checks (layer already loaded), fails in the engine
    dock.run_button.click()
    wait_until(lambda: not dock.is_running())

    text = dock.status_label.text()
    assert text.startswith("Failed: ") and "Traceback" not in text
    assert "scene_s1.tif" in text
    assert not QgsProject.instance().mapLayersByName(RESTORED)


# ---- headless safety -------------------------------------------------------------------------------


def test_dock_imports_no_torch(tmp_path):
    """Building the dock (provider registered, model card read) must not import torch."""
    script = """
import sys
from qgis.core import QgsApplication
app = QgsApplication([], False)
app.initQgis()
from mmcanet_qgis.provider import MMCANetProvider
QgsApplication.processingRegistry().addProvider(MMCANetProvider())
from mmcanet_qgis.dock import create_dock
dock = create_dock(None)
print("torch" in sys.modules)
"""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(tmp_path))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "core"), env.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


# ---- small pure pieces -----------------------------------------------------------------------------


def test_default_output_is_a_named_file_next_to_the_optical_input(tmp_path):
    from mmcanet_qgis.dock.run import default_output, plan_outputs

    source = tmp_path / "S2B_20190712.tif"
    source.write_bytes(b"x")
    first = default_output(str(source), "cloudy", "")
    assert first == str(tmp_path / "S2B_20190712_cloudfree.tif")
    Path(first).write_bytes(b"earlier result")  # never overwritten: the next run gets a new name
    assert default_output(str(source), "cloudy", "") == str(tmp_path / "S2B_20190712_cloudfree_2.tif")

    remembered = tmp_path / "results"
    remembered.mkdir()
    assert default_output(str(source), "cloudy", str(remembered)) == str(remembered / "S2B_20190712_cloudfree.tif")
    gone = tmp_path / "deleted-since"
    assert default_output(str(source), "cloudy", str(gone)) == str(tmp_path / "S2B_20190712_cloudfree_2.tif")
    not_a_file = default_output("/vsicurl/https://x/y.tif", "S2 cloudy: 2019/07", "")
    assert not_a_file == os.path.join(os.path.expanduser("~"), "S2_cloudy__2019_07_cloudfree.tif")

    plan = plan_outputs(first, True, add_error=True)
    assert plan.mask_output == str(tmp_path / "S2B_20190712_cloudfree_cloudmask.tif")
    assert plan.error_output == str(tmp_path / "S2B_20190712_cloudfree_prederror.tif")
    assert plan.created == [plan.mask_output, plan.error_output]  # the existing file is not the run's to remove
    assert plan_outputs(first, False).created == [] and plan_outputs(first, False).error_output is None


def test_dock_output_defaults_and_remembered_folder(make_dock, provider, rasters, tmp_path):
    add_layers((rasters["s2"], "cloudy"), (rasters["s1"], "radar"))
    dock = make_dock()
    expected = str(rasters["s2"].parent / "scene_s2_cloudfree.tif")
    assert dock.default_output() == expected
    assert dock.form.output_hint.toolTip() == expected and not dock.form.output_hint.isHidden()
    assert "scene_s2_cloudfree.tif" in dock.form.output_hint.text().replace("\u200b", "")
    parameters, created = dock.build_parameters()
    assert parameters["OUTPUT"] == expected and created == [expected]
    assert "tmp" not in os.path.relpath(expected, rasters["s2"].parent)  # not QGIS's temporary folder

    chosen_folder = tmp_path / "my results"
    chosen_folder.mkdir()
    dock.form.output_widget.setFilePath(str(chosen_folder / "mine.tif"))
    assert dock.build_parameters()[0]["OUTPUT"] == str(chosen_folder / "mine.tif")
    assert dock.form.output_hint.isHidden()
    dock.close()  # remembers the folder

    again = make_dock()
    assert again.form.output_widget.filePath() == ""
    assert again.default_output() == str(chosen_folder / "scene_s2_cloudfree.tif")


def test_plain_error_keeps_the_message_not_the_traceback():
    from mmcanet_qgis.dock.run import plain_error

    traceback_text = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: bad tile size'
    assert plain_error(["first", traceback_text]) == "ValueError: bad tile size"
    assert plain_error(["SAR image 's1.tif': file not found"]) == "SAR image 's1.tif': file not found"
    assert "see the log" in plain_error([])
