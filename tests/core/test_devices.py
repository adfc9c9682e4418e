"""Which GPU and how many CPU cores a process (one torchrun rank, or a plain run) uses."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from mmcanet import devices
from mmcanet.cpus import gdal_threads, rank_cpus
from mmcanet.raster_write import geotiff_creation_options


@pytest.mark.parametrize(("rank", "count", "index"), [
    (0, 1, 0), (3, 1, 0),  # one visible GPU per rank (SLURM, Kubernetes): always GPU 0
    (0, 4, 0), (3, 4, 3), (5, 4, 1),  # more ranks than GPUs: shared round-robin
    (2, 0, 0),
])
def test_gpu_of_a_rank_is_local_rank_modulo_visible_gpus(rank: int, count: int, index: int) -> None:
    assert devices.cuda_index(rank, count) == index


@pytest.mark.parametrize(("affinity", "node", "ranks", "cores"), [
    (16, 16, 1, 16),  # plain run: every core
    (16, 16, 4, 4),  # 4 ranks share the node's cores
    (16, 16, 32, 1),  # more ranks than cores: one each, never 0
    (4, 16, 4, 4),  # the launcher pinned the rank to 4 cores: that is its share, not divided again
    (2, 2, 2, 1),
])
def test_cores_of_a_rank(affinity: int, node: int, ranks: int, cores: int) -> None:
    assert rank_cpus(affinity=affinity, node_cpus=node, local_world=ranks) == cores


def test_rank_cores_reach_gdal_and_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    affinity = len(os.sched_getaffinity(0))
    expected = affinity if affinity < (os.cpu_count() or affinity) else max(1, affinity // 2)
    assert rank_cpus() == expected
    assert gdal_threads() == str(expected)
    assert f"NUM_THREADS={expected}" in geotiff_creation_options(np.dtype(np.uint16), 256, 512, 512)
    before = torch.get_num_threads()
    try:
        assert devices.configure_threads(torch.device("cpu")) == expected
    finally:
        torch.set_num_threads(before)


def test_auto_makes_the_rank_gpu_current_before_using_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # a machine with 2 visible GPUs, as torch reports it; this CPU-only torch then fails the first allocation
    calls: list[object] = []
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(d))
    lines: list[str] = []
    dev = devices.resolve_device("auto", lines.append)
    assert calls == [torch.device("cuda", 1)], "rank 3 of 2 GPUs -> GPU 1, set as current first"
    assert dev == torch.device("cpu") and "CUDA initialisation failed" in lines[0]
