"""Cheap pre-run checks of the dock's choices: band counts, same layer twice, overlap, tiling, output.

Each check returns `Problem`s addressed to one field of the dock, so the widget can show the text next
to that field. Blocking problems disable Run; the others are warnings.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from mmcanet.options import tiling_problems
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCoordinateTransformContext,
    QgsCsException,
    QgsFeatureRequest,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)

from . import contract

# Fields a problem can be addressed to.
SAR, OPTICAL, MASK, MODEL, ADVANCED, OUTPUT = "sar", "optical", "mask", "model", "advanced", "output"
AREA = "area"

_MIN_COVERAGE = 0.99
"""Below this fraction of the optical extent covered by SAR, warn that part of the image gets no SAR."""


@dataclass(frozen=True)
class Problem:
    """Something wrong with one field; `blocking` problems stop the run."""

    field: str
    message: str
    blocking: bool = True


def band_count_matches(layer: QgsRasterLayer | None, counts: Sequence[int]) -> bool:
    """True when the layer is a valid raster with one of the accepted band counts."""
    return layer is not None and layer.isValid() and layer.bandCount() in counts


def check_layers(
    sar: QgsRasterLayer | None,
    optical: QgsRasterLayer | None,
    mask: QgsRasterLayer | None,
    transform_context: QgsCoordinateTransformContext,
) -> list[Problem]:
    """Check the input layers: presence, band counts, distinct layers, CRS and overlap of extents."""
    problems: list[Problem] = []
    problems += _check_bands(SAR, sar, contract.SAR_BAND_COUNTS, "the SAR input needs 2 bands (VV, VH)")
    problems += _check_bands(
        OPTICAL,
        optical,
        contract.OPTICAL_BAND_COUNTS,
        "the optical input needs the 13 Sentinel-2 Level-1C bands (or 12 at Level-2A)",
    )
    if mask is not None:
        problems += _check_bands(MASK, mask, contract.MASK_BAND_COUNTS, "a cloud mask has 1 band")

    if sar is not None and optical is not None and _same_layer(sar, optical):
        problems.append(Problem(OPTICAL, "The same layer is chosen as SAR and optical input."))
    if mask is not None:
        for other, role in ((sar, "SAR"), (optical, "optical")):
            if other is not None and _same_layer(mask, other):
                problems.append(Problem(MASK, f"The cloud mask is the same layer as the {role} input."))

    if optical is not None and optical.isValid():
        for field, layer, role in ((SAR, sar, "SAR"), (MASK, mask, "cloud mask")):
            if layer is not None and layer.isValid() and not _same_layer(layer, optical):
                problems += _check_overlap(field, role, layer, optical, transform_context)
    return problems


def check_tiling(tile_size: int | None, overlap: int | None, batch_size: int) -> list[Problem]:
    """The engine's tiling rules (mmcanet.options; None: from a model card not readable yet)."""
    problems = [Problem(ADVANCED, f"{text[0].upper()}{text[1:]}.") for text in tiling_problems(tile_size, overlap)]
    if batch_size < 1:
        problems.append(Problem(ADVANCED, "The batch size must be at least 1."))
    return problems


def check_output(path: str) -> list[Problem]:
    """A chosen output file must go into an existing, writable folder ("" = automatic name, checked when planned)."""
    if not path:
        return []
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return [Problem(OUTPUT, f"The folder {folder} does not exist.")]
    if not os.access(folder, os.W_OK):
        return [Problem(OUTPUT, f"The folder {folder} is not writable.")]
    if os.path.splitext(path)[1].lower() not in (".tif", ".tiff"):
        return [
            Problem(OUTPUT, "The output is written as GeoTIFF; the name should end in .tif.", blocking=False)
        ]
    return []


def _check_bands(field: str, layer: QgsRasterLayer | None, counts: Sequence[int], need: str) -> list[Problem]:
    if layer is None:
        return [Problem(field, "Choose a raster layer.")]
    if not layer.isValid():
        return [Problem(field, f"The layer '{layer.name()}' cannot be read.")]
    n = layer.bandCount()
    if n not in counts:
        return [Problem(field, f"'{layer.name()}' has {n} band{'s' if n != 1 else ''}; {need}.")]
    return []


def _same_layer(a: QgsRasterLayer, b: QgsRasterLayer) -> bool:
    """The same layer, or two layers reading the same file."""
    return a.id() == b.id() or (bool(a.source()) and a.source() == b.source())


def _check_overlap(
    field: str,
    role: str,
    layer: QgsRasterLayer,
    optical: QgsRasterLayer,
    transform_context: QgsCoordinateTransformContext,
) -> list[Problem]:
    """Compare the extents in the optical layer's CRS; warn when a CRS is missing (cannot be checked)."""
    if not layer.crs().isValid() or not optical.crs().isValid():
        missing = layer if not layer.crs().isValid() else optical
        return [
            Problem(
                field,
                f"'{missing.name()}' has no coordinate reference system; the {role} and optical layers "
                "must then share the same pixel grid.",
                blocking=False,
            )
        ]
    extent = _extent_in(layer, optical, transform_context)
    if extent is None:
        return [
            Problem(
                field,
                f"The extent of '{layer.name()}' cannot be transformed from {layer.crs().authid()} "
                f"to {optical.crs().authid()}.",
            )
        ]
    target = optical.extent()
    common = extent.intersect(target)
    if common.isEmpty() or common.area() <= 0:
        return [
            Problem(
                field,
                f"'{layer.name()}' does not overlap the optical layer '{optical.name()}'"
                f"{_crs_note(layer, optical)}.",
            )
        ]
    coverage = common.area() / target.area() if target.area() > 0 else 1.0
    if coverage < _MIN_COVERAGE:
        return [
            Problem(
                field,
                f"'{layer.name()}' covers only {coverage:.0%} of the optical layer; "
                "pixels outside it are restored without SAR.",
                blocking=False,
            )
        ]
    return []


def _extent_in(
    layer: QgsRasterLayer, optical: QgsRasterLayer, transform_context: QgsCoordinateTransformContext
) -> QgsRectangle | None:
    if layer.crs() == optical.crs():
        return layer.extent()
    transform = QgsCoordinateTransform(layer.crs(), optical.crs(), transform_context)
    try:
        return transform.transformBoundingBox(layer.extent())
    except QgsCsException:
        return None


def _crs_note(layer: QgsRasterLayer, optical: QgsRasterLayer) -> str:
    if layer.crs() == optical.crs():
        return ""
    return f" (compared after reprojecting {layer.crs().authid()} to {optical.crs().authid()})"


def check_area(
    extent: QgsRectangle | None,
    extent_crs: QgsCoordinateReferenceSystem,
    optical: QgsRasterLayer | None,
    transform_context: QgsCoordinateTransformContext,
) -> list[Problem]:
    """The map extent chosen as area of interest must overlap the optical layer (None: whole layer, fine)."""
    if extent is None or optical is None or not optical.isValid():
        return []
    if extent.isEmpty():
        return [Problem(AREA, "The map shows no area; zoom to the area to restore or choose 'Whole layer'.")]
    box = QgsRectangle(extent)
    if extent_crs.isValid() and optical.crs().isValid() and extent_crs != optical.crs():
        try:
            box = QgsCoordinateTransform(extent_crs, optical.crs(), transform_context).transformBoundingBox(extent)
        except QgsCsException:
            return [Problem(AREA, "The map extent cannot be transformed to the optical layer's CRS; "
                                  "zoom to the optical layer or choose 'Whole layer'.")]
    if not box.intersects(optical.extent()):
        return [Problem(AREA, f"The map shows nothing of '{optical.name()}'; zoom to the area to restore "
                              "or choose 'Whole layer'.")]
    return []


def selected_polygons_extent(
    polygons: QgsVectorLayer | None,
    optical: QgsRasterLayer | None,
    transform_context: QgsCoordinateTransformContext,
) -> tuple[QgsRectangle | None, list[Problem]]:
    """The bounding box, in the optical layer's CRS, of the selected features of `polygons`.

    Each selected geometry is transformed to the optical CRS before its box is taken, so the area is
    the tightest rectangle around the polygons as the optical grid sees them (the core then snaps it
    outward to whole optical pixels). Returns (None, blocking problems) when there is no polygon
    layer, nothing is selected, the CRS cannot be converted or the polygons miss the optical layer.
    """
    if optical is None or not optical.isValid():
        return None, []  # the optical field reports that
    if polygons is None or not polygons.isValid():
        return None, [Problem(AREA, "Choose the polygon layer whose selected features mark the area to "
                                    "restore, or choose another area.")]
    if polygons.selectedFeatureCount() == 0:
        return None, [Problem(AREA, f"No feature of '{polygons.name()}' is selected; select the polygons to "
                                    "restore (Select Features tool) or choose another area.")]
    transform = None
    if polygons.crs().isValid() and optical.crs().isValid() and polygons.crs() != optical.crs():
        transform = QgsCoordinateTransform(polygons.crs(), optical.crs(), transform_context)
    elif polygons.crs().isValid() != optical.crs().isValid():
        return None, [Problem(AREA, f"'{polygons.name() if not polygons.crs().isValid() else optical.name()}' has "
                                    "no CRS, so the polygons cannot be placed on the optical layer; set the "
                                    "layer's CRS (Layer Properties > Source).")]
    box = QgsRectangle()
    box.setMinimal()
    request = QgsFeatureRequest().setNoAttributes()
    for feature in polygons.getSelectedFeatures(request):
        geometry = feature.geometry()
        if geometry.isNull() or geometry.isEmpty():
            continue
        if transform is not None:
            try:
                geometry.transform(transform)
            except QgsCsException:
                return None, [Problem(AREA, f"The selected polygons of '{polygons.name()}' cannot be transformed "
                                            f"to the CRS of '{optical.name()}' ({optical.crs().authid()}).")]
        box.combineExtentWith(geometry.boundingBox())
    if box.isNull() or box.isEmpty() or not box.intersects(optical.extent()):
        return None, [Problem(AREA, f"The selected polygons of '{polygons.name()}' do not overlap "
                                    f"'{optical.name()}'; select polygons over the image or choose another area.")]
    return box, []
