"""The training-sample pipeline: pure samples, the bounded cache, the shard plan, workers, GDAL in workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from mmcanet.config import config_from_dict
from mmcanet.trainset import ImageCache, RunPlan, TrainingDataset, epoch_order, make_loader, shard
from osgeo import gdal

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def write_tif(path: Path, data: np.ndarray) -> None:
    """(bands, H, W) or (H, W) array -> GeoTIFF (uint16 / uint8 integers, float32 otherwise)."""
    data = data[None] if data.ndim == 2 else data
    gtype = {np.dtype(np.uint16): gdal.GDT_UInt16, np.dtype(np.uint8): gdal.GDT_Byte}.get(data.dtype, gdal.GDT_Float32)
    ds = gdal.GetDriverByName("GTiff").Create(str(path), data.shape[2], data.shape[1], data.shape[0], gtype)
    for i in range(data.shape[0]):
        ds.GetRasterBand(i + 1).WriteArray(data[i])
    ds = None


def _cfg(data: list[object], **kw: object) -> object:
    return config_from_dict({"data": data, "crop": 16, "seed": 11, "epochs": 4, **kw})


@pytest.fixture()
def pattern_dir(tmp_path: Path) -> Path:
    """Two 24x24 triplets whose S2 value encodes the pixel position (to check co-registration)."""
    size = 24
    yy, xx = np.mgrid[0:size, 0:size]
    for sid, offset in (("a", 100), ("b", 1100)):
        s2 = np.repeat((offset + 32 * yy + xx).astype(np.uint16)[None], 13, axis=0)
        write_tif(tmp_path / f"{sid}_s2_cloudy.tif", s2)
        write_tif(tmp_path / f"{sid}_s2_cloudfree.tif", s2)
        write_tif(tmp_path / f"{sid}_s1.tif", np.stack([-30 + (yy + xx) / 4.0] * 2).astype(np.float32))
        write_tif(tmp_path / f"{sid}_cloudmask.tif", (xx > yy).astype(np.uint8))
    return tmp_path


def test_sample_is_a_pure_coregistered_function_of_seed_epoch_index(pattern_dir: Path) -> None:
    a = TrainingDataset(_cfg([str(pattern_dir)]).data, _cfg([str(pattern_dir)]))  # type: ignore[attr-defined]
    b = TrainingDataset(_cfg([str(pattern_dir)]).data, _cfg([str(pattern_dir)]))  # type: ignore[attr-defined]
    seen = set()
    for epoch in range(4):
        sa, sb = a[(epoch, 0)], b[(epoch, 0)]
        for k in ("s1", "s2_cloudy", "mask"):
            np.testing.assert_array_equal(sa[k], sb[k])
        assert sa["s2_cloudy"].shape == (13, 16, 16) and sa["mask"].shape == (1, 16, 16)
        # one crop + flip/rotation for every array: recover (row, col) from the S2 value
        v = np.rint(sa["s2_cloudy"][0] * 10000.0 - 100).astype(int)
        rows, cols = v // 32, v % 32
        np.testing.assert_array_equal(sa["mask"][0], (cols > rows).astype(np.float32))
        seen.add(sa["s2_cloudy"].tobytes())
    assert len(seen) > 1  # epochs draw new crops
    np.testing.assert_array_equal(a[(1, 1)]["s2_cloudy"], a.sample(1, 1)["s2_cloudy"])


def test_simulated_source_and_sar_dropout(pattern_dir: Path) -> None:
    cfg = _cfg([{"path": str(pattern_dir), "kind": "simulated"}], sar_dropout=1.0)
    ds = TrainingDataset(cfg.data, cfg)  # type: ignore[attr-defined]
    s = ds[(0, 0)]
    assert s["has_sar"] == 0.0 and not s["s1"].any()  # dropout 1: no SAR
    assert float(s["mask"].max()) > 0.0  # simulated opacity, not the mask file
    assert not np.array_equal(s["s2_cloudy"], s["s2_clear"])
    np.testing.assert_array_equal(ds[(0, 0)]["s2_cloudy"], s["s2_cloudy"])


def test_sim_mask_detected_gives_the_engines_mask_and_keeps_the_opacity_target(pattern_dir: Path) -> None:
    from mmcanet.config import ConfigError
    from mmcanet.sample_io import detector_mask

    src = [{"path": str(pattern_dir), "kind": "simulated"}]
    given = TrainingDataset(_cfg(src).data, _cfg(src))  # type: ignore[attr-defined]
    detected = TrainingDataset(_cfg(src, sim_mask="detected").data, _cfg(src, sim_mask="detected"))  # type: ignore[attr-defined]
    unflagged_haze = 0
    for epoch in range(4):
        for k in range(2):
            g, d = given[(epoch, k)], detected[(epoch, k)]
            # the same draw: cloudy image and opacity target do not depend on the option
            np.testing.assert_array_equal(g["s2_cloudy"], d["s2_cloudy"])
            np.testing.assert_array_equal(g["opacity"], d["opacity"])
            np.testing.assert_array_equal(g["mask"], g["opacity"])  # default: the opacity is the guide
            np.testing.assert_array_equal(d["mask"][0], detector_mask(d["s2_cloudy"]))
            assert set(np.unique(d["mask"])) <= {0.0, 1.0}
            unflagged_haze += int(((d["opacity"][0] > 0.05) & (d["mask"][0] == 0)).sum())
    assert unflagged_haze > 0  # thin cloud the detector misses reaches the network unmarked
    # real samples: the mask file is both guide and target
    real = TrainingDataset(_cfg([str(pattern_dir)], sim_mask="detected").data, _cfg([str(pattern_dir)], sim_mask="detected"))  # type: ignore[attr-defined]
    r = real[(0, 0)]
    np.testing.assert_array_equal(r["opacity"], r["mask"])
    with pytest.raises(ConfigError, match="sim_mask must be one of opacity, detected"):
        _cfg(src, sim_mask="soft")


def test_sim_bright_clouds_draws_brighter_and_ice_cloud_and_leaves_older_configs_alone(pattern_dir: Path) -> None:
    from mmcanet.clouds.simulate import CLOUD_BRIGHTNESS, bright_cloud_brightness
    from mmcanet.config import ConfigError

    spectra = [bright_cloud_brightness(np.random.default_rng(i)) for i in range(40)]
    vis = [float(b[1:4].mean()) for b in spectra]
    assert min(vis) >= 1.2 * float(CLOUD_BRIGHTNESS[1:4].mean()) - 1e-6 and max(vis) <= 0.95
    ice = [b for b in spectra if b[10] >= 0.05]
    assert 5 < len(ice) < 35  # about half are ice cloud: bright cirrus band, darker SWIR than the visible
    assert all(b[11] < 0.7 * 1.6 * CLOUD_BRIGHTNESS[11] + 1e-6 for b in ice)

    src = [{"path": str(pattern_dir), "kind": "simulated"}]
    off = TrainingDataset(_cfg(src).data, _cfg(src))  # type: ignore[attr-defined]
    zero = TrainingDataset(_cfg(src, sim_bright_clouds=0.0).data, _cfg(src, sim_bright_clouds=0.0))  # type: ignore[attr-defined]
    on = TrainingDataset(_cfg(src, sim_bright_clouds=1.0).data, _cfg(src, sim_bright_clouds=1.0))  # type: ignore[attr-defined]
    green: dict[str, list[np.ndarray]] = {"off": [], "on": []}  # B3 under opaque cloud
    for epoch in range(4):
        for k in range(2):
            np.testing.assert_array_equal(off[(epoch, k)]["s2_cloudy"], zero[(epoch, k)]["s2_cloudy"])
            for name, ds in (("off", off), ("on", on)):
                s = ds[(epoch, k)]
                green[name].append(s["s2_cloudy"][2][s["opacity"][0] > 0.95])
    # the table's B3 is 0.454 (x 0.85-1.1 per image); the bright family x 1.2-1.6 on top
    assert float(np.concatenate(green["off"]).mean()) < 0.52 < float(np.concatenate(green["on"]).mean())
    with pytest.raises(ConfigError, match="sim_bright_clouds is a fraction"):
        _cfg(src, sim_bright_clouds=1.5)


def test_image_cache_keeps_within_budget_lru() -> None:
    one = {"x": np.zeros(256, np.float32)}  # 1 KiB
    cache = ImageCache(3 * 1024)
    loads: list[str] = []

    def loader(key: str):  # noqa: ANN202
        return lambda: (loads.append(key), {"x": one["x"].copy()})[1]

    for key in ("a", "b", "c", "a", "d", "b"):
        cache.get(key, loader(key))
        assert cache.used <= cache.budget
    # a was used again before d came, so b (least recent) was dropped and read again
    assert loads == ["a", "b", "c", "d", "b"] and len(cache) == 3
    big = ImageCache(100)
    big.get("huge", lambda: {"x": np.zeros(1000, np.float32)})
    assert len(big) == 0 and big.used == 0


def test_real_and_simulated_sources_of_one_folder_share_the_cache(pattern_dir: Path) -> None:
    cfg = _cfg([str(pattern_dir), {"path": str(pattern_dir), "kind": "simulated", "repeat": 2}])
    ds = TrainingDataset(cfg.data, cfg)  # type: ignore[attr-defined]
    assert len(ds) == 6
    for k in range(len(ds)):
        ds[(0, k)]
    assert len(ds.cache) == 2 and ds.cache.misses == 2  # two images on disk, read once each


@pytest.mark.parametrize("n,world", [(10, 3), (7, 2), (8, 4), (5, 1)])
def test_shards_cover_every_sample_once_per_epoch(n: int, world: int) -> None:
    order = epoch_order(n, 3, 0)
    shards = [shard(order, r, world) for r in range(world)]
    assert len({len(s) for s in shards}) == 1  # equal lengths (padded)
    drawn = np.concatenate(shards)
    assert set(drawn.tolist()) == set(range(n)) and len(drawn) == -(-n // world) * world


@pytest.mark.parametrize("old_world,new_world", [(1, 2), (2, 1), (2, 3)])
def test_resume_on_another_world_size_neither_skips_nor_repeats(old_world: int, new_world: int) -> None:
    n, batch = 23, 2
    old = [RunPlan(n, batch, 5, 1, r, old_world) for r in range(old_world)]
    steps = [p.epoch(0) for p in old]
    k = 3  # interrupted after 3 steps of every rank
    used = [key for s in steps for pos in s[:k] for key in pos.keys]
    consumed = steps[0][k - 1].consumed
    assert consumed == k * batch * old_world and len(set(used)) == len(used) == consumed
    new = [list(RunPlan(n, batch, 5, 1, r, new_world, 0, consumed)) for r in range(new_world)]
    rest = {key for s in new for pos in s for key in pos.keys}
    assert not rest & set(used)  # nothing repeated
    order = epoch_order(n, 5, 0)
    # nothing skipped but the tail the drop-last rule leaves (fewer than one step of all ranks)
    assert len(set(order.tolist()) - {k for _, k in used} - {k for _, k in rest}) < batch * new_world
    assert new[0][-1].consumed == n and new[0][-1].last_of_epoch


def test_plan_keeps_the_single_process_order_of_earlier_versions() -> None:
    """world 1: batch b of epoch e is items order[b*B:(b+1)*B] of the seeded permutation (as before)."""
    plan = RunPlan(10, 3, 7, 2)
    positions = list(plan)
    assert plan.steps_per_epoch() == 3 and len(positions) == 6
    order = np.random.default_rng([7, 1, 7]).permutation(10)
    assert [k for _, k in positions[4].keys] == order[3:6].tolist()
    resumed = list(RunPlan(10, 3, 7, 2, 0, 1, 1, 3))
    assert resumed == positions[4:]


def test_workers_serve_the_same_batches_and_set_up_gdal(pattern_dir: Path) -> None:
    cfg = _cfg([str(pattern_dir), {"path": str(pattern_dir), "kind": "simulated"}], batch_size=2)
    ds = TrainingDataset(cfg.data, cfg)  # type: ignore[attr-defined]
    plan = RunPlan(len(ds), 2, 11, 2)
    ref = list(make_loader(ds, plan, 0, pin_memory=False))
    ds.cache.clear()
    got = list(make_loader(ds, plan, 2, pin_memory=False))
    assert len(ref) == len(got) == 4
    for x, y in zip(ref, got, strict=True):
        for k in x:
            assert torch.equal(x[k], y[k]), k
    assert len(ds.cache) == 0  # the workers cached, not this process
    probe = TrainingDataset(cfg.data, cfg)  # type: ignore[attr-defined]
    probe.sample = lambda epoch, k: {"gdal_cache": np.float32(gdal.GetCacheMax()),  # type: ignore[method-assign]
                                     **{key: np.zeros((1, 2, 2), np.float32) for key in ("s2_cloudy", "s2_clear", "s1", "mask")}}
    from mmcanet import trainset

    loader = make_loader(probe, RunPlan(len(probe), 1, 0, 1), 1, pin_memory=False)
    loader.collate_fn = lambda samples: samples[0]["gdal_cache"]
    assert float(next(iter(loader))) == trainset.WORKER_GDAL_CACHE_MB * 2**20


def test_official_tree_of_real_triplets_is_cached_within_budget(tmp_path: Path) -> None:
    src = SHARED / "sen12mscr-triplets"
    if not src.is_dir():
        pytest.skip(f"needs real data at {src} (../shared/data is absent)")
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from bench_training_memory import build_official_tree

    root = build_official_tree(tmp_path / "tree", src, 12)
    cfg = _cfg([str(root)], cache_mb=20, crop=64)  # one decoded patch is ~7.5 MiB: two fit
    ds = TrainingDataset(cfg.data, cfg)  # type: ignore[attr-defined]
    assert len(ds) == 12
    for k in range(len(ds)):
        s = ds[(0, k)]
        assert s["s2_cloudy"].shape == (13, 64, 64) and s["has_sar"] == 1.0
        assert ds.cache.used <= 20 * 2**20
    assert len(ds.cache) == 2 and ds.cache.misses == 12
