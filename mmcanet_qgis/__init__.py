"""QGIS plugin `mmcanet_qgis`: cloud removal for Sentinel-2 with Sentinel-1 SAR (MMCANet).

Loading the package makes the plugin's private dependency folder and its vendored core library
importable (see dependencies.py); torch itself is imported only when an algorithm runs.
"""

from .dependencies import add_to_sys_path

add_to_sys_path()


def classFactory(iface):  # noqa: N802, ANN001, ANN201 - QGIS plugin entry point
    """Called by QGIS (iface is None under qgis_process, which then calls only initProcessing)."""
    from .plugin import MMCANetPlugin

    return MMCANetPlugin(iface)
