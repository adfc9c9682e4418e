"""The one training-sample pipeline: a Dataset pure in (seed, epoch, index), its shard plan, its loader.

* :class:`TrainingDataset` turns the configured sources into samples. Sample ``(epoch, k)`` is a pure
  function of the seed: ``numpy.random.default_rng([seed, epoch, k])`` draws the crop, the flip /
  rotation, the simulated clouds (simulated sources) and the SAR dropout, in that order. Which process
  or worker computes it does not matter, so a resume with another worker count is bit-identical.
* :class:`ImageCache` keeps decoded images within a byte budget (least recently used dropped first),
  one cache per worker process (or per training process without workers).
* :class:`RunPlan` is the order of the batches of a run: a seeded permutation per epoch, sharded over
  the processes of ``torchrun`` with the semantics of ``torch.utils.data.DistributedSampler`` (the
  order is padded with its own start to a multiple of the world size, every sample is drawn once per
  epoch, rank ``r`` takes positions ``r, r + world, ...``), and resumable from a count of consumed
  samples, so a resume on another world size neither skips nor repeats data.
* :func:`make_loader` serves the plan through a ``DataLoader`` with worker processes, prefetching and,
  on CUDA, pinned memory.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from .augment import augment_arrays
from .config import DataSource, TrainConfig
from .errors import InputError

Sample = dict[str, Any]
BATCH_KEYS: tuple[str, ...] = ("s2_cloudy", "s2_clear", "s1", "mask", "opacity")
"""``mask`` is the guidance the network is given, ``opacity`` what its opacity net and the CARL term learn
from: the same for real samples, the simulated opacity for simulated ones (see ``TrainConfig.sim_mask``)."""
_RAW_KEYS: tuple[str, ...] = ("s2_cloudy", "s2_clear", "s1", "mask")
WORKER_GDAL_CACHE_MB = 64
"""GDAL block cache of one loader worker: each worker reads whole small files once, a big cache only costs RAM."""


# ---- cache -----------------------------------------------------------------------------------------
class ImageCache:
    """Decoded images kept within ``budget_bytes``; the least recently used go first.

    An image larger than the whole budget is returned but not kept. A set smaller than the budget is
    thus fully cached after its first pass, a larger one costs at most the budget.
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget = max(0, int(budget_bytes))
        self.used = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[str, tuple[Sample, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str, load: Callable[[], Sample]) -> Sample:
        """The cached value of ``key``, else ``load()`` (kept when it fits the budget)."""
        if key in self._items:
            self._items.move_to_end(key)
            self.hits += 1
            return self._items[key][0]
        self.misses += 1
        value = load()
        size = sum(v.nbytes for v in value.values() if isinstance(v, np.ndarray))
        if size <= self.budget:
            self._items[key] = (value, size)
            self.used += size
            while self.used > self.budget:
                _, (_, dropped) = self._items.popitem(last=False)
                self.used -= dropped
        return value

    def clear(self) -> None:
        """Forget everything (e.g. the copy a forked worker inherited)."""
        self._items.clear()
        self.used = 0


# ---- dataset ---------------------------------------------------------------------------------------
class TrainingDataset(Dataset):
    """All training sources as one set; item ``(epoch, k)`` is sample ``k`` of ``epoch``.

    Args:
        sources: the config's data sources (each repeated ``repeat`` times per epoch).
        cfg: the training config (seed, epochs, crop, curriculum, sar_dropout, cache_mb are used).
        split: SEN12MS-CR split for official trees.

    Raises:
        InputError: a source cannot be opened, or no images at all.
    """

    def __init__(self, sources: Sequence[DataSource], cfg: TrainConfig, split: str = "train") -> None:
        from .datasets import open_source

        self.seed, self.epochs, self.crop = int(cfg.seed), int(cfg.epochs), int(cfg.crop)
        self.curriculum, self.sar_dropout = bool(cfg.curriculum), float(cfg.sar_dropout)
        self.sim_mask = str(cfg.sim_mask)
        self.sim_bright_clouds = float(cfg.sim_bright_clouds)
        self.readers: list[Any] = []
        self.items: list[tuple[int, int, bool]] = []  # (reader, index in reader, simulate)
        for src in sources:
            reader, simulate = open_source(src.path, src.kind, split, src.include, src.exclude)
            self.readers.append(reader)
            r = len(self.readers) - 1
            for _ in range(max(1, src.repeat)):
                self.items.extend((r, i, simulate) for i in range(len(reader)))
        if not self.items:
            raise InputError("no training images found in the configured data sources")
        self.cache = ImageCache(int(cfg.cache_mb) * 2**20)

    def __len__(self) -> int:
        return len(self.items)

    def raw(self, k: int) -> Sample:
        """Full normalised images of item ``k`` (numpy float32, from the cache when there)."""
        r, i, _ = self.items[k]
        reader = self.readers[r]

        def load() -> Sample:
            s = reader[i]
            out: Sample = {key: np.asarray(s[key], dtype=np.float32) for key in _RAW_KEYS}
            out["mask"] = out["mask"].reshape(1, *out["s2_clear"].shape[-2:])
            out["has_sar"] = np.float32(float(s.get("has_sar", 1.0)))
            return out

        return self.cache.get(str(reader.sample_key(i)), load)

    def sample(self, epoch: int, k: int) -> Sample:
        """Training sample ``k`` of ``epoch``: float32 arrays s2_cloudy, s2_clear (13, c, c), s1 (2, c, c),
        mask (1, c, c) (the guidance: 0-1, 1 = cloud), opacity (1, c, c) (the opacity target) and has_sar;
        c = min(crop, image side)."""
        from .clouds.simulate import bright_cloud_brightness, simulate_clouds

        _, _, simulate = self.items[k]
        raw = self.raw(k)
        rng = np.random.default_rng([self.seed, epoch, k])
        arrays: dict[str, Any] = {key: raw[key] for key in _RAW_KEYS}
        arrays = dict(augment_arrays(arrays, rng, crop=min(self.crop, *raw["s2_clear"].shape[-2:])))
        if simulate:
            progress = epoch / max(1, self.epochs)
            thin_p = max(0.15, 1.0 - 2.0 * progress) if self.curriculum else 0.25
            thickness = "thin" if rng.random() < thin_p else str(rng.choice(["mixed", "thick"]))
            brightness = None
            if self.sim_bright_clouds > 0 and rng.random() < self.sim_bright_clouds:
                brightness = bright_cloud_brightness(rng)
            sim = simulate_clouds(arrays["s2_clear"], rng, thickness=thickness, brightness=brightness)
            arrays["s2_cloudy"] = sim.cloudy.astype(np.float32)
            arrays["opacity"] = sim.opacity[None].astype(np.float32)
            if self.sim_mask == "detected":
                from .sample_io import detector_mask

                arrays["mask"] = detector_mask(arrays["s2_cloudy"])[None]
            else:
                arrays["mask"] = arrays["opacity"]
        else:
            arrays["opacity"] = arrays["mask"]
        has_sar = float(raw["has_sar"])
        if has_sar and rng.random() < self.sar_dropout:
            has_sar = 0.0
        if not has_sar:
            arrays["s1"] = np.zeros_like(arrays["s1"])
        arrays["has_sar"] = np.float32(has_sar)
        return arrays

    def __getitem__(self, key: tuple[int, int]) -> Sample:
        epoch, k = key
        return self.sample(int(epoch), int(k))


def collate(samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
    """Stack samples into a batch: ``{key: (B, C, H, W) float32}`` for s2_cloudy, s2_clear, s1, mask."""
    return {k: torch.from_numpy(np.stack([np.ascontiguousarray(s[k], dtype=np.float32) for s in samples]))
            for k in BATCH_KEYS}


# ---- plan ------------------------------------------------------------------------------------------
def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The seeded order of the ``n`` items in ``epoch`` (the same in every process)."""
    return np.random.default_rng([seed, epoch, 7]).permutation(n)


def shard(order: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Rank ``rank``'s share of ``order``: padded with its start to a multiple of ``world``, then every
    ``world``-th position (as ``DistributedSampler``): equal lengths, every item at least once."""
    pad = (-len(order)) % world
    padded = np.concatenate([order, np.resize(order, pad)]) if pad else order
    return padded[rank::world]


@dataclass(frozen=True)
class Position:
    """Where a batch sits in the run: its epoch, its number in the epoch, the items it holds, and the
    epoch's samples consumed (over all ranks) once it is done (``n`` or more = the epoch is over)."""

    epoch: int
    batch: int
    keys: tuple[tuple[int, int], ...]
    consumed: int
    last_of_epoch: bool


class RunPlan:
    """The batches of one process from ``(start_epoch, start_consumed)`` to the last epoch.

    Args:
        n: items per epoch.
        batch_size: items per batch and process.
        seed: the run's seed.
        epochs: number of epochs of the run.
        rank, world: this process and the number of processes.
        start_epoch: first epoch to serve.
        start_consumed: samples of ``start_epoch`` already consumed by all ranks together (resume).
    """

    def __init__(self, n: int, batch_size: int, seed: int, epochs: int, rank: int = 0, world: int = 1,
                 start_epoch: int = 0, start_consumed: int = 0) -> None:
        self.n, self.batch_size, self.seed, self.epochs = n, batch_size, seed, epochs
        self.rank, self.world = rank, world
        self.start_epoch, self.start_consumed = start_epoch, start_consumed

    def steps_per_epoch(self) -> int:
        """Batches of a full epoch (the partial last batch is dropped unless it is the only one)."""
        return max(1, -(-self.n // self.world) // self.batch_size)

    def epoch(self, epoch: int, consumed: int = 0) -> list[Position]:
        """The positions of ``epoch`` from ``consumed`` samples on."""
        rest = epoch_order(self.n, self.seed, epoch)[consumed:]
        if len(rest) == 0:
            return []
        mine = shard(rest, self.rank, self.world)
        b = self.batch_size
        count = max(1, len(mine) // b)
        out = []
        for j in range(count):
            keys = tuple((epoch, int(k)) for k in mine[j * b:(j + 1) * b])
            done = consumed + min(len(rest), (j + 1) * b * self.world)
            first = consumed // (b * self.world)  # batches of the epoch before the resume point
            out.append(Position(epoch, first + j, keys, done if j < count - 1 else self.n, j == count - 1))
        return out

    def __iter__(self) -> Iterator[Position]:
        for e in range(self.start_epoch, self.epochs):
            yield from self.epoch(e, self.start_consumed if e == self.start_epoch else 0)


class _Keys:
    """The batch sampler the DataLoader iterates (in the main process): the plan's item keys."""

    def __init__(self, plan: RunPlan) -> None:
        self.plan = plan

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return (list(p.keys) for p in self.plan)

    def __len__(self) -> int:
        return sum(1 for _ in self.plan)


# ---- loader ----------------------------------------------------------------------------------------
def fork_available() -> bool:
    """Whether worker processes can be forked (Linux): spawned workers would start ``sys.executable``,
    which inside QGIS is not QGIS's Python."""
    return "fork" in multiprocessing.get_all_start_methods() and os.name == "posix" and os.uname().sysname == "Linux"


def cpus_per_process() -> int:
    """CPUs this process may use, divided among the ``LOCAL_WORLD_SIZE`` ranks on this machine."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, cpus // local)


def default_workers() -> int:
    """Loader workers when the config says -1 (auto): one CPU per process stays for the training step,
    the rest (at most 8) load; 0 where workers cannot be forked."""
    if not fork_available():
        return 0
    return min(8, cpus_per_process() - 1)


def _worker_init(worker_id: int) -> None:
    """Run in each forked worker: Ctrl-C left to the training process (it checkpoints, then ends the
    workers), a fresh cache of its own, a small GDAL cache, single-threaded GDAL."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    info = get_worker_info()
    if info is not None and isinstance(info.dataset, TrainingDataset):
        info.dataset.cache.clear()  # the fork's copy of the parent's cache is not this worker's
    try:
        from osgeo import gdal
    except ImportError:  # pragma: no cover - GDAL is a dependency
        return
    gdal.SetCacheMax(WORKER_GDAL_CACHE_MB * 2**20)
    gdal.SetConfigOption("GDAL_NUM_THREADS", "1")


def make_loader(dataset: TrainingDataset, plan: RunPlan, workers: int, pin_memory: bool,
                prefetch: int = 4) -> DataLoader:
    """A DataLoader serving ``plan``'s batches of ``dataset`` (collated by :func:`collate`).

    Args:
        dataset: the training set.
        plan: the batches to serve, in order.
        workers: worker processes (0 = load in this process).
        pin_memory: page-locked batches for asynchronous host-to-GPU copies (CUDA).
        prefetch: batches each worker prepares ahead.
    """
    kwargs: dict[str, Any] = {}
    if workers > 0:
        kwargs = {"persistent_workers": True, "prefetch_factor": prefetch, "worker_init_fn": _worker_init}
        if fork_available():
            kwargs["multiprocessing_context"] = "fork"
    return DataLoader(
        dataset, batch_sampler=_Keys(plan), num_workers=workers, collate_fn=collate, pin_memory=pin_memory,
        # a private generator: creating an iterator must not advance the global torch RNG
        generator=torch.Generator().manual_seed(plan.seed), **kwargs,
    )
