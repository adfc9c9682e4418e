"""rasterio shares osgeo.gdal's libgdal (one GDAL per process, as inside QGIS), and its errors are clear."""

from __future__ import annotations

from pathlib import Path

import pytest
from mmcanet.errors import InputError
from mmcanet.rasterio_support import bundles_its_own_gdal, import_rasterio, open_rasterio
from osgeo import gdal


def test_rasterio_runs_on_the_gdal_that_osgeo_uses() -> None:
    rasterio = import_rasterio()
    assert rasterio.__gdal_version__ == gdal.__version__
    assert not bundles_its_own_gdal(rasterio)  # built from source by make setup, not PyPI's wheel


def test_a_wheel_layout_is_recognised(tmp_path: Path) -> None:
    class Fake:
        __file__ = str(tmp_path / "site" / "rasterio" / "__init__.py")

    (tmp_path / "site" / "rasterio").mkdir(parents=True)
    assert not bundles_its_own_gdal(Fake)  # type: ignore[arg-type]
    (tmp_path / "site" / "rasterio.libs").mkdir()
    assert bundles_its_own_gdal(Fake)  # type: ignore[arg-type]


def test_open_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="SAR image 'x.tif': file not found"):
        open_rasterio(tmp_path / "x.tif", "SAR image 'x.tif'")
    (tmp_path / "bad.tif").write_bytes(b"not a raster")
    with pytest.raises(InputError, match="bad.tif: not a readable raster"):
        open_rasterio(tmp_path / "bad.tif")
