"""How many CPU cores this process (one rank of a torchrun job, or a plain run) may use.

Importable without torch or GDAL (raster I/O reads it for GDAL's thread count).

Under ``torchrun`` every rank of a node usually sees the node's whole CPU affinity; sizing GDAL
threads, torch threads and the tile-worker pool from it in every rank oversubscribes the node by
the number of ranks. When the launcher already pinned the rank to a subset of the cores (SLURM
``--cpu-bind``, Kubernetes CPU sets, ``taskset``), that subset is the rank's share and is not
divided again.
"""

from __future__ import annotations

import os


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def _local_world() -> int:
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    except ValueError:
        return 1


def rank_cpus(affinity: int | None = None, node_cpus: int | None = None, local_world: int | None = None) -> int:
    """CPU cores this rank should use (at least 1).

    Args:
        affinity: cores this process may run on (default: ``os.sched_getaffinity``).
        node_cpus: cores of the machine (default: ``os.cpu_count``).
        local_world: ranks on this machine (default: ``LOCAL_WORLD_SIZE``, 1 outside torchrun).

    Returns:
        ``affinity // local_world`` when the process may run on every core of the machine (the
        ranks share them), else ``affinity`` (the launcher already gave the rank its share).
    """
    affinity = _affinity() if affinity is None else affinity
    node_cpus = (os.cpu_count() or affinity) if node_cpus is None else node_cpus
    local_world = _local_world() if local_world is None else max(1, local_world)
    if affinity < node_cpus:
        return max(1, affinity)
    return max(1, affinity // local_world)


def gdal_threads() -> str:
    """Value of GDAL's ``NUM_THREADS`` option for this rank (its cores, not the machine's)."""
    return str(rank_cpus())
