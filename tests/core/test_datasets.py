"""Dataset readers: layouts, exact SEN12MS-CR split matching, errors, NaN handling, augmentation ops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from mmcanet.augment import DIHEDRAL_OPS, augment_arrays, dihedral
from mmcanet.datasets import (
    B10_FILL_DN,
    BigEarthNetPairs,
    ClearS1S2Pairs,
    CloudyClearPairs,
    Sen12MSCR,
    TripletFolder,
    detect_layout,
    index_sen12mscr,
    list_triplet_ids,
    open_source,
    sample_keys,
    sen12mscr_split_of,
)
from mmcanet.errors import InputError
from mmcanet.normalization import Normalization
from osgeo import gdal

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def write_tif(path: Path, data: np.ndarray, nodata: float | None = None, names: list[str] | None = None) -> Path:
    """Write a (bands, H, W) array as GeoTIFF (uint16 for integer data, float32 otherwise)."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    gtype = gdal.GDT_UInt16 if data.dtype.kind in "ui" else gdal.GDT_Float32
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = gdal.GetDriverByName("GTiff").Create(str(path), data.shape[2], data.shape[1], data.shape[0], gtype)
    for i in range(data.shape[0]):
        band = ds.GetRasterBand(i + 1)
        band.WriteArray(data[i])
        if nodata is not None:
            band.SetNoDataValue(nodata)
        if names:
            band.SetDescription(names[i])
    ds.FlushCache()
    ds = None
    return path


def fake_s2(rng: np.random.Generator, size: int = 16, bands: int = 13) -> np.ndarray:
    return rng.integers(200, 3000, size=(bands, size, size)).astype(np.uint16)


def fake_s1(rng: np.random.Generator, size: int = 16) -> np.ndarray:
    return rng.uniform(-30, -2, size=(2, size, size)).astype(np.float32)


def make_triplets(root: Path, ids: list[str], *, mask: bool = True, s1: bool = True, size: int = 16) -> None:
    rng = np.random.default_rng(0)
    for sid in ids:
        write_tif(root / f"{sid}_s2_cloudy.tif", fake_s2(rng, size))
        write_tif(root / f"{sid}_s2_cloudfree.tif", fake_s2(rng, size))
        if s1:
            write_tif(root / f"{sid}_s1.tif", fake_s1(rng, size))
        if mask:
            write_tif(root / f"{sid}_cloudmask.tif", (rng.random((size, size)) > 0.5).astype(np.uint8))


def make_sen12mscr(root: Path, scenes: dict[str, list[int]], patches: tuple[int, ...] = (30, 31), merged: bool = False) -> None:
    """Fake SEN12MS-CR tree: official layout (season_s1/s1_N ...) or merged (season/s1_N, s2_N, s2_cloudy_N)."""
    rng = np.random.default_rng(1)
    for season, nums in scenes.items():
        for n in nums:
            for p in patches:
                for kind in ("s1", "s2", "s2_cloudy"):
                    folder = root / (season if merged else f"{season}_{kind}") / f"{kind}_{n}"
                    data = fake_s1(rng, 8) if kind == "s1" else fake_s2(rng, 8)
                    write_tif(folder / f"{season}_{kind}_{n}_p{p}.tif", data)


# ------------------------------------------------------------------ SEN12MS-CR split


@pytest.mark.parametrize("merged", [False, True])
def test_sen12mscr_test_scene_never_in_train(tmp_path: Path, merged: bool) -> None:
    # scene 1 (train) is a substring of test scene 106: a substring matcher would leak 106 into train
    make_sen12mscr(tmp_path, {"ROIs1158_spring": [1, 106, 17], "ROIs1970_fall": [1, 139]}, merged=merged)
    train = index_sen12mscr(tmp_path, "train")
    test = index_sen12mscr(tmp_path, "test")
    val = index_sen12mscr(tmp_path, "val")
    assert {(p.season, p.scene) for p in train} == {("ROIs1158_spring", 1), ("ROIs1970_fall", 1)}
    assert {(p.season, p.scene) for p in test} == {("ROIs1158_spring", 106), ("ROIs1970_fall", 139)}
    assert {(p.season, p.scene) for p in val} == {("ROIs1158_spring", 17)}
    assert not {p.s1 for p in train} & {p.s1 for p in test}
    assert len(index_sen12mscr(tmp_path, "all")) == len(train) + len(test) + len(val) == 5 * 2
    ds = Sen12MSCR(tmp_path, split="train")
    assert all("_106_" not in i and "_139_" not in i for i in ds.ids)
    s = ds[0]
    assert set(s) == set(sample_keys())
    assert s["s2_cloudy"].shape == (13, 8, 8) and s["s1"].shape == (2, 8, 8)
    assert s["has_sar"].item() == 1.0


def test_sen12mscr_split_table() -> None:
    for season, scene in [("ROIs1158_spring", 106), ("ROIs1158_spring", 31), ("ROIs2017_winter", 63)]:
        assert sen12mscr_split_of(season, scene) == "test"
    assert sen12mscr_split_of("ROIs1158_spring", 1) == "train"
    assert sen12mscr_split_of("ROIs1158_spring", 10) == "train"
    assert sen12mscr_split_of("ROIs2017_winter", 6) == "train"  # substring of 63
    assert sen12mscr_split_of("ROIs1868_summer", 19) == "val"
    assert sen12mscr_split_of("ROIs1970_fall", 106) == "train"  # 106 is a test scene only in spring


def test_sen12mscr_missing_counterpart_raises(tmp_path: Path) -> None:
    make_sen12mscr(tmp_path, {"ROIs1158_spring": [1]})
    victim = tmp_path / "ROIs1158_spring_s2_cloudy" / "s2_cloudy_1" / "ROIs1158_spring_s2_cloudy_1_p31.tif"
    victim.unlink()
    with pytest.raises(InputError, match="ROIs1158_spring_s2_cloudy_1_p31.tif"):
        Sen12MSCR(tmp_path, split="train")
    assert len(Sen12MSCR(tmp_path, split="train", skip_incomplete=True)) == 1
    with pytest.raises(InputError, match="no SEN12MS-CR patches"):
        Sen12MSCR(tmp_path, split="test")


# ------------------------------------------------------------------ triplet folders


def test_triplet_folder_reads_and_normalises(tmp_path: Path) -> None:
    make_triplets(tmp_path, ["a1", "a10", "a2"])
    assert list_triplet_ids(tmp_path) == ["a1", "a2", "a10"]
    ds = TripletFolder(tmp_path)
    assert len(ds) == 3
    s = ds[1]
    assert s["id"] == "a2"
    raw = gdal.Open(str(tmp_path / "a2_s2_cloudy.tif")).ReadAsArray()
    np.testing.assert_allclose(s["s2_cloudy"].numpy(), raw / 10000.0, atol=1e-6)
    raw_s1 = gdal.Open(str(tmp_path / "a2_s1.tif")).ReadAsArray()
    expect_vv = np.clip((raw_s1[0] + 25.0) / 25.0, 0, 1)
    np.testing.assert_allclose(s["s1"][0].numpy(), expect_vv, atol=1e-6)
    mask = gdal.Open(str(tmp_path / "a2_cloudmask.tif")).ReadAsArray()
    np.testing.assert_array_equal(s["mask"][0].numpy(), mask.astype(np.float32))
    for k in ("s1", "s2_cloudy", "s2_clear", "mask", "valid"):
        assert s[k].dtype == torch.float32
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["s2_clear"].shape == (3, 13, 16, 16) and batch["has_sar"].shape == (3,)


def test_triplet_folder_custom_normalization(tmp_path: Path) -> None:
    make_triplets(tmp_path, ["x"])
    s = TripletFolder(tmp_path, normalization=Normalization(s2_max_dn=2000.0))[0]
    raw = gdal.Open(str(tmp_path / "x_s2_cloudfree.tif")).ReadAsArray()
    np.testing.assert_allclose(s["s2_clear"].numpy(), np.clip(raw / 2000.0, 0, 1), atol=1e-6)


def test_triplet_folder_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no '\\*_s2_cloudy.tif'"):
        TripletFolder(tmp_path)
    make_triplets(tmp_path, ["ok", "bad"])
    (tmp_path / "bad_s2_cloudfree.tif").unlink()
    with pytest.raises(InputError, match="bad_s2_cloudfree.tif"):
        TripletFolder(tmp_path)
    write_tif(tmp_path / "bad_s2_cloudfree.tif", fake_s2(np.random.default_rng(0), bands=4))
    with pytest.raises(InputError, match="bad_s2_cloudfree.tif.*13"):
        TripletFolder(tmp_path)
    (tmp_path / "bad_s2_cloudfree.tif").write_bytes(b"not a tiff")
    with pytest.raises(InputError, match="bad_s2_cloudfree.tif"):
        TripletFolder(tmp_path)


def test_nan_and_nodata_become_zero_and_invalid(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    s1 = fake_s1(rng)
    s1[0, 2, 3] = np.nan
    cloudy = fake_s2(rng)
    cloudy[:, 5, 5] = 0  # all-zero S2 pixel = no data
    clear = fake_s2(rng)
    clear[4, 7, 1] = 65535
    write_tif(tmp_path / "n_s1.tif", s1)
    write_tif(tmp_path / "n_s2_cloudy.tif", cloudy)
    write_tif(tmp_path / "n_s2_cloudfree.tif", clear, nodata=65535)
    s = TripletFolder(tmp_path)[0]
    for k in ("s1", "s2_cloudy", "s2_clear", "mask"):
        assert torch.isfinite(s[k]).all()
    valid = s["valid"][0].numpy()
    assert valid[2, 3] == 0 and valid[5, 5] == 0 and valid[7, 1] == 0
    assert valid.sum() == 16 * 16 - 3
    assert s["s1"][0, 2, 3] == 0 and s["s2_clear"][4, 7, 1] == 0


def test_pairs_without_sar_use_detector(tmp_path: Path) -> None:
    make_triplets(tmp_path, ["p"], mask=False, s1=False, size=32)
    # overwrite the cloudy image with a bright white block (cloud) on dark vegetation-like ground
    ground = np.zeros((13, 32, 32), np.uint16)
    ground[:] = np.array([900, 700, 600, 400, 900, 2000, 2500, 2800, 2900, 800, 15, 1500, 700])[:, None, None]
    ground[:, 8:20, 8:20] = 6000
    ground[10, 8:20, 8:20] = 300
    write_tif(tmp_path / "p_s2_cloudy.tif", ground)
    with pytest.raises(InputError, match="p_s1.tif"):
        TripletFolder(tmp_path)
    s = CloudyClearPairs(tmp_path)[0]
    assert s["has_sar"].item() == 0.0 and float(s["s1"].abs().sum()) == 0.0
    m = s["mask"][0].numpy()
    assert m[10:18, 10:18].min() == 1.0 and m[26:, :6].max() == 0.0


def test_l2a_twelve_bands_get_b10(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    names = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12"]
    data = fake_s2(rng, bands=12)
    # write in a shuffled band order with descriptions: the reader must re-order by name
    perm = rng.permutation(12)
    write_tif(tmp_path / "l_s2_cloudy.tif", data[perm], names=[names[i] for i in perm])
    write_tif(tmp_path / "l_s2_cloudfree.tif", data)
    s = CloudyClearPairs(tmp_path, use_mask_files=False)[0]
    cl = s["s2_cloudy"].numpy()
    np.testing.assert_allclose(cl[10], B10_FILL_DN / 10000.0, atol=1e-7)
    np.testing.assert_allclose(cl[[i for i in range(13) if i != 10]], data / 10000.0, atol=1e-6)
    np.testing.assert_array_equal(s["s2_cloudy"].numpy(), s["s2_clear"].numpy())


def test_dihedral_ops_distinct_and_shared() -> None:
    x = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    outs = {dihedral(x, k).tobytes() for k in range(DIHEDRAL_OPS)}
    assert len(outs) == 8
    rng = np.random.default_rng(0)
    res = augment_arrays({"a": x, "b": x[:1].copy()}, rng, crop=2)
    np.testing.assert_array_equal(res["a"][:1], res["b"])


# ------------------------------------------------------------------ real data (../shared/data)


def _need(folder: str) -> Path:
    p = SHARED / folder
    if not p.exists():
        pytest.skip(f"needs real data at {p} (../shared/data is absent)")
    return p


def test_real_triplets() -> None:
    root = _need("sen12mscr-triplets")
    ds = TripletFolder(root)
    assert len(ds) == 8
    s = ds[2]
    assert s["s2_cloudy"].shape == (13, 256, 256) and s["s1"].shape == (2, 256, 256)
    assert float(s["s2_clear"].min()) >= 0.0 and float(s["s2_clear"].max()) <= 1.0
    assert float(s["s1"].std()) > 0.01


def test_real_bigearthnet() -> None:
    root = _need("bigearthnet-s1s2")
    ds = BigEarthNetPairs(root)
    assert len(ds) == 6
    s = ds[0]
    assert s["s2_clear"].shape == (13, 120, 120)
    assert s["has_sar"].item() == 1.0 and float(s["s1"].std()) > 0.01
    np.testing.assert_allclose(s["s2_clear"][10].numpy(), B10_FILL_DN / 10000.0)
    # 60 m band B1 was resampled (smooth) to 120 x 120, 10 m band B2 kept as is
    b2 = gdal.Open(str(ds.s2_dirs[0] / f"{ds.s2_dirs[0].name}_B02.tif")).ReadAsArray()
    np.testing.assert_allclose(s["s2_clear"][1].numpy(), b2 / 10000.0, atol=1e-6)


def test_clear_s1s2_pairs_read_values_and_simulate(tmp_path: Path) -> None:
    """Clear S1+S2 pairs: values normalised as DN/10000, S1 NaN flagged invalid, always simulated."""
    rng = np.random.default_rng(3)
    s2 = fake_s2(rng)
    s1 = fake_s1(rng)
    s1[1, 2, 3] = np.nan  # VH only
    write_tif(tmp_path / "a_s2.tif", s2)
    write_tif(tmp_path / "a_s1.tif", s1)
    write_tif(tmp_path / "lonely_s2.tif", fake_s2(rng))  # no S1: not a pair, left out
    assert detect_layout(tmp_path) == "s1s2"
    reader, simulate = open_source(tmp_path)
    assert simulate and isinstance(reader, ClearS1S2Pairs) and reader.ids == ["a"]
    s = reader[0]
    np.testing.assert_allclose(s["s2_clear"].numpy(), s2 / 10000.0, atol=1e-6)
    assert torch.equal(s["s2_cloudy"], s["s2_clear"]) and float(s["mask"].sum()) == 0.0
    assert s["has_sar"].item() == 1.0
    assert s["valid"][0, 2, 3].item() == 0.0 and float(s["valid"].sum()) == 16 * 16 - 1


def test_clear_s1s2_pairs_size_mismatch_names_the_pair(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    write_tif(tmp_path / "b_s2.tif", fake_s2(rng, 16))
    write_tif(tmp_path / "b_s1.tif", fake_s1(rng, 8))
    with pytest.raises(InputError, match="'b'.*co-registered"):
        ClearS1S2Pairs(tmp_path)


def test_real_s1s2_pairs() -> None:
    root = _need("s1s2-pairs")
    reader, simulate = open_source(root, exclude=["terramind_609U_541L_3_0"])
    assert simulate and len(reader) == len(ClearS1S2Pairs(root).ids) - 1
    s = reader[0]
    assert s["s2_clear"].shape[0] == 13 and s["s1"].shape[1:] == s["s2_clear"].shape[1:]
    assert 0.02 < float(s["s2_clear"][1:4].mean()) < 0.3 and float(s["s1"].std()) > 0.01
