"""Cloud detector backends: the rule-based one always, ukis-csmask / s2cloudless only where installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mmcanet.clouds.backends import get_detector, missing_packages, resolve
from mmcanet.clouds.detect import detect_clouds
from mmcanet.errors import InputError

REF = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cloud-reference" / "ukis_sentinel2.npz"


def _reference() -> tuple[np.ndarray, np.ndarray]:
    if not REF.exists():
        pytest.skip(f"real reference mask {REF} not found (needs ../shared/data)")
    d = np.load(REF)
    img = d["img"]
    s2 = np.zeros((13, *img.shape[:2]), np.float32)
    for i, b in enumerate((1, 2, 3, 7, 11, 12)):
        s2[b] = img[..., i]
    return s2, d["msk"][..., 0]


def _iou(p: np.ndarray, r: np.ndarray) -> float:
    return float((p & r).sum() / max((p | r).sum(), 1))


def test_rules_backend_is_the_rule_detector() -> None:
    s2, _ = _reference()
    m, ref = get_detector("rules")(s2), detect_clouds(s2)
    assert np.array_equal(m.cloud, ref.cloud) and np.array_equal(m.shadow, ref.shadow)


def test_auto_resolves_to_the_built_in_detector() -> None:
    name, note = resolve("auto")
    assert name == "rules" and note is None


def test_unknown_detector_and_wrong_band_count_are_input_errors() -> None:
    with pytest.raises(InputError, match="unknown"):
        resolve("fmask")
    with pytest.raises(InputError, match="13 or 12"):
        get_detector("rules")(np.zeros((4, 8, 8), np.float32))


@pytest.mark.skipif(not missing_packages("ukis"), reason="ukis-csmask is installed")
def test_named_detector_not_installed_says_how_to_install() -> None:
    with pytest.raises(InputError, match="pip install ukis-csmask"):
        resolve("ukis")


@pytest.mark.skipif(bool(missing_packages("ukis")), reason="optional package ukis-csmask not installed")
def test_ukis_finds_reference_clouds_and_shadows() -> None:
    s2, ref = _reference()
    m = get_detector("ukis")(s2)
    assert m.cloud.shape == ref.shape and not (m.cloud & m.shadow).any()
    assert _iou(m.cloud, ref == 4) > 0.6 and _iou(m.shadow, ref == 0) > 0.5


@pytest.mark.skipif(bool(missing_packages("s2cloudless")), reason="optional package s2cloudless not installed")
def test_s2cloudless_rejects_l2a_with_a_clear_message() -> None:
    with pytest.raises(InputError, match="13-band Level-1C"):
        get_detector("s2cloudless")(np.zeros((12, 32, 32), np.float32))
