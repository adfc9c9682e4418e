"""Fixtures for the plugin's tests in a real QGIS (pytest-qgis): the provider, a tiny model, qgis_process.

Run headless: ``QT_QPA_PLATFORM=offscreen .venv/bin/python -m pytest tests/qgis``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the plugin package mmcanet_qgis/ at the repository root

QGIS_PROCESS = shutil.which("qgis_process.bin", path="/usr/bin:" + os.environ.get("PATH", "")) or "qgis_process"
TINY_CONFIG: dict[str, Any] = {"widths": [4, 8], "heads": 1, "window": 4, "stages": 1}


_KEEP: list[Any] = []  # Python references of providers added here (the registry holds only the C++ object)


@pytest.fixture
def provider(_session_provider: Any) -> Any:
    """The provider registered NOW: a plugin test may have unloaded or replaced the session's one."""
    from qgis.core import QgsApplication

    from mmcanet_qgis.provider import MMCANetProvider

    registry = QgsApplication.processingRegistry()
    current = registry.providerById("mmcanet")
    if current is None:
        current = MMCANetProvider()
        _KEEP.append(current)
        assert registry.addProvider(current)
    return current


@pytest.fixture(scope="session")
def _session_provider(qgis_processing: None) -> Iterator[Any]:
    """The plugin's Processing provider registered in this QGIS (pytest-qgis only initialises Processing)."""
    from qgis.core import QgsApplication

    from mmcanet_qgis.provider import MMCANetProvider

    registry = QgsApplication.processingRegistry()
    existing = registry.providerById("mmcanet")
    if existing is not None:
        yield existing
        return
    instance = MMCANetProvider()  # keep a Python reference: the registry holds only the C++ object
    assert registry.addProvider(instance)
    yield instance
    current = registry.providerById("mmcanet")  # a test may have replaced it (see test_plugin_*)
    if current is not None:
        registry.removeProvider(current)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~16k-parameter MMCANet model file (random weights) written by the core's own save_model."""
    from mmcanet import modelfile, models

    model = models.build_model("mmcanet", "single", **TINY_CONFIG)
    card = modelfile.ModelCard(name="tiny-test", config=TINY_CONFIG, tile_size=32, overlap=8)
    return modelfile.save_model(tmp_path_factory.mktemp("model") / "tiny.safetensors", model, card)


@pytest.fixture(scope="session")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small co-registered pair on a UTM 31N 10 m grid: S1 (2 bands dB) and cloudy S2 (13 bands DN)."""
    import rasters

    folder = tmp_path_factory.mktemp("scene")
    return {
        "s1": rasters.write_s1(folder / "s1.tif", 40, 48),
        "s2": rasters.write_s2(folder / "s2.tif", 40, 48),
    }


@pytest.fixture
def qgis_env(tmp_path: Path) -> Callable[..., dict[str, str]]:
    """``qgis_env(**extra)``: environment for qgis_process with a scratch profile root (tmp_path/qgis).

    QGIS_CUSTOM_CONFIG_PATH is the profile root (QGIS then uses <root>/profiles/default), so nothing
    touches the user's own profile; PYTHONPATH and QGIS_PLUGINPATH of the test run are not passed on.
    """

    def make(**extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PYTEST_") and k not in ("PYTHONPATH", "QGIS_PLUGINPATH", "MMCANET_MODEL")}
        env.update(QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(tmp_path / "qgis"), **extra)
        return env

    return make


def run_qgis_process(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``qgis_process.bin ARGS`` (never the Debian wrapper, which adds an option 3.22 rejects)."""
    return subprocess.run([QGIS_PROCESS, *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def qgis_process() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``qgis_process(args, env)`` -> CompletedProcess; fails when qgis_process.bin is missing (a required package)."""
    found = Path(QGIS_PROCESS).is_file() or shutil.which(QGIS_PROCESS) is not None
    assert found, f"{QGIS_PROCESS} not found: install the Debian package qgis (make setup does)"
    return run_qgis_process
