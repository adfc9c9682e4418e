"""Processing algorithms in a real QGIS, checked by value: CLOUD_MASK decides what is kept, and a
Model Designer chain (detect_clouds -> remove_clouds) gives exactly what the two steps give by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasters

pytestmark = pytest.mark.qgis


def run(algorithm: str, parameters: dict[str, Any]) -> dict[str, Any]:
    import processing

    return processing.run(f"mmcanet:{algorithm}", parameters)


def _remove(scene: dict[str, Path], model: Path, out: Path, **extra: Any) -> np.ndarray:
    params = {"SAR": str(scene["s1"]), "OPTICAL": str(scene["s2"]), "MODEL": str(model), "DEVICE": 1,
              "OUTPUT": str(out), **extra}
    run("remove_clouds", params)
    return rasters.read(out)


def test_cloud_mask_decides_what_is_kept(provider: Any, scene: dict[str, Path], tiny_model: Path, tmp_path: Path) -> None:
    src = rasters.read(scene["s2"])
    h, w = src.shape[1:]
    clear = rasters.write_mask(tmp_path / "clear.tif", np.zeros((h, w), np.uint8))
    half = np.zeros((h, w), np.uint8)
    half[:, w // 2 :] = 1
    right = rasters.write_mask(tmp_path / "right.tif", half)

    detected = _remove(scene, tiny_model, tmp_path / "detected.tif", KEEP_CLEAR=True)
    all_clear = _remove(scene, tiny_model, tmp_path / "clear_out.tif", CLOUD_MASK=str(clear), KEEP_CLEAR=True)
    right_half = _remove(scene, tiny_model, tmp_path / "right_out.tif", CLOUD_MASK=str(right), KEEP_CLEAR=True)

    assert not np.array_equal(detected, src), "without a mask the detector finds the generated cloud blob"
    np.testing.assert_array_equal(all_clear, src)  # the given mask says clear everywhere: every pixel kept
    margin = w // 2 - 5  # the feathered edge (2 x feather px) next to the masked half
    np.testing.assert_array_equal(right_half[:, :, :margin], src[:, :, :margin])
    changed = (right_half[:, :, w // 2 :] != src[:, :, w // 2 :]).any(axis=0)
    assert changed.mean() > 0.95, "the masked half went through the model"


def test_keep_clear_off_restores_even_where_the_mask_is_clear(
    provider: Any, scene: dict[str, Path], tiny_model: Path, tmp_path: Path
) -> None:
    src = rasters.read(scene["s2"])
    clear = rasters.write_mask(tmp_path / "clear.tif", np.zeros(src.shape[1:], np.uint8))
    out = _remove(scene, tiny_model, tmp_path / "o.tif", CLOUD_MASK=str(clear), KEEP_CLEAR=False)
    assert (out != src).any(axis=0).mean() > 0.95


def _chain(tiny_model: Path) -> Any:
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
    mask_out = QgsProcessingModelOutput("mask")
    mask_out.setChildId("detect")
    mask_out.setChildOutputName("OUTPUT")
    detect.setModelOutputs({"mask": mask_out})
    model.addChildAlgorithm(detect)
    remove = QgsProcessingModelChildAlgorithm("mmcanet:remove_clouds")
    remove.setChildId("remove")
    sources = {
        "SAR": QgsProcessingModelChildParameterSource.fromModelParameter("s1"),
        "OPTICAL": QgsProcessingModelChildParameterSource.fromModelParameter("s2"),
        "CLOUD_MASK": QgsProcessingModelChildParameterSource.fromChildOutput("detect", "OUTPUT"),
        "MODEL": QgsProcessingModelChildParameterSource.fromStaticValue(str(tiny_model)),
        "DEVICE": QgsProcessingModelChildParameterSource.fromStaticValue(1),
        "KEEP_CLEAR": QgsProcessingModelChildParameterSource.fromStaticValue(True),
    }
    for key, source in sources.items():
        remove.addParameterSources(key, [source])
    output = QgsProcessingModelOutput("cloudfree")
    output.setChildId("remove")
    output.setChildOutputName("OUTPUT")
    remove.setModelOutputs({"cloudfree": output})
    model.addChildAlgorithm(remove)
    model.updateDestinationParameters()
    return model


def test_model_designer_chain_equals_the_two_steps_by_hand(
    provider: Any, scene: dict[str, Path], tiny_model: Path, tmp_path: Path
) -> None:
    import processing

    out, mask = tmp_path / "chain.tif", tmp_path / "chain_mask.tif"
    result = processing.run(_chain(tiny_model), {"s1": str(scene["s1"]), "s2": str(scene["s2"]),
                                                 "remove:cloudfree": str(out), "detect:mask": str(mask)})
    assert Path(result["remove:cloudfree"]) == out and Path(result["detect:mask"]) == mask

    by_hand_mask = tmp_path / "mask.tif"
    run("detect_clouds", {"INPUT": str(scene["s2"]), "OUTPUT": str(by_hand_mask)})
    np.testing.assert_array_equal(rasters.read(mask), rasters.read(by_hand_mask))
    by_hand = _remove(scene, tiny_model, tmp_path / "by_hand.tif", CLOUD_MASK=str(by_hand_mask), KEEP_CLEAR=True)
    chained, src = rasters.read(out), rasters.read(scene["s2"])
    np.testing.assert_array_equal(chained, by_hand)

    cloud = rasters.read(mask)[0] != 0
    assert 0 < cloud.mean() < 0.5, "the detector found the generated blob and not the whole scene"
    assert (chained[:, cloud] != src[:, cloud]).any(axis=0).mean() > 0.95  # clouds restored
    grown = np.zeros_like(cloud)
    ys, xs = np.nonzero(cloud)
    for y, x in zip(ys, xs, strict=True):  # beyond the feathered edge (2 x feather = 4 px): kept exactly
        grown[max(0, y - 4) : y + 5, max(0, x - 4) : x + 5] = True
    far = ~grown
    np.testing.assert_array_equal(chained[:, far], src[:, far])
