"""Shared fixtures: small seeded rasters written to tmp_path, and the real shared data (skipped when absent)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import settings

# No per-example wall-clock deadline anywhere: on a shared 2-core machine a 200 ms deadline fails
# property tests for load, not for behaviour (tests must not assert timings).
settings.register_profile("mmcanet", deadline=None)
settings.load_profile("mmcanet")

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/rasters.py, importable as `rasters`

import rasters  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` relative to the repository root; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real Sentinel data not found at {SHARED_DATA} (../shared/data from the repo root)")
    return SHARED_DATA


@pytest.fixture
def make_s2(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_s2(name="s2.tif", height=64, width=80, **kw)`` -> path of a Sentinel-2-like GeoTIFF."""

    def make(name: str = "s2.tif", height: int = 64, width: int = 80, **kw: object) -> Path:
        return rasters.write_s2(tmp_path / name, height, width, **kw)  # type: ignore[arg-type]

    return make


@pytest.fixture
def make_s1(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_s1(name="s1.tif", height=64, width=80, **kw)`` -> path of a Sentinel-1-like GeoTIFF."""

    def make(name: str = "s1.tif", height: int = 64, width: int = 80, **kw: object) -> Path:
        return rasters.write_s1(tmp_path / name, height, width, **kw)  # type: ignore[arg-type]

    return make
