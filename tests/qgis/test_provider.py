"""The `mmcanet` Processing provider in a real QGIS: definitions, processing.run of each algorithm, bad input.

Small generated GeoTIFFs with a real CRS (tests/rasters.py) and a tiny random model keep each run to a
second or two on a 2-core CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasters
from osgeo import gdal
from qgis.core import (
    QgsMultiBandColorRenderer,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterDefinition,
    QgsProject,
    QgsRasterLayer,
)

pytestmark = pytest.mark.qgis

ALGORITHM_IDS = ("remove_clouds", "train_model", "evaluate_model", "simulate_clouds", "detect_clouds", "stack_bands")


def run(algorithm: str, parameters: dict[str, Any], context: QgsProcessingContext | None = None,
        feedback: QgsProcessingFeedback | None = None) -> dict[str, Any]:
    import processing

    return processing.run(f"mmcanet:{algorithm}", parameters, context=context, feedback=feedback)


# ---- definitions -----------------------------------------------------------------------------------


def test_provider_lists_the_six_algorithms(provider: Any) -> None:
    assert provider.id() == "mmcanet"
    assert provider.name() == "MMCANet cloud removal"
    assert sorted(a.name() for a in provider.algorithms()) == sorted(ALGORITHM_IDS)
    assert not provider.icon().isNull()


@pytest.mark.parametrize("name", ALGORITHM_IDS)
def test_every_algorithm_documents_itself(provider: Any, name: str) -> None:
    alg = provider.algorithm(name)
    assert alg.displayName() and alg.group() and alg.groupId()
    assert len(alg.shortHelpString()) > 200, "help must say what the inputs, units and outputs are"
    for param in alg.parameterDefinitions():
        assert param.description(), f"{name}.{param.name()} has no label"
        assert param.name().isupper(), "parameter keys are upper-case class constants"


def test_remove_clouds_flags_expert_options_advanced(provider: Any) -> None:
    alg = provider.algorithm("remove_clouds")
    advanced = {p.name() for p in alg.parameterDefinitions()
                if p.flags() & QgsProcessingParameterDefinition.FlagAdvanced}
    assert advanced == {"TILE_SIZE", "OVERLAP", "BATCH_SIZE", "HARMONISE", "SAR_STRUCTURE", "OVERVIEWS", "COG"}
    assert alg.parameterDefinition("STRATEGY").options()[0] == "model default"
    assert alg.parameterDefinition("DEVICE").options() == ["auto", "cpu", "cuda"]


def test_torch_free_choice_lists_match_the_core() -> None:
    from mmcanet.models import ARCHITECTURES, STRATEGIES

    from mmcanet_qgis.algorithms import base

    assert base.STRATEGIES == STRATEGIES
    assert base.ARCHITECTURES == ARCHITECTURES


def test_loading_the_provider_imports_no_torch(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from qgis.core import QgsApplication\n"
        "app = QgsApplication([], False); app.initQgis()\n"
        "import mmcanet_qgis\n"
        "plugin = mmcanet_qgis.classFactory(None); plugin.initProcessing()\n"
        "alg = QgsApplication.processingRegistry().algorithmById('mmcanet:remove_clouds')\n"
        "assert alg is not None and alg.parameterDefinition('MODEL') is not None\n"
        "print(sorted(m for m in ('torch', 'safetensors', 'tqdm') if m in sys.modules))\n"
    )
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(tmp_path),
               PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]", "QGIS start-up must not import torch"


def test_restore_options_are_built_without_running(provider: Any, scene: dict[str, Path], tmp_path: Path) -> None:
    alg = provider.algorithm("remove_clouds").create()
    context = QgsProcessingContext()
    params = {"SAR": str(scene["s1"]), "OPTICAL": str(scene["s2"]), "STRATEGY": 3, "DEVICE": 1,
              "OUTPUT": str(tmp_path / "out.tif"), "KEEP_CLEAR": False}
    options = alg.restore_options(params, context)
    assert options["sar"] == str(scene["s1"]) and options["optical"] == str(scene["s2"])
    assert options["strategy"] == "iterative" and options["device"] == "cpu"
    assert options["tile_size"] is None and options["overlap"] is None  # the model card's defaults
    assert options["keep_clear"] is None and options["cloud_mask"] is None  # unchecked: automatic by level
    assert alg.restore_options({**params, "KEEP_CLEAR": True}, context)["keep_clear"] is True
    assert options["mask_output"] is None and options["change_output"] is None
    assert "extent" not in options  # no area of interest: the whole image
    assert not (tmp_path / "out.tif").exists()
    explicit = alg.restore_options({**params, "TILE_SIZE": 64, "OVERLAP": 0}, context)
    assert (explicit["tile_size"], explicit["overlap"]) == (64, 0)  # 0 is a real overlap, not "default"
    assert (options["overviews"], options["cog"]) == (True, False)  # the core's defaults, advanced switches
    switched = alg.restore_options({**params, "OVERVIEWS": False, "COG": True}, context)
    assert (switched["overviews"], switched["cog"]) == (False, True)
    for key in ("OVERVIEWS", "COG"):
        assert alg.parameterDefinition(key).flags() & QgsProcessingParameterDefinition.FlagAdvanced


def test_remove_clouds_dialog_states_its_defaults(provider: Any) -> None:
    """No magic numbers: unset tiling is "Not set" (the model's), the bundled model is named, not a path."""
    from mmcanet.modelfile import default_model_path, read_card

    alg = provider.algorithm("remove_clouds")
    for name in ("TILE_SIZE", "OVERLAP"):
        param = alg.parameterDefinition(name)
        assert param.defaultValue() is None and param.flags() & QgsProcessingParameterDefinition.FlagOptional
        assert param.minimum() >= 0, "no negative 'default' value"
    model = alg.parameterDefinition("MODEL")
    assert model.defaultValue() in (None, "")
    card = read_card(default_model_path())
    assert f"{card.name} v{card.version}" in model.description()
    assert str(default_model_path()) not in model.description()


def test_groups_say_what_they_hold(provider: Any) -> None:
    groups = {a.name(): a.group() for a in provider.algorithms()}
    assert groups["remove_clouds"] == groups["detect_clouds"] == "Cloud removal"
    assert groups["stack_bands"] == "Prepare Sentinel data"
    assert groups["simulate_clouds"] == groups["train_model"] == "Training and evaluation"


# ---- remove_clouds ---------------------------------------------------------------------------------


def test_remove_clouds_writes_a_georeferenced_13_band_raster(
    provider: Any, scene: dict[str, Path], tiny_model: Path, tmp_path: Path
) -> None:
    out, mask = tmp_path / "restored.tif", tmp_path / "mask.tif"
    progress: list[float] = []
    feedback = QgsProcessingFeedback()
    feedback.progressChanged.connect(progress.append)
    result = run("remove_clouds", {"SAR": str(scene["s1"]), "OPTICAL": str(scene["s2"]), "MODEL": str(tiny_model),
                                   "DEVICE": 1, "OUTPUT": str(out), "MASK_OUTPUT": str(mask)}, feedback=feedback)
    assert Path(result["OUTPUT"]) == out and Path(result["MASK_OUTPUT"]) == mask
    ds_in, ds_out = gdal.Open(str(scene["s2"])), gdal.Open(str(out))
    assert ds_out.RasterCount == 13
    assert (ds_out.RasterXSize, ds_out.RasterYSize) == (ds_in.RasterXSize, ds_in.RasterYSize)
    assert ds_out.GetGeoTransform() == ds_in.GetGeoTransform()
    assert ds_out.GetSpatialRef().IsSame(ds_in.GetSpatialRef())
    assert gdal.Open(str(mask)).RasterCount == 1
    assert progress and max(progress) == pytest.approx(100.0)


def test_restored_layer_is_styled_true_colour_when_loaded(
    provider: Any, scene: dict[str, Path], tiny_model: Path, tmp_path: Path
) -> None:
    out = str(tmp_path / "restored.tif")
    project = QgsProject()
    context = QgsProcessingContext()
    context.setProject(project)
    context.addLayerToLoadOnCompletion(out, QgsProcessingContext.LayerDetails("restored", project, "OUTPUT"))
    run("remove_clouds", {"SAR": str(scene["s1"]), "OPTICAL": str(scene["s2"]), "MODEL": str(tiny_model),
                          "DEVICE": 1, "OUTPUT": out}, context=context)
    post = context.layerToLoadOnCompletionDetails(out).postProcessor()
    assert post is not None, "remove_clouds must style its output when Processing loads it"
    layer = QgsRasterLayer(out, "restored")
    post.postProcessLayer(layer, context, QgsProcessingFeedback())  # what Processing does in the main thread
    renderer = layer.renderer()
    assert isinstance(renderer, QgsMultiBandColorRenderer)
    assert (renderer.redBand(), renderer.greenBand(), renderer.blueBand()) == (4, 3, 2)
    data = rasters.read(out)[3].astype(float)
    lo, hi = renderer.redContrastEnhancement().minimumValue(), renderer.redContrastEnhancement().maximumValue()
    assert data.min() <= lo < hi <= data.max()  # a 2-98 % cut, not the full range
    assert (lo, hi) != (data.min(), data.max())


def _rgb(path: Path) -> Path:
    rgb = rasters.s2_array(40, 48)[[3, 2, 1]]
    return rasters.write_raster(path, rgb, geotransform=rasters.default_geotransform())


BAD_INPUTS = {
    # case: (which input is replaced, how to make it, words the message must contain)
    "3-band optical": ("s2", _rgb, ("3 band", "13")),
    "13-band SAR": ("s1", lambda p: rasters.write_s2(p, 40, 48), ("13 band", "2")),
    "text file as optical": ("s2", lambda p: (p.write_text("not a raster\n"), p)[1], ("optical", "bad_s2.tif")),
    "non-overlapping": ("s1", lambda p: rasters.write_s1(p, 40, 48, geotransform=rasters.default_geotransform(
        origin=(700000.0, 4000000.0))), ("overlap",)),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gives_a_clear_processing_error(
    provider: Any, scene: dict[str, Path], tiny_model: Path, tmp_path: Path, case: str
) -> None:
    which, make, words = BAD_INPUTS[case]
    inputs = dict(scene)
    inputs[which] = make(tmp_path / f"bad_{which}.tif")
    out = tmp_path / "out.tif"
    with pytest.raises(QgsProcessingException) as err:
        run("remove_clouds", {"SAR": str(inputs["s1"]), "OPTICAL": str(inputs["s2"]), "MODEL": str(tiny_model),
                              "DEVICE": 1, "OUTPUT": str(out)})
    message = str(err.value).lower()
    assert "traceback" not in message
    for word in words:
        assert word.lower() in message, f"{case}: {err.value}"
    assert not out.exists(), "no partial output after an error"


def test_missing_file_is_reported_by_parameter_name(provider: Any, scene: dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / "does_not_exist.tif"
    with pytest.raises(QgsProcessingException) as err:
        run("remove_clouds", {"SAR": str(missing), "OPTICAL": str(scene["s2"]), "OUTPUT": str(tmp_path / "o.tif")})
    assert "SAR" in str(err.value) and "does_not_exist.tif" in str(err.value)


def test_file_inputs_reach_the_core_without_a_layer_and_layers_still_resolve(
    provider: Any, scene: dict[str, Path]
) -> None:
    """A file path goes to the core as it is (no QgsRasterLayer built, e.g. in a background task's thread);
    a layer id of the project still resolves to its source, and a missing optional input is None."""
    from qgis.core import QgsProject

    alg = provider.algorithm("remove_clouds")
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    path = str(scene["s2"])
    assert alg.raster_path({"OPTICAL": path}, "OPTICAL", context) == path
    assert context.temporaryLayerStore().count() == 0, "no layer was loaded for a plain file"
    assert alg.raster_path({"CLOUD_MASK": None}, "CLOUD_MASK", context, optional=True) is None
    layer = QgsRasterLayer(str(scene["s1"]), "sar layer")
    QgsProject.instance().addMapLayer(layer)
    try:
        assert alg.raster_path({"SAR": layer.id()}, "SAR", context) == layer.source()
        assert alg.raster_path({"SAR": "sar layer"}, "SAR", context) == layer.source()
    finally:
        QgsProject.instance().removeMapLayer(layer.id())


def test_missing_model_file_is_a_clear_error(provider: Any, scene: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(QgsProcessingException) as err:
        run("remove_clouds", {"SAR": str(scene["s1"]), "OPTICAL": str(scene["s2"]),
                              "MODEL": str(tmp_path / "nope.safetensors"), "OUTPUT": str(tmp_path / "o.tif")})
    assert "nope.safetensors" in str(err.value)


def test_non_gdal_layer_is_rejected(provider: Any, scene: dict[str, Path], tmp_path: Path) -> None:
    from qgis.core import QgsProject

    expression = f'"{Path(scene["s2"]).stem}@1" * 2'
    virtual = QgsRasterLayer(f"?crs=EPSG:32631&extent=600000,4999600,600480,5000000&width=48&height=40"
                             f"&formula={expression}", "virtual", "virtualraster")
    assert virtual.isValid(), "QGIS >= 3.18 ships the virtualraster provider: the test needs a non-GDAL layer"
    QgsProject.instance().addMapLayer(virtual)
    try:
        with pytest.raises(QgsProcessingException) as err:
            run("remove_clouds", {"SAR": str(scene["s1"]), "OPTICAL": virtual.id(), "OUTPUT": str(tmp_path / "o.tif")})
    finally:
        QgsProject.instance().removeMapLayer(virtual.id())
    assert "GDAL" in str(err.value) and "virtualraster" in str(err.value)


# ---- the other algorithms ---------------------------------------------------------------------------


def test_simulate_clouds_is_seeded(provider: Any, tmp_path: Path) -> None:
    clear = rasters.write_s2(tmp_path / "clear.tif", 40, 48)
    outs = []
    for i in range(2):
        out, opacity = tmp_path / f"cloudy{i}.tif", tmp_path / f"opacity{i}.tif"
        run("simulate_clouds", {"INPUT": str(clear), "SEED": 7, "OUTPUT": str(out), "OPACITY_OUTPUT": str(opacity)})
        outs.append(rasters.read(out))
        assert rasters.read(opacity).shape == (1, 40, 48)
    assert outs[0].shape == (13, 40, 48)
    np.testing.assert_array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0], rasters.read(clear))


def test_detect_clouds_marks_the_bright_blob(provider: Any, scene: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "mask.tif"
    run("detect_clouds", {"INPUT": str(scene["s2"]), "OUTPUT": str(out)})
    mask = rasters.read(out)
    assert mask.shape == (1, 40, 48)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1, 2, 255}
    assert mask[0, 20, 19] == 1, "the cloud blob in the middle of the generated scene"
    assert gdal.Open(str(out)).GetGeoTransform() == gdal.Open(str(scene["s2"])).GetGeoTransform()


def test_stack_bands_then_remove_clouds_on_real_band_folders(provider: Any, shared_data: Path, tmp_path: Path) -> None:
    """Real BigEarthNet-MM folders (12 L2A band files at 10/20/60 m; VV and VH files) -> stacked -> restored."""
    s2_dir = sorted((shared_data / "bigearthnet-s1s2" / "BigEarthNet-S2-Example").iterdir())[0]
    s1_dir = sorted((shared_data / "bigearthnet-s1s2" / "BigEarthNet-S1-Example").iterdir())[0]
    s2, s1 = tmp_path / "s2.tif", tmp_path / "s1.tif"
    run("stack_bands", {"INPUT": str(s2_dir), "SENSOR": 0, "OUTPUT": str(s2)})
    run("stack_bands", {"INPUT": str(s1_dir), "SENSOR": 1, "OUTPUT": str(s1)})
    ds = gdal.Open(str(s2))
    assert ds.RasterCount == 12 and ds.GetRasterBand(9).GetDescription() == "B8A"
    b02 = gdal.Open(str(next(s2_dir.glob("*_B02.tif"))))
    assert ds.GetGeoTransform() == pytest.approx(b02.GetGeoTransform())
    np.testing.assert_array_equal(ds.GetRasterBand(2).ReadAsArray(), b02.ReadAsArray())
    sar = gdal.Open(str(s1))  # keep the dataset referenced while its bands are used
    assert [sar.GetRasterBand(i).GetDescription() for i in (1, 2)] == ["VV", "VH"]
    out = tmp_path / "restored.tif"
    run("remove_clouds", {"SAR": str(s1), "OPTICAL": str(s2), "OUTPUT": str(out)})
    assert rasters.read(out).shape == (12, 120, 120)


def test_stack_bands_says_what_is_missing(provider: Any, tmp_path: Path) -> None:
    with pytest.raises(QgsProcessingException, match="no Sentinel-2 band files"):
        run("stack_bands", {"INPUT": str(tmp_path), "SENSOR": 0, "OUTPUT": str(tmp_path / "o.tif")})
    with pytest.raises(QgsProcessingException, match="exactly one VV raster"):
        run("stack_bands", {"INPUT": str(tmp_path), "SENSOR": 1, "OUTPUT": str(tmp_path / "o.tif")})
    assert not (tmp_path / "o.tif").exists()


def _triplets(folder: Path, n: int = 2, size: int = 32) -> Path:
    folder.mkdir()
    for i in range(n):
        rasters.write_s1(folder / f"t{i}_s1.tif", size, size, seed=10 + i)
        rasters.write_s2(folder / f"t{i}_s2_cloudy.tif", size, size, seed=20 + i)
        clear = rasters.s2_array(size, size, seed=20 + i, cloud=False)
        rasters.write_s2(folder / f"t{i}_s2_cloudfree.tif", size, size, array=clear)
    return folder


def test_train_model_writes_a_model_file(provider: Any, tmp_path: Path) -> None:
    data = _triplets(tmp_path / "data")
    out = tmp_path / "trained.safetensors"
    result = run("train_model", {"DATA": str(data), "EPOCHS": 1, "BATCH_SIZE": 1, "MAX_STEPS": 2, "CROP": 16,
                                 "DEVICE": 1, "OUTPUT": str(out)})
    assert Path(result["OUTPUT"]) == out and out.is_file()
    assert Path(result["RUN_DIR"]) == tmp_path / "trained_run"
    from mmcanet.modelfile import read_card

    assert read_card(out).arch == "mmcanet"


def test_train_model_rejects_an_unknown_layout(provider: Any, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(QgsProcessingException) as err:
        run("train_model", {"DATA": str(tmp_path / "empty"), "DEVICE": 1, "OUTPUT": str(tmp_path / "m.safetensors")})
    assert "empty" in str(err.value)


def test_evaluate_model_writes_metrics(provider: Any, tiny_model: Path, tmp_path: Path) -> None:
    data = _triplets(tmp_path / "data")
    result = run("evaluate_model", {"MODEL": str(tiny_model), "DATA": str(data), "DEVICE": 1,
                                    "OUTPUT_FOLDER": str(tmp_path / "eval"), "OUTPUT_HTML": str(tmp_path / "m.html")})
    assert Path(result["METRICS"]).is_file()
    assert "<table" in Path(result["OUTPUT_HTML"]).read_text(encoding="utf-8")


# ---- the plugin object -------------------------------------------------------------------------------

_KEEP: list[Any] = []


def _restore_provider(was_registered: bool) -> None:
    """Register a fresh provider again for the tests that follow (kept alive in _KEEP)."""
    if was_registered:
        from qgis.core import QgsApplication

        from mmcanet_qgis.provider import MMCANetProvider

        _KEEP.append(MMCANetProvider())
        QgsApplication.processingRegistry().addProvider(_KEEP[-1])


def test_plugin_headless_registers_only_the_provider(qgis_processing: None) -> None:
    from qgis.core import QgsApplication

    import mmcanet_qgis

    registry = QgsApplication.processingRegistry()
    existing = registry.providerById("mmcanet")
    if existing is not None:  # the session fixture's copy: take it out for this test
        registry.removeProvider(existing)
    try:
        plugin = mmcanet_qgis.classFactory(None)  # what qgis_process does
        plugin.initProcessing()
        assert registry.providerById("mmcanet") is plugin.provider
        plugin.unload()
        assert registry.providerById("mmcanet") is None
    finally:
        _restore_provider(existing is not None)


def test_plugin_gui_toggles_the_dock_and_unloads_cleanly(qgis_iface: Any, qgis_processing: None) -> None:
    from qgis.core import QgsApplication

    import mmcanet_qgis

    registry = QgsApplication.processingRegistry()
    existing = registry.providerById("mmcanet")
    if existing is not None:
        registry.removeProvider(existing)
    try:
        plugin = mmcanet_qgis.classFactory(qgis_iface)
        plugin.initGui()
        assert registry.providerById("mmcanet") is plugin.provider
        assert plugin.action is not None, "the GUI plugin has a dock toggle"
        plugin.action.setChecked(True)
        assert plugin.dock is not None and not plugin.dock.isHidden()
        plugin.action.setChecked(False)
        assert plugin.dock.isHidden()
        plugin.unload()
        assert plugin.dock is None and plugin.action is None
        assert registry.providerById("mmcanet") is None
    finally:
        _restore_provider(existing is not None)


def test_core_warnings_reach_the_warning_channel(provider: Any, tiny_model: Path, tmp_path: Path) -> None:
    """A warning of the core (here: most of the image under the given cloud mask) is a Processing warning,
    which the Processing log and the dock mark as one, not an info line; info stays info."""
    s1 = rasters.write_s1(tmp_path / "s1.tif", 40, 48)
    s2 = rasters.write_s2(tmp_path / "s2.tif", 40, 48)
    mask = np.zeros((40, 48), np.uint8)
    mask[:30] = 1  # 75 % cloud
    mask_path = rasters.write_raster(tmp_path / "mask.tif", mask, geotransform=rasters.default_geotransform())
    warnings: list[str] = []
    infos: list[str] = []

    class Recording(QgsProcessingFeedback):
        def pushWarning(self, warning: str) -> None:  # noqa: N802
            warnings.append(warning)
            super().pushWarning(warning)

        def pushInfo(self, info: str) -> None:  # noqa: N802
            infos.append(info)
            super().pushInfo(info)

    result = run("remove_clouds", {"SAR": str(s1), "OPTICAL": str(s2), "CLOUD_MASK": str(mask_path),
                                   "MODEL": str(tiny_model), "DEVICE": 1, "OUTPUT": str(tmp_path / "o.tif")},
                 feedback=Recording())
    assert result["CLOUD_FRACTION"] == pytest.approx(0.75)  # a number output, for models and batch runs
    assert any(w.startswith("75% of the valid pixels are under cloud") for w in warnings), warnings
    assert not any(i.startswith("warning: ") for i in infos), "a warning went out as info"
    assert infos, "progress lines stay on the info channel"


def _cancel_on_first_progress() -> QgsProcessingFeedback:
    feedback = QgsProcessingFeedback()
    feedback.progressChanged.connect(lambda value: value > 0 and feedback.cancel())
    return feedback


def test_cancel_stops_remove_clouds_and_leaves_no_output(
    provider: Any, tiny_model: Path, tmp_path: Path
) -> None:
    s1 = rasters.write_s1(tmp_path / "s1.tif", 96, 96)
    s2 = rasters.write_s2(tmp_path / "s2.tif", 96, 96)
    out = tmp_path / "restored.tif"
    with pytest.raises(QgsProcessingException) as err:
        run("remove_clouds", {"SAR": str(s1), "OPTICAL": str(s2), "MODEL": str(tiny_model), "DEVICE": 1,
                              "TILE_SIZE": 32, "OVERLAP": 8, "BATCH_SIZE": 1, "OUTPUT": str(out)},
            feedback=_cancel_on_first_progress())
    assert "cancel" in str(err.value).lower()
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("restored")], "no temporary file left"


@pytest.mark.parametrize("algorithm", ["detect_clouds", "simulate_clouds"])
def test_cloud_tools_report_progress_and_stop_on_cancel(provider: Any, tmp_path: Path, algorithm: str) -> None:
    """detect_clouds / simulate_clouds call the core with the feedback's progress and cancel, not an argv."""
    s2 = rasters.write_s2(tmp_path / "s2.tif", 40, 48)
    values: list[float] = []
    feedback = QgsProcessingFeedback()
    feedback.progressChanged.connect(values.append)
    run(algorithm, {"INPUT": str(s2), "OUTPUT": str(tmp_path / "done.tif")}, feedback=feedback)
    assert values and values[-1] == 100.0 and (tmp_path / "done.tif").exists()

    cancelled = QgsProcessingFeedback()
    cancelled.cancel()  # the user pressed Cancel before the first strip / step
    out = tmp_path / "cancelled.tif"
    with pytest.raises(QgsProcessingException) as err:
        run(algorithm, {"INPUT": str(s2), "OUTPUT": str(out)}, feedback=cancelled)
    assert "cancel" in str(err.value).lower()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("cancelled") or "partial" in p.name]


def test_cancel_stops_training_and_keeps_a_checkpoint(provider: Any, tmp_path: Path) -> None:
    data = _triplets(tmp_path / "data")
    out = tmp_path / "trained.safetensors"
    with pytest.raises(QgsProcessingException) as err:
        run("train_model", {"DATA": str(data), "EPOCHS": 1, "BATCH_SIZE": 1, "MAX_STEPS": 50, "CROP": 16,
                            "DEVICE": 1, "OUTPUT": str(out)}, feedback=_cancel_on_first_progress())
    assert "cancel" in str(err.value).lower()
    assert list((tmp_path / "trained_run").glob("checkpoint*")), "a checkpoint to resume from"
    result = run("train_model", {"DATA": str(data), "EPOCHS": 1, "BATCH_SIZE": 1, "MAX_STEPS": 3, "CROP": 16,
                                 "DEVICE": 1, "RESUME": True, "OUTPUT": str(out)})
    assert Path(result["OUTPUT"]).is_file()


@pytest.mark.parametrize("fails", [False, True])
def test_install_action_fills_the_private_folder_in_a_task(
    qgis_iface: Any, qgis_processing: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fails: bool
) -> None:
    import time

    from qgis.core import Qgis, QgsApplication

    import mmcanet_qgis
    from mmcanet_qgis import dependencies

    calls: list[str] = []

    def fake_install(torch: str = "cpu", log: Any = print, **_: Any) -> Path:  # pip is not run in tests
        calls.append(torch)
        log("pip output line")
        if fails:
            raise RuntimeError("pip failed (exit code 1)")
        return tmp_path

    monkeypatch.setattr(dependencies, "install", fake_install)
    qgis_iface.messageBar().clear_messages()
    plugin = mmcanet_qgis.classFactory(qgis_iface)
    task = plugin.install_dependencies(torch="cuda")
    deadline = time.time() + 30
    while plugin.install_task is not None and time.time() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.01)
    assert task is not None and calls == ["cuda"]
    bar = qgis_iface.messageBar()
    if fails:
        assert any("pip failed" in m and "dependencies.py" in m for m in bar.get_messages(Qgis.MessageLevel.Critical))
    else:
        assert any("restart QGIS" in m for m in bar.get_messages(Qgis.MessageLevel.Success))


def test_algorithms_chain_in_a_processing_model(
    provider: Any, scene: dict[str, Path], tiny_model: Path, tmp_path: Path
) -> None:
    """What a Model Designer user builds: detect_clouds -> remove_clouds (CLOUD_MASK = the detector's mask)."""
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterRasterLayer,
    )

    model = QgsProcessingModelAlgorithm("cloudfree", "tests")
    for name in ("s1", "s2"):
        model.addModelParameter(QgsProcessingParameterRasterLayer(name, name), QgsProcessingModelParameter(name))
    detect = QgsProcessingModelChildAlgorithm("mmcanet:detect_clouds")
    detect.setChildId("detect")
    detect.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromModelParameter("s2")])
    model.addChildAlgorithm(detect)
    remove = QgsProcessingModelChildAlgorithm("mmcanet:remove_clouds")
    remove.setChildId("remove")
    sources = {
        "SAR": QgsProcessingModelChildParameterSource.fromModelParameter("s1"),
        "OPTICAL": QgsProcessingModelChildParameterSource.fromModelParameter("s2"),
        "CLOUD_MASK": QgsProcessingModelChildParameterSource.fromChildOutput("detect", "OUTPUT"),
        "MODEL": QgsProcessingModelChildParameterSource.fromStaticValue(str(tiny_model)),
        "DEVICE": QgsProcessingModelChildParameterSource.fromStaticValue(1),
    }
    for key, source in sources.items():
        remove.addParameterSources(key, [source])
    output = QgsProcessingModelOutput("cloudfree")
    output.setChildId("remove")
    output.setChildOutputName("OUTPUT")
    remove.setModelOutputs({"cloudfree": output})
    model.addChildAlgorithm(remove)
    model.updateDestinationParameters()
    out = tmp_path / "cloudfree.tif"
    import processing

    result = processing.run(model, {"s1": str(scene["s1"]), "s2": str(scene["s2"]), "remove:cloudfree": str(out)})
    assert Path(result["remove:cloudfree"]) == out
    assert gdal.Open(str(out)).RasterCount == 13


class _RecordingFeedback(QgsProcessingFeedback):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def pushInfo(self, info: str) -> None:  # noqa: N802 - QGIS API
        self.lines.append(info)


def test_remove_clouds_keeps_the_model_loaded_between_runs(
    provider: Any, scene: dict[str, Path], tiny_model: Path, tmp_path: Path
) -> None:
    import os

    from mmcanet_qgis.algorithms.remove_clouds import model_cache, release_model_cache

    release_model_cache()
    cache = model_cache()
    loads = cache.loads
    logs: list[list[str]] = []
    for i in range(3):
        if i == 2:  # the file changed on disk (a retrained model saved over it): loaded again
            st = tiny_model.stat()
            os.utime(tiny_model, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        feedback = _RecordingFeedback()
        run("remove_clouds", {"SAR": str(scene["s1"]), "OPTICAL": str(scene["s2"]), "MODEL": str(tiny_model),
                              "DEVICE": 1, "OUTPUT": str(tmp_path / f"o{i}.tif")}, feedback=feedback)
        logs.append(feedback.lines)
    assert cache.loads - loads == 2, "loaded for the first run and after the file changed, reused in between"
    assert any("reusing the model loaded by the previous run" in x for x in logs[1])
    assert not any("reusing" in x for x in logs[0] + logs[2])
    assert any(x == "device: cpu" for x in logs[0]) and any(x.startswith("Ran on cpu in ") for x in logs[0])
    assert cache.cached is not None
    release_model_cache()
    assert cache.cached is None
