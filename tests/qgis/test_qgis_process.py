"""Headless use: the plugin loaded by `qgis_process.bin` from a scratch profile, with and without torch.

qgis_process calls classFactory(None) and initProcessing() only (iface is None, initGui never runs), so
these tests prove the provider does not depend on the GUI. Each qgis_process start takes a few seconds.
"""

from __future__ import annotations

import json
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from osgeo import gdal

pytestmark = [pytest.mark.qgis, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
VENV_SITE = sysconfig.get_paths()["purelib"]  # torch & co of the test environment
BLOCK_TORCH = """\
import importlib.abc, sys
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError("No module named 'torch' (blocked by the test)", name="torch")
        return None
sys.meta_path.insert(0, _NoTorch())
"""


@pytest.fixture(scope="session")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the plugin as packaged (metadata.txt inside, core vendored under lib/)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import package_plugin
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    dest = tmp_path_factory.mktemp("plugins")
    package_plugin.build_tree(dest)
    return dest


@pytest.fixture
def env(tmp_path: Path, plugin_dir: Path, qgis_env: Callable[..., dict[str, str]]) -> Callable[..., dict[str, str]]:
    """``env(**extra)``: a scratch profile + QGIS_PLUGINPATH=plugin_dir, the venv's torch on PYTHONPATH."""

    def make(**extra: str) -> dict[str, str]:
        values = {"QGIS_PLUGINPATH": str(plugin_dir), "PYTHONPATH": VENV_SITE,
                  "MMCANET_DEPS_DIR": str(tmp_path / "no-deps")}
        values.update(extra)
        return qgis_env(**values)

    return make


def enable(qgis_process: Callable[..., Any], env: dict[str, str]) -> None:
    res = qgis_process(["plugins", "enable", "mmcanet_qgis"], env)
    assert res.returncode == 0 or "already enabled" in res.stdout + res.stderr, res.stdout + res.stderr


def test_qgis_process_runs_remove_clouds_with_json(
    qgis_process: Callable[..., Any], env: Callable[..., dict[str, str]], scene: dict[str, Path],
    tiny_model: Path, tmp_path: Path,
) -> None:
    environment = env()
    enable(qgis_process, environment)
    out = tmp_path / "restored.tif"
    res = qgis_process(["run", "mmcanet:remove_clouds", "--json", "--",
                        f"SAR={scene['s1']}", f"OPTICAL={scene['s2']}", f"MODEL={tiny_model}", "DEVICE=1",
                        f"OUTPUT={out}"], environment)
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert Path(doc["results"]["OUTPUT"]) == out
    assert gdal.Open(str(out)).RasterCount == 13


def test_qgis_process_help_describes_parameters(
    qgis_process: Callable[..., Any], env: Callable[..., dict[str, str]]
) -> None:
    environment = env()
    enable(qgis_process, environment)
    res = qgis_process(["help", "mmcanet:remove_clouds"], environment)
    assert res.returncode == 0, res.stderr
    for key in ("SAR", "OPTICAL", "CLOUD_MASK", "MODEL", "STRATEGY", "DEVICE", "KEEP_CLEAR", "TILE_SIZE", "OUTPUT"):
        assert f"{key}:" in res.stdout


def test_without_torch_provider_loads_and_run_explains_the_install(
    qgis_process: Callable[..., Any], env: Callable[..., dict[str, str]], scene: dict[str, Path], tmp_path: Path,
) -> None:
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(BLOCK_TORCH, encoding="utf-8")
    environment = env(PYTHONPATH=str(shim))  # no venv: only QGIS's Python, and torch blocked
    enable(qgis_process, environment)
    listing = qgis_process(["list"], environment)
    assert "mmcanet:remove_clouds" in listing.stdout, listing.stderr
    out = tmp_path / "restored.tif"
    res = qgis_process(["run", "mmcanet:remove_clouds", "--",
                        f"SAR={scene['s1']}", f"OPTICAL={scene['s2']}", f"OUTPUT={out}"], environment)
    text = res.stdout + res.stderr
    assert res.returncode != 0
    assert "torch is not installed for QGIS's Python" in text, text
    assert "dependencies.py\" install" in text and str(tmp_path / "no-deps") in text
    assert not out.exists()
    mask = tmp_path / "mask.tif"  # the numpy-only tools still work without torch
    res = qgis_process(["run", "mmcanet:detect_clouds", "--", f"INPUT={scene['s2']}", f"OUTPUT={mask}"], environment)
    assert res.returncode == 0, res.stdout + res.stderr
    assert mask.is_file()


def test_qgis_process_refuses_a_malformed_model_and_an_output_over_an_input(
    qgis_process: Callable[..., Any], env: Callable[..., dict[str, str]], scene: dict[str, Path],
    tiny_model: Path, tmp_path: Path,
) -> None:
    """Data safety through Processing (docs/RELIABILITY.md): the core's errors, no traceback, nothing written."""
    import struct

    raw = tiny_model.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    card = json.loads(header["__metadata__"]["mmcanet_card"])
    card["tile_size"] = "256"  # a string where a number belongs
    header["__metadata__"]["mmcanet_card"] = json.dumps(card)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])
    environment = env()
    enable(qgis_process, environment)
    out = tmp_path / "restored.tif"
    res = qgis_process(["run", "mmcanet:remove_clouds", "--", f"SAR={scene['s1']}", f"OPTICAL={scene['s2']}",
                        f"MODEL={bad}", "DEVICE=1", f"OUTPUT={out}"], environment)
    text_out = res.stdout + res.stderr
    assert res.returncode != 0 and "bad.safetensors" in text_out and "tile_size" in text_out, text_out
    assert "Traceback" not in text_out and not out.exists()
    before = scene["s2"].read_bytes()
    (tmp_path / "alias").symlink_to(scene["s2"].parent, target_is_directory=True)  # the input through a symlink
    res = qgis_process(["run", "mmcanet:detect_clouds", "--", f"INPUT={scene['s2']}",
                        f"OUTPUT={tmp_path / 'alias' / scene['s2'].name}"], environment)
    text_out = res.stdout + res.stderr
    assert res.returncode != 0 and "choose another output name" in text_out, text_out
    assert scene["s2"].read_bytes() == before


def test_evaluation_reads_through_rasterio_on_qgis_gdal_inside_qgis_process(
    qgis_process: Callable[..., Any], env: Callable[..., dict[str, str]], tiny_model: Path, tmp_path: Path,
) -> None:
    """The sample readers use rasterio; inside qgis_process QGIS's libgdal is loaded first, and
    mmcanet.rasterio_support refuses a rasterio on another GDAL, so this run proves one GDAL there."""
    import rasters

    data = tmp_path / "data"
    data.mkdir()
    rasters.write_s1(data / "t_s1.tif", 32, 32)
    rasters.write_s2(data / "t_s2_cloudy.tif", 32, 32)
    rasters.write_s2(data / "t_s2_cloudfree.tif", 32, 32, array=rasters.s2_array(32, 32, cloud=False))
    environment = env()
    enable(qgis_process, environment)
    res = qgis_process(["run", "mmcanet:evaluate_model", "--json", "--", f"MODEL={tiny_model}", f"DATA={data}",
                        "DEVICE=1", f"OUTPUT_FOLDER={tmp_path / 'eval'}"], environment)
    assert res.returncode == 0, res.stdout + res.stderr
    assert Path(json.loads(res.stdout)["results"]["METRICS"]).is_file()
