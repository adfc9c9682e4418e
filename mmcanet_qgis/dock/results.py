"""Put a finished restoration into the project: restored layer above the optical one, true colour
(the same style Processing gives the output: `mmcanet_qgis.algorithms.styling`)."""

from __future__ import annotations

from qgis.core import QgsLayerTreeGroup, QgsProject, QgsRasterLayer

from ..algorithms.styling import style_true_colour

__all__ = ["add_above", "restored_layer_name", "style_mask", "style_true_colour"]


def restored_layer_name(optical_name: str) -> str:
    """'<optical name> (cloud-free)'."""
    return f"{optical_name} (cloud-free)"


def add_above(project: QgsProject, layer: QgsRasterLayer, anchor_id: str | None) -> None:
    """Add `layer` to the project directly above the layer `anchor_id` in the layer tree (top if absent)."""
    project.addMapLayer(layer, False)
    root = project.layerTreeRoot()
    node = root.findLayer(anchor_id) if anchor_id else None
    parent = node.parent() if node is not None else None
    if isinstance(parent, QgsLayerTreeGroup):
        parent.insertLayer(parent.children().index(node), layer)
    else:
        root.insertLayer(0, layer)


def style_mask(layer: QgsRasterLayer, opacity: float = 0.5) -> None:
    """Cloud mask (0-1) drawn half transparent so the restored image shows through."""
    layer.setOpacity(opacity)
    layer.triggerRepaint()
