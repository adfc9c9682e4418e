"""docs/screenshot.png: the real QGIS main window with the MMCANet dock and a restored real scene.

Runs INSIDE QGIS desktop (`qgis.bin --code scripts/screenshot.py`); use scripts/screenshot.sh, which sets
up Xvfb, a scratch profile and the Python path. Steps: load the georeferenced SEN12MS-CR scene
(ROIs1868_summer_19_p30, S1 + cloudy S2) from ../shared/data, load the plugin as QGIS would
(classFactory -> initGui), open the dock from its toolbar action, press Run, wait for the background task,
then size the window and grab it; then grab the map with the dock's "Before / after" toggle released
and pressed (docs/screenshot_compare.png, side by side), zoom into the middle of the scene, run again
with Area "Current map extent" and grab the whole scene with the restored window in it (the whole-scene
result hidden)
(docs/screenshot_area.png); quit. Exit status 0 on success, 1 with a message otherwise.

Environment: MMCANET_SCREENSHOT (output PNG, default docs/screenshot.png), MMCANET_SCREENSHOT_DATA
(scene folder), MMCANET_MODEL (model file; default the bundled one), MMCANET_SCREENSHOT_TIMEOUT (s).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from qgis.core import QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtWidgets import QDockWidget
from qgis.utils import iface

ROOT = Path(os.environ.get("MMCANET_ROOT", Path.cwd())).resolve()
SCENE = "ROIs1868_summer_19_p30"
DATA = Path(os.environ.get("MMCANET_SCREENSHOT_DATA", ROOT.parent / "shared" / "data" / "sen12mscr-georef"))
OUTPUT = Path(os.environ.get("MMCANET_SCREENSHOT", ROOT / "docs" / "screenshot.png"))
COMPARE_OUTPUT = OUTPUT.with_name(OUTPUT.stem + "_compare.png")  # the before/after toggle's two states
AREA_OUTPUT = OUTPUT.with_name(OUTPUT.stem + "_area.png")  # a "Current map extent" run
TIMEOUT_S = float(os.environ.get("MMCANET_SCREENSHOT_TIMEOUT", "480"))
WINDOW = (1600, 1000)
DOCK_WIDTH = 298  # the width QGIS 3.22 gives a newly opened dock (#16): the docs show what users see
LAYERS_WIDTH = 330

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class Screenshot:
    """A small state machine driven by QTimer, so QGIS's event loop keeps running between steps."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.scratch = tempfile.TemporaryDirectory()  # the area run's output (the docs show it, nobody keeps it)
        self.plugin = None
        self.dock = None

    def start(self) -> None:
        self._step(self.load_scene)

    def load_scene(self) -> None:
        from mmcanet_qgis.algorithms.styling import style_true_colour

        project = QgsProject.instance()
        s1 = QgsRasterLayer(str(DATA / f"{SCENE}_s1.tif"), f"{SCENE} S1 (VV, VH)")
        s2 = QgsRasterLayer(str(DATA / f"{SCENE}_s2_cloudy.tif"), f"{SCENE} S2 cloudy")
        for layer in (s1, s2):
            if not layer.isValid():
                raise RuntimeError(f"cannot load {layer.source()} (is ../shared/data there?)")
        style_true_colour(s2)
        project.addMapLayers([s2, s1])  # the cloudy optical image on top
        iface.mapCanvas().setDestinationCrs(s2.crs())
        iface.mapCanvas().setExtent(s2.extent())
        self._step(self.open_dock)

    def open_dock(self) -> None:
        import mmcanet_qgis

        self.plugin = mmcanet_qgis.classFactory(iface)
        self.plugin.initGui()
        self.plugin.action.trigger()  # the toolbar button / Raster menu entry
        self.dock = self.plugin.dock
        if self.dock is None:
            raise RuntimeError("the plugin's action did not open the dock")
        self.dock.form.device_combo.setCurrentText("cpu")
        # outputs go to a scratch folder: the default (next to the optical input) would write into ../shared/data
        self.dock.form.output_widget.setFilePath(str(Path(self.scratch.name) / f"{SCENE}_cloudfree.tif"))
        blocking = [p.message for p in self.dock.revalidate() if p.blocking]
        if blocking:
            raise RuntimeError("the dock refuses to run: " + "; ".join(blocking))
        self._step(self.run)

    def run(self) -> None:
        if self.dock.run() is None:
            raise RuntimeError("Run did not start")
        self._step(self.wait_for_run, 500)

    def wait_for_run(self) -> None:
        if not self._run_done(self.wait_for_run, "the restoration"):
            return
        window = iface.mainWindow()
        window.resize(*WINDOW)
        for panel in window.findChildren(QDockWidget):
            if panel.objectName() == "Browser":
                panel.hide()  # more room for the map
        layers_panel = next((p for p in window.findChildren(QDockWidget) if p.objectName() == "Layers"), None)
        docks, widths = [self.dock], [DOCK_WIDTH]
        if layers_panel is not None:
            docks.append(layers_panel)
            widths.append(LAYERS_WIDTH)
        window.resizeDocks(docks, widths, Qt.Horizontal)
        restored = self.dock.compare_panel.layer()
        if restored is not None:
            iface.setActiveLayer(restored)
        iface.mapCanvas().refreshAllLayers()
        self._step(self.grab, 3000)

    def grab(self) -> None:
        if not self._drawn(self.grab):
            return
        self._save_window(OUTPUT)
        self.frames: list = []
        self.dock.compare_panel.toggle.setChecked(False)  # "Before / after" released: the cloudy original
        self._step(self.grab_compare, 1500)

    # -- the comparison view: the blink toggle's two states, side by side ------------------------------

    def grab_compare(self) -> None:
        if not self._drawn(self.grab_compare):
            return
        self.frames.append(iface.mapCanvas().grab())
        if len(self.frames) == 1:
            self.dock.compare_panel.toggle.setChecked(True)  # pressed: the restored layer
            self._step(self.grab_compare, 1500)
            return
        labels = ("Before / after released: the cloudy layer", "Before / after pressed: restored (same bands, same stretch)")
        _side_by_side(self.frames, labels, COMPARE_OUTPUT)
        print(f"screenshot: wrote {COMPARE_OUTPUT}", flush=True)
        self._step(self.run_area)

    # -- an area-of-interest run: "Current map extent" after zooming in ---------------------------------

    def run_area(self) -> None:
        from mmcanet_qgis.dock.form import MAP_EXTENT

        canvas = iface.mapCanvas()
        full = canvas.extent()
        aoi = full.buffered(0)
        aoi.scale(0.45)  # a field-sized window in the middle of the scene
        canvas.setExtent(aoi)
        canvas.refresh()
        self.whole_run = self.dock.compare_panel.layer()  # hidden for the area picture: cloudy around the window
        form = self.dock.form
        form.area_combo.setCurrentIndex(form.area_combo.findData(MAP_EXTENT))
        form.output_widget.setFilePath(str(Path(self.scratch.name) / f"{SCENE}_area_cloudfree.tif"))
        self._full_extent = full
        self._step(self.start_area_run, 1000)

    def start_area_run(self) -> None:
        blocking = [p.message for p in self.dock.revalidate() if p.blocking]
        if blocking:
            raise RuntimeError("the dock refuses the area run: " + "; ".join(blocking))
        if self.dock.run() is None:
            raise RuntimeError("the area run did not start")
        self._step(self.wait_for_area, 500)

    def wait_for_area(self) -> None:
        if not self._run_done(self.wait_for_area, "the area run"):
            return
        if self.whole_run is not None:
            node = QgsProject.instance().layerTreeRoot().findLayer(self.whole_run.id())
            if node is not None:
                node.setItemVisibilityChecked(False)
        canvas = iface.mapCanvas()
        zoom_out = self._full_extent.buffered(0)
        zoom_out.scale(1.15)  # the whole scene with the restored window inside it
        canvas.setExtent(zoom_out)
        canvas.refreshAllLayers()
        iface.messageBar().clearWidgets()
        self._step(self.grab_area, 3000)

    def grab_area(self) -> None:
        if not self._drawn(self.grab_area):
            return
        self._save_window(AREA_OUTPUT)
        self._quit(0)

    # -- shared steps -----------------------------------------------------------------------------------

    def _run_done(self, again, what: str) -> bool:  # noqa: ANN001 - a bound method
        """True once the dock's run has finished well; while it runs, ``again`` is called back later."""
        if self.dock.is_running():
            self._step(again, 500)
            return False
        status = self.dock.status_label.text()
        if not status.startswith("Done"):
            raise RuntimeError(f"{what} did not succeed: {status}\n{self.dock.log_view.toPlainText()}")
        return True

    def _drawn(self, again) -> bool:  # noqa: ANN001 - a bound method
        """True once the map canvas has finished drawing; until then ``again`` is called back later."""
        if iface.mapCanvas().isDrawing():
            self._step(again, 500)
            return False
        return True

    def _save_window(self, path: Path) -> None:
        iface.messageBar().clearWidgets()  # QGIS's "Task complete" notice would cover the map
        path.parent.mkdir(parents=True, exist_ok=True)
        if not iface.mainWindow().grab().save(str(path), "PNG"):
            raise RuntimeError(f"could not write {path}")
        print(f"screenshot: wrote {path} in {time.monotonic() - self.started:.0f} s", flush=True)

    def _step(self, method, delay_ms: int = 200) -> None:  # noqa: ANN001 - a bound method
        def guarded() -> None:
            if time.monotonic() - self.started > TIMEOUT_S:
                print(f"screenshot: timed out after {TIMEOUT_S:.0f} s in {method.__name__}", file=sys.stderr)
                self._quit(1)
                return
            try:
                method()
            except Exception:  # noqa: BLE001 - report anything and leave QGIS with a failure status
                traceback.print_exc()
                self._quit(1)

        QTimer.singleShot(delay_ms, guarded)

    @staticmethod
    def _quit(code: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # QGIS would otherwise ask about the unsaved project or keep its window open


def _side_by_side(frames: list, labels: tuple[str, str], path: Path) -> None:
    """Two canvas grabs next to each other, each with a caption above it, saved as PNG."""
    from qgis.PyQt.QtGui import QColor, QFont, QImage, QPainter

    gap, caption = 12, 34
    w, h = frames[0].width(), frames[0].height()
    image = QImage(2 * w + gap, h + caption, QImage.Format_RGB32)
    image.fill(QColor("white"))
    painter = QPainter(image)
    font = QFont()
    font.setPointSize(12)
    painter.setFont(font)
    for i, (frame, label) in enumerate(zip(frames, labels, strict=True)):
        x = i * (w + gap)
        painter.drawText(x + 6, 23, label)
        painter.drawPixmap(x, caption, frame)
    painter.end()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not image.save(str(path), "PNG"):
        raise RuntimeError(f"could not write {path}")


_screenshot = Screenshot()
_screenshot.start()
