"""The plugin object QGIS loads: Processing provider always; dock toggle and PyTorch installer in the GUI."""

from __future__ import annotations

import importlib.util
from typing import Any

from qgis.core import Qgis, QgsApplication, QgsMessageLog, QgsTask
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon

from . import dependencies
from .algorithms.base import ICON_PATH, tr
from .provider import MMCANetProvider

try:
    from qgis.PyQt.QtGui import QAction  # Qt6 (QGIS 4)
except ImportError:
    from qgis.PyQt.QtWidgets import QAction  # Qt5

MENU = "&MMCANet"
LOG_TAG = "MMCANet"


class MMCANetPlugin:
    """initProcessing registers the provider (all qgis_process calls); initGui adds the GUI entries."""

    def __init__(self, iface: Any) -> None:
        self.iface = iface
        self.provider: MMCANetProvider | None = None
        self.actions: list[QAction] = []
        self.action: QAction | None = None  # shows / hides the dock
        self.dock: Any = None
        self.install_task: QgsTask | None = None

    def initProcessing(self) -> None:  # noqa: N802 - QGIS API
        """Register the Processing provider (idempotent)."""
        if self.provider is None:
            self.provider = MMCANetProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802 - QGIS API
        """Provider, a toolbar button + Raster menu entry for the dock, and a PyTorch installer entry."""
        self.initProcessing()
        if self._has_dock():
            self.action = self._add_action(tr("MMCANet cloud removal"), self._show_dock, toggle=True)
            self.action.setToolTip(tr("Show the MMCANet cloud removal panel"))
        self._add_action(tr("Install PyTorch for MMCANet…"), self.install_dependencies)
        if importlib.util.find_spec("torch") is None:  # a cheap check: torch itself is not imported
            self.iface.messageBar().pushMessage(
                "MMCANet", tr("PyTorch is not installed for QGIS: Raster > MMCANet > Install PyTorch for MMCANet…"),
                Qgis.MessageLevel.Warning, 15)

    def _has_dock(self) -> bool:
        try:
            from .dock import create_dock  # noqa: F401 - only checks that this build has the dock
        except ImportError as exc:
            if exc.name == f"{__package__}.dock":
                return False  # a build without the dock: Processing only
            raise
        return True

    def _add_action(self, text: str, slot: Any, toggle: bool = False) -> QAction:
        """A Raster > MMCANet menu entry; ``toggle``: checkable, and on the plugins toolbar too."""
        action = QAction(QIcon(str(ICON_PATH)), text, self.iface.mainWindow())
        if toggle:
            action.setCheckable(True)
            action.toggled.connect(slot)
            self.iface.addToolBarIcon(action)
        else:
            action.triggered.connect(slot)
        self.iface.addPluginToRasterMenu(tr(MENU), action)
        self.actions.append(action)
        return action

    def _show_dock(self, visible: bool) -> None:
        if self.dock is None:
            if not visible:
                return
            from .dock import create_dock

            self.dock = create_dock(self.iface)
            self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
            self.dock.visibilityChanged.connect(self.action.setChecked)
        self.dock.setVisible(visible)

    def install_dependencies(self, checked: bool = False, torch: str | None = None) -> QgsTask | None:
        """Fill the private folder in a background task (pip output in the log panel, tab 'MMCANet').

        Asks CPU or NVIDIA GPU unless ``torch`` ('cpu' / 'cuda') is given. Returns the task.
        """
        if self.install_task is not None:
            return self.install_task
        if torch is None:
            from qgis.PyQt.QtWidgets import QMessageBox

            box = QMessageBox(QMessageBox.Icon.Question, tr("Install PyTorch for MMCANet"), tr(
                "Install PyTorch, safetensors and tqdm into {folder} with QGIS's Python? This downloads "
                "about 200 MB (CPU) or several GB (NVIDIA GPU) and takes a few minutes; the output goes to the "
                "log panel (tab MMCANet). Restart QGIS afterwards.").format(folder=dependencies.deps_dir()),
                parent=self.iface.mainWindow())
            cpu = box.addButton(tr("CPU"), QMessageBox.ButtonRole.AcceptRole)
            gpu = box.addButton(tr("NVIDIA GPU (CUDA)"), QMessageBox.ButtonRole.AcceptRole)
            box.addButton(QMessageBox.StandardButton.Cancel)
            box.exec()
            if box.clickedButton() not in (cpu, gpu):
                return None
            torch = "cpu" if box.clickedButton() is cpu else "cuda"

        def work(task: QgsTask) -> str:
            log = lambda line: QgsMessageLog.logMessage(line, LOG_TAG, Qgis.MessageLevel.Info)  # noqa: E731 - thread-safe
            return str(dependencies.install(torch=torch, log=log))

        def done(exception: BaseException | None, folder: str | None = None) -> None:
            self.install_task = None
            if exception is None:
                self.iface.messageBar().pushMessage(
                    "MMCANet", tr("PyTorch installed into {folder}: restart QGIS.").format(folder=folder),
                    Qgis.MessageLevel.Success, 0)
            else:
                QgsMessageLog.logMessage(str(exception), LOG_TAG, Qgis.MessageLevel.Critical)
                self.iface.messageBar().pushMessage(
                    "MMCANet", tr("Installing PyTorch failed: {error} (details in the log panel, tab MMCANet). "
                                  "The command to run by hand: {command}").format(
                        error=exception, command=dependencies.install_hint()), Qgis.MessageLevel.Critical, 0)

        self.install_task = QgsTask.fromFunction(tr("Installing PyTorch for MMCANet"), work, on_finished=done)
        QgsApplication.taskManager().addTask(self.install_task)
        return self.install_task

    def unload(self) -> None:
        """Remove the dock, the buttons, the menu entries and the provider; free the kept model's memory."""
        from .algorithms.remove_clouds import release_model_cache

        release_model_cache()
        if self.dock is not None:
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        for action in self.actions:
            self.iface.removePluginRasterMenu(tr(MENU), action)
            self.iface.removeToolBarIcon(action)
            action.deleteLater()
        self.actions = []
        self.action = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
