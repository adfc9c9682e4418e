"""The plugin as users get it: the ZIP from scripts/package_plugin.py, installed into a scratch profile and
run by qgis_process, and the private dependency folder (mmcanet_qgis/dependencies.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from osgeo import gdal

from mmcanet_qgis import dependencies

ROOT = Path(__file__).resolve().parents[2]
QGIS_PYTHON = "/usr/bin/python3"
VENV_SITE = sysconfig.get_paths()["purelib"]


@pytest.fixture(scope="module")
def plugin_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "package_plugin.py"), "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return out / "mmcanet_qgis.zip"


def test_zip_has_one_plugin_folder_with_metadata_and_vendored_core(plugin_zip: Path) -> None:
    names = zipfile.ZipFile(plugin_zip).namelist()
    assert {n.split("/")[0] for n in names} == {"mmcanet_qgis"}
    for required in ("__init__.py", "metadata.txt", "provider.py", "dependencies.py", "icons/mmcanet.svg",
                     "algorithms/remove_clouds.py", "lib/mmcanet/__init__.py", "lib/mmcanet/inference/scene.py"):
        assert f"mmcanet_qgis/{required}" in names, required
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if n.startswith("mmcanet_qgis/core/")], "never a bare `core` package"
    metadata = zipfile.ZipFile(plugin_zip).read("mmcanet_qgis/metadata.txt").decode()
    for line in ("qgisMinimumVersion=3.22", "hasProcessingProvider=yes", "category=Raster", "version=0.3.3"):
        assert line in metadata
    if (ROOT / "resources" / "mmcanet_default.safetensors").is_file():
        assert "mmcanet_qgis/resources/mmcanet_default.safetensors" in names


@pytest.mark.qgis
@pytest.mark.slow
def test_zip_installed_in_a_scratch_profile_runs_in_qgis_process(
    plugin_zip: Path, qgis_process: Callable[..., Any], qgis_env: Callable[..., dict[str, str]],
    scene: dict[str, Path], tiny_model: Path, tmp_path: Path,
) -> None:
    # torch comes through the private-folder mechanism (MMCANET_DEPS_DIR), mmcanet from the ZIP's lib/
    env = qgis_env(MMCANET_DEPS_DIR=VENV_SITE)
    probe = subprocess.run([QGIS_PYTHON, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import mmcanet",
                            VENV_SITE], capture_output=True, text=True)
    assert probe.returncode != 0, "precondition: mmcanet must not be importable except from the ZIP"
    plugins = Path(env["QGIS_CUSTOM_CONFIG_PATH"]) / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    zipfile.ZipFile(plugin_zip).extractall(plugins)  # what "Install from ZIP" does
    res = qgis_process(["plugins", "enable", "mmcanet_qgis"], env)
    assert res.returncode == 0, res.stdout + res.stderr
    out = tmp_path / "restored.tif"
    res = qgis_process(["run", "mmcanet:remove_clouds", "--json", "--", f"SAR={scene['s1']}",
                        f"OPTICAL={scene['s2']}", f"MODEL={tiny_model}", "DEVICE=1", f"OUTPUT={out}"], env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert Path(json.loads(res.stdout)["results"]["OUTPUT"]) == out
    assert gdal.Open(str(out)).RasterCount == 13


# ---- private dependency folder -----------------------------------------------------------------------


def test_deps_dir_is_per_profile_and_python_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(dependencies.ENV_DEPS_DIR, raising=False)
    folder = dependencies.deps_dir(tmp_path / "profiles" / "default")
    tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    assert folder == tmp_path / "profiles" / "default" / "python" / "mmcanet_deps" / tag
    monkeypatch.setenv("QGIS_CUSTOM_CONFIG_PATH", str(tmp_path))
    assert dependencies.default_profile_dir() == tmp_path / "profiles" / "default"
    monkeypatch.setenv(dependencies.ENV_DEPS_DIR, str(tmp_path / "x"))
    assert dependencies.deps_dir() == tmp_path / "x"


def test_install_command_uses_qgis_python_target_and_constraints(tmp_path: Path) -> None:
    cmd = dependencies.install_command("/usr/bin/python3", tmp_path / "deps", tmp_path / "c.txt", torch="cpu")
    assert cmd[:4] == ["/usr/bin/python3", "-m", "pip", "install"]
    assert cmd[cmd.index("--target") + 1] == str(tmp_path / "deps")
    assert cmd[cmd.index("--constraint") + 1] == str(tmp_path / "c.txt")
    assert any(r.startswith("torch") for r in cmd) and "safetensors>=0.4" in cmd and "tqdm" in cmd
    if sys.platform != "darwin":
        assert cmd[cmd.index("--index-url") + 1] == dependencies.TORCH_INDEXES["cpu"]
    cuda = dependencies.install_command("py", "t", "c", torch="cuda")
    if sys.platform.startswith("linux"):
        assert "--index-url" not in cuda, "PyPI's Linux torch is the CUDA build"
    else:
        assert cuda[cuda.index("--index-url") + 1] == dependencies.TORCH_INDEXES["cuda"]
    assert "--index-url" not in dependencies.install_command("py", "t", "c", torch="pypi")
    with pytest.raises(ValueError):
        dependencies.install_command("py", "t", "c", torch="rocm")


def test_constraints_keep_qgis_numpy() -> None:
    import numpy

    text = dependencies.constraints_text(QGIS_PYTHON)
    assert f"numpy=={numpy.__version__}" in text.splitlines()


def test_qgis_python_is_not_the_first_python_on_path() -> None:
    python = dependencies.qgis_python()
    assert Path(python).resolve() == Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}").resolve()


def test_packages_qgis_keeps_are_removed_from_the_private_folder(tmp_path: Path) -> None:
    for name in ("numpy", "numpy-1.26.0.dist-info", "setuptools", "_distutils_hack", "torch", "sympy"):
        (tmp_path / name).mkdir()
    (tmp_path / "distutils-precedence.pth").write_text("")
    (tmp_path / "typing_extensions.py").write_text("")
    removed = dependencies._remove_not_private(tmp_path)
    assert sorted(removed) == sorted(["numpy", "numpy-1.26.0.dist-info", "setuptools", "_distutils_hack",
                                      "distutils-precedence.pth"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sympy", "torch", "typing_extensions.py"]


def test_cli_prints_the_folder(tmp_path: Path) -> None:
    res = subprocess.run([QGIS_PYTHON, str(ROOT / "mmcanet_qgis" / "dependencies.py"), "path",
                          "--profile-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert Path(res.stdout.strip()).parent == tmp_path / "python" / "mmcanet_deps"
