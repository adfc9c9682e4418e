"""Scene-level cloud tools: detect_scene / simulate_scene report progress, stop on cancel, leave no partial file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasters
from mmcanet.clouds.scene import detect_scene, simulate_scene
from mmcanet.errors import CancelledError, InputError


def cancel_after(calls: int) -> tuple[list[int], object]:
    """An is_canceled callable that answers True from its ``calls + 1``-th call on."""
    seen = [0]

    def is_canceled() -> bool:
        seen[0] += 1
        return seen[0] > calls

    return seen, is_canceled


def test_detect_in_strips_equals_one_strip_and_reports_progress(make_s2, tmp_path: Path) -> None:  # noqa: ANN001
    s2 = make_s2(height=70, width=50)
    one, strips = tmp_path / "one.tif", tmp_path / "strips.tif"
    detect_scene(s2, one)
    fractions: list[float] = []
    res = detect_scene(s2, strips, strip_rows=16, progress=fractions.append)
    np.testing.assert_array_equal(rasters.read(strips), rasters.read(one))
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and len(fractions) == 2 + 5  # 70 rows / 16 = 5 strips
    assert fractions == sorted(fractions)
    mask = rasters.read(strips)[0]
    valid = mask != 255
    assert res.cloud_fraction == pytest.approx(float((mask[valid] == 1).mean()))
    assert res.output == strips


def test_detect_cancel_mid_scene_leaves_nothing(make_s2, tmp_path: Path) -> None:  # noqa: ANN001
    s2 = make_s2(height=70, width=50)
    seen, is_canceled = cancel_after(2)  # two strips written, the third is refused
    with pytest.raises(CancelledError):
        detect_scene(s2, tmp_path / "mask.tif", strip_rows=16, is_canceled=is_canceled)
    assert seen[0] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s2.tif"]


def test_detect_rejects_bad_settings_before_reading(make_s2, tmp_path: Path) -> None:  # noqa: ANN001
    with pytest.raises(InputError, match="dilation"):
        detect_scene(make_s2(), tmp_path / "m.tif", dilation=-1)


@pytest.mark.parametrize("calls", [0, 1, 2])
def test_simulate_cancel_at_each_step_leaves_nothing(make_s2, tmp_path: Path, calls: int) -> None:  # noqa: ANN001
    """Cancelled after reading, after simulating, or before committing: neither output remains."""
    clear = make_s2(name="clear.tif", height=40, width=48)
    _, is_canceled = cancel_after(calls)
    with pytest.raises(CancelledError):
        simulate_scene(clear, tmp_path / "cloudy.tif", opacity_output=tmp_path / "opacity.tif", is_canceled=is_canceled)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clear.tif"]


def test_simulate_reports_progress_and_is_seeded(make_s2, tmp_path: Path) -> None:  # noqa: ANN001
    clear = make_s2(name="clear.tif", height=40, width=48)
    fractions: list[float] = []
    a = simulate_scene(clear, tmp_path / "a.tif", seed=3, coverage=0.4, thickness="thick", progress=fractions.append)
    b = simulate_scene(clear, tmp_path / "b.tif", seed=3, coverage=0.4, thickness="thick")
    np.testing.assert_array_equal(rasters.read(a.output), rasters.read(b.output))
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert a.opacity_output is None and 0.0 < a.cloud_fraction <= 1.0


def test_simulate_rejects_bad_settings_before_reading(make_s2, tmp_path: Path) -> None:  # noqa: ANN001
    clear = make_s2(name="clear.tif")
    with pytest.raises(InputError, match="thickness"):
        simulate_scene(clear, tmp_path / "x.tif", thickness="fog")
    with pytest.raises(InputError, match="coverage"):
        simulate_scene(clear, tmp_path / "x.tif", coverage=1.5)


def test_detected_mask_gets_class_preserving_overviews(make_s2, tmp_path: Path) -> None:  # noqa: ANN001
    """A mask >= 1024 px wide gets overviews like every output; their pixels are classes (nearest), not means."""
    from osgeo import gdal

    s2 = make_s2(height=40, width=1024)
    detect_scene(s2, tmp_path / "mask.tif")
    ds = gdal.Open(str(tmp_path / "mask.tif"))
    band = ds.GetRasterBand(1)
    assert band.GetOverviewCount() == 2
    mask = band.ReadAsArray()
    assert len(np.unique(mask)) > 1  # something to resample
    for k in range(2):  # every overview pixel is one of the mask's own pixels (nearest)
        np.testing.assert_array_equal(band.GetOverview(k).ReadAsArray(), mask[:: 2 ** (k + 1), :: 2 ** (k + 1)])
