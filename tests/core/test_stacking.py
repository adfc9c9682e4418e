"""Inputs as one file per band: SAFE-like products, band folders (BigEarthNet), VV/VH folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mmcanet.bands import S2_BANDS_L1C, S2_BANDS_L2A
from mmcanet.errors import InputError
from mmcanet.inference import RestoreOptions, restore_scene
from mmcanet.stacking import release, resolve_optical, resolve_sar
from osgeo import gdal

GEOREF_S2 = "sen12mscr-georef/ROIs1868_summer_19_p30_s2_cloudy.tif"
GEOREF_S1 = "sen12mscr-georef/ROIs1868_summer_19_p30_s1.tif"
RES = {"B1": 60, "B2": 10, "B3": 10, "B4": 10, "B5": 20, "B6": 20, "B7": 20, "B8": 10, "B8A": 20, "B9": 60,
       "B10": 60, "B11": 20, "B12": 20}


def _file_token(band: str) -> str:
    return "B8A" if band == "B8A" else f"B{int(band[1:]):02d}"


def _write_band(src: gdal.Dataset, index: int, path: Path, res: int) -> None:
    """Band ``index`` (1-based) of ``src`` (10 m) as a single-band GeoTIFF at ``res`` m (averaged)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    opts = gdal.TranslateOptions(bandList=[index], xRes=res, yRes=res, resampleAlg="average", format="GTiff")
    gdal.Translate(str(path), src, options=opts)


def make_safe(root: Path, s2: Path, level: str = "L1C") -> Path:
    """A SAFE-like product from a real 13-band 10 m patch: per-band files at native resolutions, QI masks."""
    src = gdal.Open(str(s2))
    safe = root / f"S2A_MSI{level}_20190601T103031_N0207_R108_T31TCJ_20190601T124435.SAFE"
    granule = safe / "GRANULE" / f"{level}_T31TCJ_A020000_20190601T103418"
    bands = S2_BANDS_L1C if level == "L1C" else S2_BANDS_L2A
    for band in bands:
        i = S2_BANDS_L1C.index(band) + 1
        token = _file_token(band)
        if level == "L1C":
            _write_band(src, i, granule / "IMG_DATA" / f"T31TCJ_20190601T103031_{token}.tif", RES[band])
        else:  # L2A: every band at its native resolution and the coarser ones (as in a real product)
            for r in (10, 20, 60):
                if r >= RES[band] and not (r == 10 and RES[band] != 10):
                    _write_band(src, i, granule / "IMG_DATA" / f"R{r}m" / f"T31TCJ_20190601T103031_{token}_{r}m.tif", r)
    _write_band(src, 1, granule / "QI_DATA" / "MSK_DETFOO_B01.tif", 60)  # a mask, not a band
    (safe / f"MTD_MSI{level}.xml").write_text("<metadata/>")
    return safe


def _read(name: str) -> tuple[np.ndarray, gdal.Dataset]:
    ds = gdal.Open(name)
    return ds.ReadAsArray(), ds


def test_safe_l1c_stacks_13_bands_on_the_10m_grid(shared_data: Path, tmp_path: Path) -> None:
    s2 = shared_data / GEOREF_S2
    safe = make_safe(tmp_path, s2)
    for given in (safe, safe / "MTD_MSIL1C.xml", f"SENTINEL2_L1C:{safe / 'MTD_MSIL1C.xml'}:10m:EPSG_32631"):
        name = resolve_optical(given)
        try:
            arr, ds = _read(name)
            ref = gdal.Open(str(s2))
            assert arr.shape == (13, 256, 256)
            assert [ds.GetRasterBand(i + 1).GetDescription() for i in range(13)] == list(S2_BANDS_L1C)
            assert ds.GetGeoTransform() == pytest.approx(ref.GetGeoTransform())
            for band in ("B2", "B3", "B4", "B8"):  # 10 m bands come back unchanged
                i = S2_BANDS_L1C.index(band)
                np.testing.assert_array_equal(arr[i], ref.GetRasterBand(i + 1).ReadAsArray())
            b11 = arr[S2_BANDS_L1C.index("B11")].astype(float)  # 20 m band resampled: close to the original
            orig = ref.GetRasterBand(S2_BANDS_L1C.index("B11") + 1).ReadAsArray().astype(float)
            assert np.corrcoef(b11.ravel(), orig.ravel())[0, 1] > 0.9
        finally:
            ds = None
            release(name)


def test_safe_l2a_takes_the_finest_file_of_each_band(shared_data: Path, tmp_path: Path) -> None:
    safe = make_safe(tmp_path, shared_data / GEOREF_S2, level="L2A")
    name = resolve_optical(safe / "MTD_MSIL2A.xml")
    try:
        ds = gdal.Open(name)
        assert (ds.RasterCount, ds.RasterXSize) == (12, 256)
        files = ds.GetFileList()
        assert any(f.endswith("_B02_10m.tif") for f in files) and not any(f.endswith("_B02_20m.tif") for f in files)
        assert any(f.endswith("_B05_20m.tif") for f in files) and not any("MSK_" in f for f in files)
    finally:
        ds = None
        release(name)


def test_restore_from_safe_and_vv_vh_folder(shared_data: Path, tmp_path: Path) -> None:
    """The engine restores a SAFE-like product with SAR given as a folder of VV / VH files."""
    safe = make_safe(tmp_path, shared_data / GEOREF_S2)
    sar_dir = tmp_path / "s1"
    sar_dir.mkdir()
    s1 = gdal.Open(str(shared_data / GEOREF_S1))
    for i, pol in enumerate(("vv", "vh")):
        gdal.Translate(str(sar_dir / f"s1a-iw-grd-{pol}-20190601.tif"), s1, bandList=[i + 1])
    res = restore_scene(RestoreOptions(sar=sar_dir, optical=safe, output=tmp_path / "out.tif", tile_size=128, overlap=16))
    out = gdal.Open(str(res.output))
    assert (out.RasterCount, out.RasterXSize, out.RasterYSize) == (13, 256, 256)
    assert out.GetMetadataItem("MMCANET_OPTICAL") == safe.name
    assert not list(tmp_path.glob(".*partial*"))


def test_bigearthnet_band_folders_restore(shared_data: Path, tmp_path: Path) -> None:
    """Real BigEarthNet-MM folders: 12 L2A band files at 10/20/60 m, S1 VV and VH files."""
    s2_dir = sorted((shared_data / "bigearthnet-s1s2" / "BigEarthNet-S2-Example").iterdir())[0]
    s1_dir = sorted((shared_data / "bigearthnet-s1s2" / "BigEarthNet-S1-Example").iterdir())[0]
    sar = resolve_sar(s1_dir)
    try:
        ds = gdal.Open(sar)
        assert [ds.GetRasterBand(i + 1).GetDescription() for i in range(2)] == ["VV", "VH"]
        vv = next(s1_dir.glob("*_VV.tif"))
        np.testing.assert_array_equal(ds.GetRasterBand(1).ReadAsArray(), gdal.Open(str(vv)).ReadAsArray())
    finally:
        ds = None
        release(sar)
    logs: list[str] = []
    res = restore_scene(RestoreOptions(sar=s1_dir, optical=s2_dir, output=tmp_path / "ben.tif"), log=logs.append)
    out = gdal.Open(str(res.output))
    b02 = gdal.Open(str(next(s2_dir.glob("*_B02.tif"))))
    assert (out.RasterCount, out.RasterXSize) == (12, b02.RasterXSize)
    assert out.GetGeoTransform() == pytest.approx(b02.GetGeoTransform())
    assert any("Level-2A" in m for m in logs)


def test_band_folder_errors_name_what_is_wrong(shared_data: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no Sentinel-2 band files"):
        resolve_optical(empty)
    safe = make_safe(tmp_path / "a", shared_data / GEOREF_S2)
    for f in safe.rglob("*_B08.tif"):
        f.unlink()
    with pytest.raises(InputError, match="B8 are missing"):
        resolve_optical(safe)
    two = make_safe(tmp_path / "b", shared_data / GEOREF_S2)
    granule = next((two / "GRANULE").iterdir())
    (granule.parent / "copy").mkdir()
    for f in (granule / "IMG_DATA").iterdir():
        (granule.parent / "copy" / f.name).write_bytes(f.read_bytes())
    with pytest.raises(InputError, match="several files for band B1"):
        resolve_optical(two)
    sar = tmp_path / "sar"
    sar.mkdir()
    s1 = gdal.Open(str(shared_data / GEOREF_S1))
    gdal.Translate(str(sar / "a_VV.tif"), s1, bandList=[1])
    with pytest.raises(InputError, match="exactly one VH raster"):
        resolve_sar(sar)
    with pytest.raises(InputError, match="SAR input .* exactly one VH"):
        restore_scene(RestoreOptions(sar=sar, optical=shared_data / GEOREF_S2, output=tmp_path / "o.tif"))
    assert not (tmp_path / "o.tif").exists()


def test_files_pass_through_unchanged(tmp_path: Path) -> None:
    assert resolve_optical(tmp_path / "scene.tif") == str(tmp_path / "scene.tif")
    assert resolve_sar(tmp_path / "s1.tif") == str(tmp_path / "s1.tif")


def test_detect_command_reads_a_safe_product(shared_data: Path, tmp_path: Path) -> None:
    from mmcanet.cli import main

    safe = make_safe(tmp_path, shared_data / GEOREF_S2)
    assert main(["detect", "--input", str(safe / "MTD_MSIL1C.xml"), "--output", str(tmp_path / "mask.tif")]) == 0
    mask = gdal.Open(str(tmp_path / "mask.tif"))
    assert (mask.RasterXSize, mask.RasterYSize) == (256, 256)
    assert set(np.unique(mask.ReadAsArray())) <= {0, 1, 2, 255}


def test_write_stack_matches_the_virtual_stack_and_cancel_leaves_nothing(shared_data: Path, tmp_path: Path) -> None:
    from mmcanet.errors import CancelledError
    from mmcanet.stacking import write_stack

    safe = make_safe(tmp_path, shared_data / GEOREF_S2)
    fractions: list[float] = []
    out = write_stack(safe, tmp_path / "s2.tif", progress=fractions.append)
    name = resolve_optical(safe)
    try:
        expected, _ = _read(name)
    finally:
        release(name)
    written = gdal.Open(str(out))
    np.testing.assert_array_equal(written.ReadAsArray(), expected)
    assert written.GetRasterBand(13).GetDescription() == "B12" and fractions[-1] == pytest.approx(1.0)
    with pytest.raises(CancelledError):
        write_stack(safe, tmp_path / "c.tif", is_canceled=lambda: True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([safe.name, "s2.tif"])
