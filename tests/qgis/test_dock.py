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
from qgis.PyQt.QtCore import QEvent

pytestmark = pytest.mark.qgis

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 120.0


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

    assert dock.form.sar_combo.count() == 3
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


# ---- defaults and settings -------------------------------------------------------------------------


def test_defaults_come_from_the_algorithm(make_dock, provider):
    dock = make_dock()
    algorithm = QgsApplication.processingRegistry().algorithmById("mmcanet:remove_clouds")
    for spin, name in (
        (dock.form.tile_spin, "TILE_SIZE"),
        (dock.form.overlap_spin, "OVERLAP"),
        (dock.form.batch_spin, "BATCH_SIZE"),
    ):
        assert spin.value() == int(algorithm.parameterDefinition(name).defaultValue())
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
    [restored] = QgsProject.instance().mapLayersByName("cloudy (cloud-free)")
    order = [node.layer() for node in QgsProject.instance().layerTreeRoot().findLayers()]
    assert order.index(restored) == order.index(optical) - 1  # directly above the optical layer
    renderer = restored.renderer()
    assert isinstance(renderer, QgsMultiBandColorRenderer)
    assert (renderer.redBand(), renderer.greenBand(), renderer.blueBand()) == (4, 3, 2)
    assert renderer.redContrastEnhancement().maximumValue() > renderer.redContrastEnhancement().minimumValue()
    assert dock.progress_bar.value() == 100 and dock.elapsed_label.text()
    assert dock.log_view.toPlainText()

    node = QgsProject.instance().layerTreeRoot().findLayer(restored.id())
    dock.compare_panel.toggle.click()  # before
    assert not node.itemVisibilityChecked()
    dock.compare_panel.toggle.click()  # after
    assert node.itemVisibilityChecked()


def test_cloud_mask_output_is_added_when_asked(make_dock, provider, rasters, tiny_model):
    dock, _ = ready_dock(make_dock, rasters, tiny_model)
    dock.form.add_mask_check.setChecked(True)
    dock.run_button.click()
    wait_until(lambda: not dock.is_running())
    assert QgsProject.instance().mapLayersByName("cloudy (cloud mask)"), dock.log_view.toPlainText()


@pytest.fixture
def slow_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every model call takes 50 ms longer, so a run is reliably still going when Cancel is pressed."""
    progressive = pytest.importorskip("mmcanet.models.progressive")
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
    assert set(QgsProject.instance().mapLayers()) == layers_before
    assert not os.path.exists(parameters_output)
    assert not os.path.exists(os.path.dirname(parameters_output))
    assert dock.run_button.isEnabled()


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
    assert not QgsProject.instance().mapLayersByName("cloudy (cloud-free)")


def test_failure_is_reported_in_plain_words(make_dock, provider, rasters, tiny_model, tmp_path):
    dock, _ = ready_dock(make_dock, rasters, tiny_model)
    os.remove(rasters["s1"])  # passes the pre-run checks (layer already loaded), fails in the engine
    dock.run_button.click()
    wait_until(lambda: not dock.is_running())

    text = dock.status_label.text()
    assert text.startswith("Failed: ") and "Traceback" not in text
    assert "scene_s1.tif" in text
    assert not QgsProject.instance().mapLayersByName("cloudy (cloud-free)")


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


def test_outputs_go_to_a_new_temporary_folder_unless_chosen(tmp_path):
    from mmcanet_qgis.dock.run import plan_outputs

    output, mask, created = plan_outputs("S2 cloudy: 2019/07", "", True, str(tmp_path))
    folder = os.path.dirname(output)
    assert os.path.dirname(folder) == str(tmp_path) and not os.path.exists(folder)
    assert os.path.basename(output) == "S2_cloudy__2019_07_cloud_free.tif"
    assert mask == output[: -len(".tif")] + "_cloudmask.tif"
    assert created == [output, mask, folder]

    chosen = tmp_path / "restored.tif"
    chosen.write_bytes(b"old")  # existed before: never removed by a failed run
    output, mask, created = plan_outputs("x", str(chosen), False, str(tmp_path))
    assert (output, mask, created) == (str(chosen), None, [])


def test_plain_error_keeps_the_message_not_the_traceback():
    from mmcanet_qgis.dock.run import plain_error

    traceback_text = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: bad tile size'
    assert plain_error(["first", traceback_text]) == "ValueError: bad tile size"
    assert plain_error(["SAR image 's1.tif': file not found"]) == "SAR image 's1.tif': file not found"
    assert "see the log" in plain_error([])
