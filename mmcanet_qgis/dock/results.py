"""Put a finished restoration into the project: restored layer above the optical one, both drawn the same.

The restored layer gets true colour (B4, B3, B2, 2-98 % cumulative cut: `algorithms.styling`, the style
Processing gives too); the cloudy layer then gets the very same bands and limits, in a style of its own
("MMCANet before/after") so the user's previous style stays one click away in the layer's Styles menu.
"""

from __future__ import annotations

from qgis.core import QgsLayerTreeGroup, QgsProject, QgsRasterLayer

from ..algorithms.styling import copy_true_colour, style_predicted_error, style_true_colour
from .preselect import OUTPUT_PROPERTY

__all__ = ["COMPARE_STYLE", "add_above", "error_layer_name", "mark_output", "mask_layer_name",
           "restored_layer_name", "style_error", "style_mask", "style_pair"]

COMPARE_STYLE = "MMCANet before/after"
"""Name of the style added to the cloudy layer (its other styles are kept)."""


def restored_layer_name(optical_name: str, area: str = "") -> str:
    """'<optical name> – clouds removed (MMCANet)', with the area of interest when not the whole layer."""
    where = f", {area}" if area else ""
    return f"{optical_name} – clouds removed (MMCANet{where})"


def mask_layer_name(optical_name: str, area: str = "") -> str:
    """'<optical name> – cloud/shadow mask used (MMCANet)'."""
    where = f", {area}" if area else ""
    return f"{optical_name} – cloud/shadow mask used (MMCANet{where})"


def error_layer_name(optical_name: str, area: str = "") -> str:
    """'<optical name> – predicted error, reflectance (MMCANet)'."""
    where = f", {area}" if area else ""
    return f"{optical_name} – predicted error, reflectance (MMCANet{where})"


def mark_output(layer: QgsRasterLayer, role: str) -> None:
    """Tag a layer as one of the plugin's results, so it is never preselected as an input."""
    layer.setCustomProperty(OUTPUT_PROPERTY, role)


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


def style_pair(restored: QgsRasterLayer, original: QgsRasterLayer | None) -> bool:
    """True colour on `restored`; the same bands and stretch on `original` (True when both are styled)."""
    if not style_true_colour(restored):
        return False
    if original is None or not original.isValid():
        return False
    manager = original.styleManager()
    if COMPARE_STYLE not in manager.styles():
        manager.addStyleFromLayer(COMPARE_STYLE)
    manager.setCurrentStyle(COMPARE_STYLE)
    return copy_true_colour(restored, original)


def style_mask(layer: QgsRasterLayer, opacity: float = 0.5) -> None:
    """Cloud mask (0-1) drawn half transparent so the restored image shows through."""
    layer.setOpacity(opacity)
    layer.triggerRepaint()


def style_error(layer: QgsRasterLayer) -> bool:
    """Predicted error in fixed reflectance classes on a sequential ramp (`algorithms.styling`)."""
    return style_predicted_error(layer)
