"""The MMCANet dock (GUI only): `create_dock(iface)` builds it on demand.

Nothing here is imported by qgis_process: the plugin calls `create_dock` lazily from initGui's action.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qgis.gui import QgsDockWidget


def create_dock(iface: Any) -> QgsDockWidget:
    """Build the cloud-removal dock parented to QGIS's main window; the caller adds it with
    `iface.addDockWidget(...)` (or shows/hides it) and keeps the reference."""
    from .widget import CloudRemovalDock

    parent = iface.mainWindow() if iface is not None else None
    return CloudRemovalDock(iface, parent)
