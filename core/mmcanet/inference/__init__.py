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
* :mod:`.memory`, :mod:`.tuning`: heap trimming and the speed-only knobs.

Memory is ``O(tile_size x width)``, independent of the scene height; progress and cancellation are
plain callables polled once per batch, so the same engine drives the CLI, QGIS Processing and the dock.
Importing this package does not import torch.
"""

from ..options import RestoreOptions
from .scene import RestoreResult, load_model_for, restore_scene, restore_scene_with_model
from .tuning import EngineTuning

__all__ = ["EngineTuning", "RestoreOptions", "RestoreResult", "load_model_for", "restore_scene", "restore_scene_with_model"]
