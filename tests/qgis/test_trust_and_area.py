"""The trust layer and area-of-interest runs in a real QGIS: styling, Processing parameters, the dock.

The predicted-error raster is a real float32 GeoTIFF whose band is described ``predicted_abs_error``
(reflectance), as ``mmcanet restore --uncertainty-output`` writes it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasters as gen
from osgeo import gdal
from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsSingleBandPseudoColorRenderer,
)
from qgis.PyQt import sip
from qgis.PyQt.QtGui import QColor

pytestmark = pytest.mark.qgis

GT = gen.default_geotransform()  # 10 m, UTM 31N
# one value per class, and nodata: ≤0.01, 0.01-0.02, 0.02-0.05, 0.05-0.1, >0.1
CLASS_VALUES = (0.005, 0.015, 0.03, 0.07, 0.25)
ERROR_NODATA = -1.0


def write_error_raster(path: Path, values: np.ndarray) -> Path:
    """A predicted-error GeoTIFF as the core writes it: 1 band float32, described predicted_abs_error."""
    gen.write_raster(path, values[None].astype(np.float32), geotransform=GT, nodata=ERROR_NODATA,
                     descriptions=("predicted_abs_error",))
    return path


@pytest.fixture
def error_layer(tmp_path: Path, qgis_new_project: None) -> QgsRasterLayer:
    values = np.repeat(np.array(CLASS_VALUES + (ERROR_NODATA,), np.float32), 4)[None].repeat(3, axis=0)
    layer = QgsRasterLayer(str(write_error_raster(tmp_path / "err.tif", values)), "error")
    assert layer.isValid()
    return layer


def rendered_colours(layer: QgsRasterLayer) -> list[tuple[int, int, int, int]]:
    """RGBA the layer's renderer gives each pixel of row 0, at full resolution."""
    provider = layer.dataProvider()
    block = layer.renderer().block(1, layer.extent(), provider.xSize(), provider.ySize())
    colours = []
    for col in range(provider.xSize()):
        rgba = QColor.fromRgba(block.color(0, col))
        colours.append((rgba.red(), rgba.green(), rgba.blue(), rgba.alpha()))
    return colours


# ---- styling ---------------------------------------------------------------------------------------


def test_predicted_error_layer_gets_fixed_reflectance_classes(error_layer: QgsRasterLayer) -> None:
    from mmcanet_qgis.algorithms.styling import ERROR_COLOURS, is_predicted_error_layer, style_predicted_error

    assert is_predicted_error_layer(error_layer)
    assert style_predicted_error(error_layer)
    renderer = error_layer.renderer()
    assert isinstance(renderer, QgsSingleBandPseudoColorRenderer)
    items = renderer.shader().rasterShaderFunction().colorRampItemList()
    assert [i.value for i in items][:4] == [0.01, 0.02, 0.05, 0.1] and math.isinf(items[-1].value)
    legend = [label for label, _ in renderer.legendSymbologyItems()]
    assert legend == ["≤ 0.01", "0.01 – 0.02", "0.02 – 0.05", "0.05 – 0.1", "> 0.1"]

    colours = rendered_colours(error_layer)
    expected = [gen_colour(c) for c in ERROR_COLOURS]
    for k in range(len(CLASS_VALUES)):  # 4 pixels per class value, in class order
        assert set(colours[4 * k: 4 * k + 4]) == {expected[k]}, f"class {k}"
    assert {c[3] for c in colours[-4:]} == {0}, "nodata is transparent"


def test_classes_above_a_threshold_can_be_hidden(error_layer: QgsRasterLayer) -> None:
    from mmcanet_qgis.algorithms.styling import style_predicted_error

    assert style_predicted_error(error_layer, hide_above=0.05)
    alphas = [c[3] for c in rendered_colours(error_layer)]
    assert alphas[:12] == [255] * 12  # ≤ 0.05: drawn
    assert alphas[12:] == [0] * 12  # 0.07, 0.25 and nodata: hidden


def test_error_style_refuses_a_multiband_layer(tmp_path: Path, qgis_new_project: None) -> None:
    from mmcanet_qgis.algorithms.styling import is_predicted_error_layer, style_predicted_error

    s2 = QgsRasterLayer(str(gen.write_s2(tmp_path / "s2.tif", 8, 8)), "s2")
    before = s2.renderer().type()
    assert not is_predicted_error_layer(s2) and not style_predicted_error(s2)
    assert s2.renderer().type() == before


def gen_colour(hex_colour: str) -> tuple[int, int, int, int]:
    value = hex_colour.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16), 255


# ---- Processing parameters -------------------------------------------------------------------------


def test_remove_clouds_outputs_are_named_for_what_they_are(provider: Any) -> None:
    from qgis.core import QgsProcessingParameterDefinition

    alg = provider.algorithm("remove_clouds")
    assert "error" in alg.parameterDefinition("UNCERTAINTY_OUTPUT").description().lower()
    change = alg.parameterDefinition("CHANGE_OUTPUT").description().lower()
    assert "change" in change and "confidence" not in change
    old = alg.parameterDefinition("CONFIDENCE_OUTPUT")  # saved models and scripts keep working
    assert old is not None and old.flags() & QgsProcessingParameterDefinition.FlagHidden
    assert "not a measure of trust" in alg.shortHelpString().lower()
    assert alg.parameterDefinition("EXTENT").flags() & QgsProcessingParameterDefinition.FlagOptional


def test_old_confidence_id_still_writes_the_change_output(provider: Any, scene: dict[str, Path], tmp_path: Path) -> None:
    alg = provider.algorithm("remove_clouds").create()
    params = {"SAR": str(scene["s1"]), "OPTICAL": str(scene["s2"]), "OUTPUT": str(tmp_path / "o.tif")}
    options = alg.restore_options({**params, "CONFIDENCE_OUTPUT": str(tmp_path / "c.tif")}, QgsProcessingContext())
    assert options["change_output"] == str(tmp_path / "c.tif")
    with pytest.raises(QgsProcessingException, match="CHANGE_OUTPUT and CONFIDENCE_OUTPUT"):
        alg.restore_options({**params, "CONFIDENCE_OUTPUT": str(tmp_path / "c.tif"),
                             "CHANGE_OUTPUT": str(tmp_path / "d.tif")}, QgsProcessingContext())


def test_extent_goes_to_the_core_with_its_crs(provider: Any, scene: dict[str, Path], tmp_path: Path) -> None:
    alg = provider.algorithm("remove_clouds").create()
    params = {"SAR": str(scene["s1"]), "OPTICAL": str(scene["s2"]), "OUTPUT": str(tmp_path / "o.tif")}
    context = QgsProcessingContext()
    options = alg.restore_options({**params, "EXTENT": "2.25,2.5,45.0,45.125 [EPSG:4326]"}, context)
    assert options["extent"] == (2.25, 45.0, 2.5, 45.125) and options["extent_crs"] == "EPSG:4326"
    bare = alg.restore_options({**params, "EXTENT": "600100,600250,4999700,4999900"}, context)
    assert bare["extent_crs"] is None  # no CRS: the optical image's
    assert "extent" not in alg.restore_options({**params, "EXTENT": None}, context)


def test_harmonise_goes_to_the_core_with_the_core_default(provider: Any, scene: dict[str, Path], tmp_path: Path) -> None:
    from mmcanet.options import DEFAULT_HARMONISE

    alg = provider.algorithm("remove_clouds").create()
    params = {"SAR": str(scene["s1"]), "OPTICAL": str(scene["s2"]), "OUTPUT": str(tmp_path / "o.tif")}
    context = QgsProcessingContext()
    assert alg.parameterDefinition("HARMONISE").defaultValue() == DEFAULT_HARMONISE == 64
    assert alg.restore_options(params, context)["harmonise"] == DEFAULT_HARMONISE
    assert alg.restore_options({**params, "HARMONISE": 0}, context)["harmonise"] == 0
    assert alg.restore_options({**params, "HARMONISE": 16}, context)["harmonise"] == 16


def test_sar_structure_goes_to_the_core_with_the_core_default(provider: Any, scene: dict[str, Path], tmp_path: Path) -> None:
    from mmcanet.options import DEFAULT_SAR_STRUCTURE, MAX_SAR_STRUCTURE

    alg = provider.algorithm("remove_clouds").create()
    params = {"SAR": str(scene["s1"]), "OPTICAL": str(scene["s2"]), "OUTPUT": str(tmp_path / "o.tif")}
    context = QgsProcessingContext()
    definition = alg.parameterDefinition("SAR_STRUCTURE")
    assert definition.defaultValue() == DEFAULT_SAR_STRUCTURE == 8
    assert (definition.minimum(), definition.maximum()) == (0, MAX_SAR_STRUCTURE)
    assert alg.restore_options(params, context)["sar_structure"] == DEFAULT_SAR_STRUCTURE
    assert alg.restore_options({**params, "SAR_STRUCTURE": 0}, context)["sar_structure"] == 0
    assert alg.restore_options({**params, "SAR_STRUCTURE": 12}, context)["sar_structure"] == 12


def test_remove_clouds_on_an_area_of_interest(provider: Any, scene: dict[str, Path], tiny_model: Path,
                                              tmp_path: Path) -> None:
    import processing

    out = tmp_path / "aoi.tif"
    # columns 10.5..30.2 -> 10..30, rows 4.2..20.9 -> 4..20 of the 48 x 40 optical image
    x0, y0 = GT[0], GT[3]
    extent = f"{x0 + 105},{x0 + 302},{y0 - 209},{y0 - 42} [EPSG:{gen.UTM31N}]"
    processing.run("mmcanet:remove_clouds", {"SAR": str(scene["s1"]), "OPTICAL": str(scene["s2"]),
                                             "MODEL": str(tiny_model), "DEVICE": 1, "EXTENT": extent,
                                             "OUTPUT": str(out)})
    ds = gdal.Open(str(out))
    assert (ds.RasterXSize, ds.RasterYSize, ds.RasterCount) == (21, 17, 13)
    assert ds.GetGeoTransform() == pytest.approx((x0 + 100, 10, 0, y0 - 40, 0, -10))


def test_area_of_interest_outside_the_image_is_a_clear_error(provider: Any, scene: dict[str, Path],
                                                             tiny_model: Path, tmp_path: Path) -> None:
    import processing

    far = f"{GT[0] + 50_000},{GT[0] + 51_000},{GT[3] - 1000},{GT[3]}"
    with pytest.raises(QgsProcessingException, match="does not overlap"):
        processing.run("mmcanet:remove_clouds", {"SAR": str(scene["s1"]), "OPTICAL": str(scene["s2"]),
                                                 "MODEL": str(tiny_model), "DEVICE": 1, "EXTENT": far,
                                                 "OUTPUT": str(tmp_path / "o.tif")})
    assert not (tmp_path / "o.tif").exists()


# ---- the dock --------------------------------------------------------------------------------------


@pytest.fixture
def make_dock(qgis_iface: Any, qgis_new_project: None, provider: Any) -> Iterator[Callable[[], Any]]:
    from mmcanet_qgis.dock import create_dock, settings

    settings.clear()
    docks: list[Any] = []

    def make() -> Any:
        dock = create_dock(qgis_iface)
        docks.append(dock)
        return dock

    yield make
    for dock in docks:
        if not sip.isdeleted(dock):
            if dock.is_running():
                dock.cancel()
                wait_until(lambda d=dock: not d.is_running())
            dock.deleteLater()
    QgsApplication.processEvents()
    settings.clear()


def wait_until(condition: Callable[[], bool], timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s")
        QgsApplication.processEvents()
        time.sleep(0.005)


@pytest.fixture
def pair(tmp_path: Path) -> tuple[QgsRasterLayer, QgsRasterLayer]:
    s1 = QgsRasterLayer(str(gen.write_s1(tmp_path / "scene_s1.tif", 48, 64)), "radar")
    s2 = QgsRasterLayer(str(gen.write_s2(tmp_path / "scene_s2.tif", 48, 64)), "cloudy")
    assert s1.isValid() and s2.isValid()
    QgsProject.instance().addMapLayers([s2, s1])
    return s1, s2


def test_error_checkbox_is_disabled_for_a_model_without_error_head(make_dock: Callable[[], Any], pair: Any,
                                                                   tiny_model: Path) -> None:
    dock = make_dock()
    dock.form.model_widget.setFilePath(str(tiny_model))
    dock.revalidate()
    check = dock.form.add_error_check
    assert not check.isEnabled()
    assert "no error head" in check.toolTip() and "tiny-test" in check.toolTip()
    check.setChecked(True)  # a remembered choice: still not sent while the model cannot honour it
    parameters, created = dock.build_parameters()
    assert "UNCERTAINTY_OUTPUT" not in parameters and not any("prederror" in p for p in created)


def test_error_head_is_read_from_the_card() -> None:
    from mmcanet.modelfile import ModelCard

    from mmcanet_qgis.dock.modelcard import predicts_error

    assert not predicts_error(ModelCard())
    assert predicts_error(ModelCard(config={"error_head": True}))


def test_map_extent_becomes_the_area_of_interest(make_dock: Callable[[], Any], pair: Any, qgis_iface: Any) -> None:
    s1, s2 = pair
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:4326"))
    dock = make_dock()
    dock.form.area_combo.setCurrentIndex(dock.form.area_combo.findData("map_extent"))
    # the map shows somewhere else: blocked, with the reason under "Area"
    canvas.setExtent(QgsRectangle(10, 10, 11, 11))
    dock.revalidate()
    assert any("shows nothing of 'cloudy'" in p.message and p.blocking for p in dock.problems if p.field == "area")
    assert not dock.run_button.isEnabled()
    # the map shows part of the optical layer: the run gets that extent, in the map's CRS
    to_map = QgsCoordinateTransform(s2.crs(), canvas.mapSettings().destinationCrs(), QgsProject.instance())
    centre = to_map.transformBoundingBox(s2.extent())
    centre.scale(0.5)
    canvas.setExtent(centre)
    dock.revalidate()
    assert not [p for p in dock.problems if p.field == "area"]
    parameters, _ = dock.build_parameters()
    assert parameters["EXTENT"].endswith("[EPSG:4326]")
    xmin, xmax, ymin, ymax = (float(v) for v in parameters["EXTENT"].split(" ")[0].split(","))
    shown = canvas.extent()
    assert (xmin, xmax, ymin, ymax) == pytest.approx((shown.xMinimum(), shown.xMaximum(), shown.yMinimum(),
                                                      shown.yMaximum()))
    dock.form.area_combo.setCurrentIndex(dock.form.area_combo.findData("whole"))
    assert "EXTENT" not in dock.build_parameters()[0]


def test_dock_restores_the_map_extent(make_dock: Callable[[], Any], pair: Any, qgis_iface: Any,
                                      tiny_model: Path, tmp_path: Path) -> None:
    s1, s2 = pair
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(s2.crs())
    x0, y0 = GT[0], GT[3]
    canvas.setExtent(QgsRectangle(x0 + 100, y0 - 300, x0 + 400, y0 - 100))
    shown = canvas.extent()  # the canvas widens one side to its own aspect ratio
    dock = make_dock()
    dock.form.model_widget.setFilePath(str(tiny_model))
    dock.form.device_combo.setCurrentText("cpu")
    dock.form.output_widget.setFilePath(str(tmp_path / "aoi.tif"))
    dock.form.area_combo.setCurrentIndex(dock.form.area_combo.findData("map_extent"))
    assert dock.run() is not None
    wait_until(lambda: not dock.is_running())
    added = [layer for layer in QgsProject.instance().mapLayers().values() if "clouds removed" in layer.name()]
    assert len(added) == 1 and "map extent" in added[0].name(), dock.status_label.text()
    got = added[0].extent()
    clip = shown.intersect(s2.extent())
    # snapped outward to the 10 m optical grid: covers what the map showed of the image, by < 1 px more
    assert got.xMinimum() <= clip.xMinimum() < got.xMinimum() + 10
    assert got.yMinimum() <= clip.yMinimum() < got.yMinimum() + 10
    assert got.xMaximum() - 10 < clip.xMaximum() <= got.xMaximum()
    assert got.yMaximum() - 10 < clip.yMaximum() <= got.yMaximum()
    assert (got.xMinimum() - x0) % 10 == pytest.approx(0) and (y0 - got.yMaximum()) % 10 == pytest.approx(0)


def test_detect_clouds_on_an_area_of_interest(provider: Any, scene: dict[str, Path], tmp_path: Path) -> None:
    import processing

    x0, y0 = GT[0], GT[3]
    processing.run("mmcanet:detect_clouds", {"INPUT": str(scene["s2"]), "OUTPUT": str(tmp_path / "m.tif"),
                                             "EXTENT": f"{x0 + 50},{x0 + 250},{y0 - 300},{y0 - 100}"})
    ds = gdal.Open(str(tmp_path / "m.tif"))
    assert (ds.RasterXSize, ds.RasterYSize) == (20, 20)
    assert ds.GetGeoTransform() == pytest.approx((x0 + 50, 10, 0, y0 - 100, 0, -10))


# ---- selected polygons as the area ----------------------------------------------------------------

# In UTM 31N (the optical grid: 10 m, origin GT). A: columns 10.5..23.2, rows 14.2..31.1 of the image;
# B: a triangle over columns 26.3..41.8, rows 5.7..20.3; C lies 50 km east. The polygons are stored in
# WGS 84, as digitised fields usually are.
POLYGONS_UTM = {
    "A": [(105, 142), (232, 142), (232, 311), (105, 311)],
    "B": [(263, 57), (418, 95), (300, 203)],
    "C": [(50_000, 100), (50_200, 100), (50_200, 300)],
}
SNAPPED = (GT[0] + 100, GT[3] - 320, GT[0] + 420, GT[3] - 50)
"""A and B together: columns 10.5..41.8 -> 10..42, rows 5.7..31.1 -> 5..32 (32 x 27 px)."""


@pytest.fixture
def fields() -> Any:
    from qgis.core import QgsFeature, QgsGeometry, QgsPointXY, QgsVectorLayer

    layer = QgsVectorLayer("Polygon?crs=EPSG:4326&field=name:string", "fields", "memory")
    to_wgs = QgsCoordinateTransform(QgsCoordinateReferenceSystem(f"EPSG:{gen.UTM31N}"), layer.crs(),
                                    QgsProject.instance())
    features = []
    for name, ring in POLYGONS_UTM.items():
        geometry = QgsGeometry.fromPolygonXY([[QgsPointXY(GT[0] + dx, GT[3] - dy) for dx, dy in ring]])
        geometry.transform(to_wgs)
        feature = QgsFeature(layer.fields())
        feature.setAttributes([name])
        feature.setGeometry(geometry)
        features.append(feature)
    assert layer.dataProvider().addFeatures(features)[0]
    layer.updateExtents()
    QgsProject.instance().addMapLayer(layer)
    return layer


def _select(layer: Any, names: set[str]) -> None:
    layer.selectByIds([f.id() for f in layer.getFeatures() if f["name"] in names])


def test_selected_polygons_are_the_area_of_interest(make_dock: Callable[[], Any], pair: Any, fields: Any,
                                                    tmp_path: Path) -> None:
    from mmcanet.inference import RestoreOptions, restore_scene_with_model
    from toy_models import Card, SarEcho

    s1, s2 = pair
    dock = make_dock()
    dock.form.area_combo.setCurrentIndex(dock.form.area_combo.findData("selected_polygons"))
    dock.form.polygon_combo.setLayer(fields)
    assert dock.form.polygon_combo.isVisibleTo(dock.form)

    def area_problems() -> list[str]:
        return [p.message for p in dock.problems if p.field == "area" and p.blocking]

    dock.revalidate()
    assert any("No feature of 'fields' is selected" in m for m in area_problems())
    assert not dock.run_button.isEnabled()
    _select(fields, {"C"})  # the selection is an input: the dock re-checks by itself
    assert any("do not overlap 'cloudy'" in m for m in area_problems())
    assert not dock.run_button.isEnabled()
    _select(fields, {"A", "B"})
    assert area_problems() == [] and dock.run_button.isEnabled()

    # the box around A and B, moved into the optical CRS (not the WGS 84 box of the polygons)
    parameters, _ = dock.build_parameters()
    assert parameters["EXTENT"].endswith(f"[EPSG:{gen.UTM31N}]")
    xmin, xmax, ymin, ymax = (float(v) for v in parameters["EXTENT"].split(" ")[0].split(","))
    assert (xmin, xmax, ymin, ymax) == pytest.approx((GT[0] + 105, GT[0] + 418, GT[3] - 311, GT[3] - 57), abs=1e-3)

    # through the algorithm's parameter translation into the core, with a pixelwise model: the window
    # is georeferenced on the optical grid and holds exactly the whole-scene run's pixels there
    alg = contract_algorithm()
    context = QgsProcessingContext()
    outputs = {}
    for name, extra in (("whole", {"EXTENT": None}), ("aoi", {})):
        options = alg.restore_options({**parameters, **extra, "OUTPUT": str(tmp_path / f"{name}.tif"),
                                       "MASK_OUTPUT": None, "UNCERTAINTY_OUTPUT": None}, context)
        options.pop("model", None)
        options["harmonise"] = options["sar_structure"] = 0  # pixelwise end to end: the fill harmonisation looks ~200 px around a pixel
        outputs[name] = restore_scene_with_model(SarEcho(), Card(), RestoreOptions(**options)).output
    ds = gdal.Open(str(outputs["aoi"]))
    assert (ds.RasterXSize, ds.RasterYSize) == (32, 27)
    assert ds.GetGeoTransform() == pytest.approx((SNAPPED[0], 10, 0, SNAPPED[3], 0, -10))
    ds = None
    np.testing.assert_array_equal(gen.read(outputs["aoi"]), gen.read(outputs["whole"])[:, 5:32, 10:42])


def contract_algorithm() -> Any:
    from mmcanet_qgis.dock import contract

    alg = contract.find_algorithm()
    assert alg is not None
    return alg.create()


def test_dock_restores_the_selected_polygons(make_dock: Callable[[], Any], pair: Any, fields: Any,
                                             tiny_model: Path, tmp_path: Path) -> None:
    _select(fields, {"A", "B"})
    dock = make_dock()
    dock.form.model_widget.setFilePath(str(tiny_model))
    dock.form.device_combo.setCurrentText("cpu")
    dock.form.output_widget.setFilePath(str(tmp_path / "fields.tif"))
    dock.form.area_combo.setCurrentIndex(dock.form.area_combo.findData("selected_polygons"))
    assert dock.form.polygon_layer() is fields  # picked: the polygon layer with a selection
    assert dock.run() is not None
    wait_until(lambda: not dock.is_running())
    added = [layer for layer in QgsProject.instance().mapLayers().values() if "clouds removed" in layer.name()]
    assert len(added) == 1 and "selected polygons" in added[0].name(), dock.status_label.text()
    got = added[0].extent()
    assert (got.xMinimum(), got.yMinimum(), got.xMaximum(), got.yMaximum()) == pytest.approx(SNAPPED)
