"""Which SAR / optical pair the dock picks on its own: never its outputs, overlapping pairs first.

Rules, in order:
1. The plugin's own outputs (a layer the dock marked, or a file whose GDAL metadata carries the
   ``MMCANET_MODEL`` / ``MMCANET_CLOUD_MASK`` tags the core writes) are never picked as an input.
2. The pair remembered in the project (the last pair a run used) wins while both layers are still there.
3. A current choice that fits (right band counts, not an output, the extents overlap) is kept.
4. Otherwise every 2-band x 12/13-band pair is scored by the fraction of the optical extent the SAR
   covers, both compared in the optical layer's CRS; the best-covered pair wins, ties go to the layer
   higher in the layer list. A pair that does not overlap at all is picked only when nothing overlaps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from osgeo import gdal
from qgis.core import (
    QgsCoordinateTransform,
    QgsCoordinateTransformContext,
    QgsCsException,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
)

from . import contract

OUTPUT_PROPERTY = "mmcanet/output"
"""Custom layer property the dock sets on the layers it adds ("restored", "mask")."""
OUTPUT_TAGS: tuple[str, ...] = ("MMCANET_MODEL", "MMCANET_CLOUD_MASK")
"""GDAL metadata items the core writes into its outputs (restored image, cloud masks)."""
PROJECT_SCOPE = "MMCANet"
"""QgsProject entry scope for the remembered pair (saved with the .qgz)."""


@dataclass(frozen=True)
class Pair:
    """A SAR / optical choice (either may be None)."""

    sar: QgsRasterLayer | None
    optical: QgsRasterLayer | None


def is_mmcanet_output(layer: QgsRasterLayer) -> bool:
    """True for a layer the dock added as a result, or a file the core wrote (its metadata tags)."""
    if layer.customProperty(OUTPUT_PROPERTY):
        return True
    if layer.providerType() != "gdal" or not layer.source():
        return False
    cached = layer.customProperty(OUTPUT_PROPERTY + "_checked")
    if cached is not None:
        return cached == "yes"
    found = False
    previous = gdal.GetUseExceptions()
    gdal.DontUseExceptions()
    try:
        ds = gdal.OpenEx(layer.source(), gdal.OF_RASTER | gdal.OF_READONLY)
        if ds is not None:
            metadata = ds.GetMetadata() or {}
            found = any(tag in metadata for tag in OUTPUT_TAGS)
            ds = None
    finally:
        if previous:
            gdal.UseExceptions()
    layer.setCustomProperty(OUTPUT_PROPERTY + "_checked", "yes" if found else "no")
    return found


def fits(layer: QgsRasterLayer | None, counts: Sequence[int]) -> bool:
    """A valid raster with an accepted band count that is not one of the plugin's outputs."""
    return (
        layer is not None and layer.isValid() and layer.bandCount() in counts and not is_mmcanet_output(layer)
    )


def coverage(
    sar: QgsRasterLayer, optical: QgsRasterLayer, transform_context: QgsCoordinateTransformContext
) -> float:
    """Fraction (0-1) of the optical extent covered by the SAR extent, compared in the optical CRS.

    Layers without a CRS are compared as they are (same grid assumed); an extent that cannot be
    transformed counts as no overlap.
    """
    target = optical.extent()
    extent = _extent_in(sar, optical, transform_context)
    if extent is None or target.area() <= 0:
        return 0.0
    common = extent.intersect(target)
    if common.isEmpty():
        return 0.0
    return min(1.0, common.area() / target.area())


def choose_pair(
    layers: Sequence[QgsRasterLayer],
    current: Pair,
    remembered: Pair,
    transform_context: QgsCoordinateTransformContext,
) -> Pair:
    """The pair the dock should show (see the module docstring); `layers` in layer-list order, top first."""
    sar_counts, optical_counts = contract.SAR_BAND_COUNTS, contract.OPTICAL_BAND_COUNTS
    if fits(remembered.sar, sar_counts) and fits(remembered.optical, optical_counts):
        return remembered
    if (
        fits(current.sar, sar_counts)
        and fits(current.optical, optical_counts)
        and current.sar is not None
        and current.optical is not None
        and coverage(current.sar, current.optical, transform_context) > 0
    ):
        return current
    sars = [layer for layer in layers if fits(layer, sar_counts)]
    opticals = [layer for layer in layers if fits(layer, optical_counts)]
    best: tuple[float, int, Pair] | None = None
    for i, optical in enumerate(opticals):
        for j, sar in enumerate(sars):
            if sar.id() == optical.id():
                continue
            score = coverage(sar, optical, transform_context)
            rank = (score, -(i + j))
            if best is None or rank > best[:2]:
                best = (score, -(i + j), Pair(sar, optical))
    if best is not None:
        return best[2]
    # no complete pair: fill what can be filled, keeping a fitting current choice
    sar = current.sar if fits(current.sar, sar_counts) else (sars[0] if sars else current.sar)
    optical = (
        current.optical if fits(current.optical, optical_counts) else (opticals[0] if opticals else current.optical)
    )
    return Pair(sar, optical)


def remember_pair(project: QgsProject, sar: QgsRasterLayer, optical: QgsRasterLayer) -> None:
    """Store the pair in the project (written into the .qgz when the project is saved)."""
    project.writeEntry(PROJECT_SCOPE, "/sar_layer", sar.id())
    project.writeEntry(PROJECT_SCOPE, "/optical_layer", optical.id())


def remembered_pair(project: QgsProject) -> Pair:
    """The pair the last run of this project used, as layers (None where a layer is gone)."""
    sar_id, _ = project.readEntry(PROJECT_SCOPE, "/sar_layer", "")
    optical_id, _ = project.readEntry(PROJECT_SCOPE, "/optical_layer", "")
    sar = project.mapLayer(sar_id) if sar_id else None
    optical = project.mapLayer(optical_id) if optical_id else None
    return Pair(
        sar if isinstance(sar, QgsRasterLayer) else None,
        optical if isinstance(optical, QgsRasterLayer) else None,
    )


def _extent_in(
    layer: QgsRasterLayer, optical: QgsRasterLayer, transform_context: QgsCoordinateTransformContext
) -> QgsRectangle | None:
    if not layer.crs().isValid() or not optical.crs().isValid() or layer.crs() == optical.crs():
        return layer.extent()
    transform = QgsCoordinateTransform(layer.crs(), optical.crs(), transform_context)
    try:
        return transform.transformBoundingBox(layer.extent())
    except QgsCsException:
        return None
