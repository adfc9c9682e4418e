"""Engine tuning: how the scene is chunked and scheduled (never what it computes).

Every field changes speed or memory only; the output bytes are the same for any values (tests run
small chunks to prove it). The defaults are the measured choices of docs/ENGINE.md.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineTuning:
    """Chunk sizes and scheduling of a restore.

    Args:
        read_columns: column chunk of strip reads (px; bounds GDAL's cached blocks); a multiple of 256.
        composite_columns: column chunk of the compositing step (px; bounds its float temporaries).
        prefetch_on_cpu: read the next strip in a background thread also when the model runs on the
            CPU (always done on a GPU; on the CPU torch already uses every core, and measured wall
            times did not improve).
        channels_last_on_cpu: run the model on NHWC (channels-last) tensors on the CPU (oneDNN's
            convolutions are faster on NHWC; bench/bench_layout.py).
        max_workers: threads for the per-tile numpy work between forwards.
        source_cache_bytes: GDAL cache use above which the blocks of warped sources are released.
    """

    read_columns: int = 2048
    composite_columns: int = 512
    prefetch_on_cpu: bool = False
    channels_last_on_cpu: bool = True
    max_workers: int = 4
    source_cache_bytes: int = 64 * 1024 * 1024
