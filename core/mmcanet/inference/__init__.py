"""Full-scene restoration: any size, any grid, bounded memory, no seams (see docs/ENGINE.md).

One module per step of :func:`restore_scene`:

* :mod:`.inputs`: open and validate inputs and outputs before any work; map bands to the model's;
* :mod:`.tiling`: plan overlapping tiles (pure functions);
* :mod:`.strips`: read one tile row of every input per strip (SAR warped onto the optical grid),
  optionally in a background thread;
* :mod:`.batches`: model-unit batch buffers, device layout, forward with out-of-memory splitting;
* :mod:`.blending`: tile weights, feathered restore weight, compositing with the input, nodata;
* :mod:`.runner`: the tile loop (strip -> batches -> blend -> write finished rows);
* :mod:`.scene`: validate, load the model, run, commit the outputs;
* :mod:`.oom`: allocation failures and freeing a failed batch's memory;
* :mod:`.model_cache`: a loaded model kept between restores (QGIS);
* :mod:`.memory`, :mod:`.tuning`: heap trimming and the speed-only knobs.

Memory is ``O(tile_size x width)``, independent of the scene height; progress and cancellation are
plain callables polled once per batch, so the same engine drives the CLI, QGIS Processing and the dock.
Importing this package does not import torch (nor GDAL: its modules load on first use).
"""

from typing import TYPE_CHECKING, Any

from ..options import RestoreOptions

if TYPE_CHECKING:
    from .model_cache import ModelCache
    from .scene import RestoreResult, load_model_for, restore_scene, restore_scene_with_model
    from .tuning import EngineTuning

_LAZY = {"ModelCache": "model_cache", "RestoreResult": "scene", "load_model_for": "scene", "restore_scene": "scene",
         "restore_scene_with_model": "scene", "EngineTuning": "tuning"}


def __getattr__(name: str) -> Any:
    """Import the engine's modules on first use: the device-side parts (:mod:`.batches`) then load
    without GDAL, e.g. on a GPU machine that only runs bench/bench_gpu.py --mode model."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["EngineTuning", "ModelCache", "RestoreOptions", "RestoreResult", "load_model_for", "restore_scene",
           "restore_scene_with_model"]
