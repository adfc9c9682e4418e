"""Clouds: rule-based detection (Level-1C cloud / shadow masks) and simulation on clear images.

Per array: :mod:`.detect`, :mod:`.simulate`; over whole raster files (CLI and QGIS): :mod:`.scene`.

Names are imported lazily so that ``python -m mmcanet.clouds.simulate`` runs cleanly.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "CloudMasks": "detect",
    "detect_clouds": "detect",
    "detect_clouds_from_bands": "detect",
    "CLOUD_BRIGHTNESS": "simulate",
    "SimulatedClouds": "simulate",
    "fit_cloud_brightness": "simulate",
    "simulate_clouds": "simulate",
    "detect_scene": "scene",
    "simulate_scene": "scene",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
