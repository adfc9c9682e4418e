"""The plugin object QGIS loads: Processing provider always; toolbar button and dock in the desktop GUI."""

from __future__ import annotations

from typing import Any

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon

from .algorithms.base import tr
from .provider import ICON_PATH, MMCANetProvider

MENU = "&MMCANet"


class MMCANetPlugin:
    """initProcessing registers the provider (all qgis_process calls); initGui adds the dock toggle."""

    def __init__(self, iface: Any) -> None:
        self.iface = iface
        self.provider: MMCANetProvider | None = None
        self.action: Any = None
        self.dock: Any = None

    def initProcessing(self) -> None:  # noqa: N802 - QGIS API
        """Register the Processing provider (idempotent)."""
        if self.provider is None:
            self.provider = MMCANetProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802 - QGIS API
        """Provider, plus a toolbar button and Raster menu entry that show / hide the dock."""
        self.initProcessing()
        try:
            from .dock import create_dock  # noqa: F401 - only checks that the dock exists in this build
        except ImportError as exc:
            if exc.name == f"{__package__}.dock":
                return  # this build has no dock: Processing only
            raise
        try:
            from qgis.PyQt.QtGui import QAction  # Qt6 (QGIS 4)
        except ImportError:
            from qgis.PyQt.QtWidgets import QAction  # Qt5

        self.action = QAction(QIcon(str(ICON_PATH)), tr("MMCANet cloud removal"), self.iface.mainWindow())
        self.action.setCheckable(True)
        self.action.setToolTip(tr("Show the MMCANet cloud removal panel"))
        self.action.toggled.connect(self._show_dock)
        self.iface.addToolBarIcon(self.action)
        self.iface.addPluginToRasterMenu(tr(MENU), self.action)

    def _show_dock(self, visible: bool) -> None:
        if self.dock is None:
            if not visible:
                return
            from .dock import create_dock

            self.dock = create_dock(self.iface)
            self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
            self.dock.visibilityChanged.connect(self.action.setChecked)
        self.dock.setVisible(visible)

    def unload(self) -> None:
        """Remove the dock, the button, the menu entry and the provider."""
        if self.dock is not None:
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        if self.action is not None:
            self.iface.removePluginRasterMenu(tr(MENU), self.action)
            self.iface.removeToolBarIcon(self.action)
            self.action.deleteLater()
            self.action = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
