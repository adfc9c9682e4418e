"""One SAR units rule: the restore engine and every training / evaluation reader accept and refuse alike."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasters
from mmcanet.datasets import BigEarthNetPairs, ClearS1S2Pairs, TripletFolder, read_s1_db
from mmcanet.errors import InputError
from mmcanet.raster_read import open_raster
from mmcanet.sar_units import sar_to_db, sar_units, scene_sar_units

H = W = 48

# file contents made from the same dB field; expected units, or the refusal's key words
CASES: dict[str, tuple[Callable[[np.ndarray], np.ndarray], str]] = {
    "dB": (lambda db: db, "db"),
    "linear power": (lambda db: (10 ** (db / 10)).astype(np.float32), "linear"),
    "linear amplitude": (lambda db: (10 ** (db / 20)).astype(np.float32), "amplitude, not power"),
    "GRD digital numbers": (lambda db: np.rint(10 ** ((db + 60) / 20)).astype(np.uint16), "uncalibrated Sentinel-1 GRD"),
    "dB x 100 as int16": (lambda db: np.rint(db * 100).astype(np.int16), "scaled dB"),
    "uint8 picture": (lambda db: np.clip((db + 30) * 8, 0, 255).astype(np.uint8), "8-bit pixels"),
    "complex": (lambda db: (10 ** (db / 20)).astype(np.complex64), "complex"),
}


def _engine(path: Path) -> str:
    ds, info = open_raster(path, "SAR image")
    return scene_sar_units(ds, info, f"SAR image '{path}'")


def _triplet_reader(path: Path) -> str:
    db, _ = read_s1_db(path)
    return "db" if np.allclose(db, rasters.s1_array(H, W), atol=1e-3, equal_nan=True) else "wrong values"


def _bigearthnet_reader(arr: np.ndarray, root: Path) -> str:
    s2 = root / "S2P"
    s2.mkdir(parents=True)
    for i, band in enumerate(("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")):
        rasters.write_raster(s2 / f"S2P_{band}.tif", rasters.s2_array(H, W, bands=12)[i:i + 1],
                             geotransform=rasters.default_geotransform())
    s1 = root / "S1P"
    s1.mkdir()
    for i, pol in enumerate(("VV", "VH")):
        rasters.write_raster(s1 / f"S1P_{pol}.tif", arr[i:i + 1], geotransform=rasters.default_geotransform())
    (s1 / "S1P_labels_metadata.json").write_text(json.dumps({"corresponding_s2_patch": "S2P"}))
    sample = BigEarthNetPairs(root)[0]
    expected = BigEarthNetPairs(root).normalization.s1_to_unit(rasters.s1_array(H, W))
    return "db" if np.allclose(sample["s1"].numpy(), expected, atol=1e-4) else "wrong values"


@pytest.mark.parametrize("case", sorted(CASES))
def test_engine_and_readers_agree_on_every_kind_of_sar(tmp_path: Path, case: str) -> None:
    make, expected = CASES[case]
    arr = make(rasters.s1_array(H, W))
    path = rasters.write_raster(tmp_path / "x_s1.tif", arr, geotransform=rasters.default_geotransform(),
                                descriptions=("VV", "VH"))
    if expected in ("db", "linear"):
        assert _engine(path) == expected
        assert _triplet_reader(path) == "db"  # linear power arrives in dB, as the engine converts it
        assert _bigearthnet_reader(arr, tmp_path / "ben") == "db"
        return
    for name, read in (("engine", lambda: _engine(path)), ("sample reader", lambda: read_s1_db(path)),
                       ("BigEarthNet reader", lambda: _bigearthnet_reader(arr, tmp_path / "ben"))):
        with pytest.raises(InputError, match=expected) as err:
            read()
        assert "x_s1.tif" in str(err.value) or "S1P" in str(err.value), name  # names the input


def test_declared_units_skip_the_guess_but_not_the_plausibility_checks() -> None:
    power = (10 ** (rasters.s1_array(H, W) / 20)).astype(np.float32)  # amplitude, declared as power
    assert sar_units(power, np.dtype(np.float32), "sar", declared="linear") == "linear"
    assert sar_units(rasters.s1_array(H, W), np.dtype(np.float32), "sar", declared="linear") == "linear"
    dn = np.full((2, 8, 8), 400, np.uint16)
    with pytest.raises(InputError, match="uncalibrated"):
        sar_units(dn, np.dtype(np.uint16), "sar", declared="db")


def test_non_positive_power_is_missing_not_minus_100_db() -> None:
    power = np.array([[1.0, 0.1, 0.0, -1.0, np.nan]], np.float32)
    db = sar_to_db(power, "linear")
    np.testing.assert_allclose(db[0, :2], [0.0, -10.0], atol=1e-6)
    assert np.isnan(db[0, 2:]).all()


def test_pair_reader_flags_zero_power_invalid(tmp_path: Path) -> None:
    power = (10 ** (rasters.s1_array(H, W) / 10)).astype(np.float32)
    power[:, :3, :5] = 0.0  # no signal recorded: missing, as the engine treats it
    rasters.write_raster(tmp_path / "a_s1.tif", power, geotransform=rasters.default_geotransform())
    rasters.write_s2(tmp_path / "a_s2.tif", H, W)
    sample = ClearS1S2Pairs(tmp_path)[0]
    valid = sample["valid"][0].numpy()
    assert (valid[:3, :5] == 0).all() and valid[3:, 5:].mean() > 0.9


def test_triplet_folder_refuses_grd_numbers_when_read(tmp_path: Path) -> None:
    dn = np.random.default_rng(0).integers(80, 600, size=(2, H, W)).astype(np.uint16)
    rasters.write_raster(tmp_path / "t_s1.tif", dn)
    rasters.write_s2(tmp_path / "t_s2_cloudy.tif", H, W)
    rasters.write_s2(tmp_path / "t_s2_cloudfree.tif", H, W)
    with pytest.raises(InputError, match="t_s1.tif.*uint16 values.*uncalibrated Sentinel-1 GRD"):
        TripletFolder(tmp_path, use_mask_files=False)[0]


def test_every_real_sar_file_is_db_for_engine_and_reader(shared_data: Path) -> None:
    files = sorted(shared_data.glob("*/*_s1.tif"))
    assert len(files) >= 10
    for f in files:
        assert _engine(f) == "db", f
        db, invalid = read_s1_db(f)
        assert (~invalid).mean() > 0.5 and -40 < float(np.nanmedian(db)) < 5, f
