"""Training: config validation, exact resume after an interruption, DDP replicas on 2 gloo processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmcanet.config import config_from_dict, load_config
from mmcanet.errors import CancelledError, ConfigError
from mmcanet.modelfile import load_model
from mmcanet.training import train
from osgeo import gdal

TINY_MODEL = {"widths": [8, 8, 16, 16], "heads": 2, "window": 4}


def _write(path: Path, arr: np.ndarray, dtype: int) -> None:
    ds = gdal.GetDriverByName("GTiff").Create(str(path), arr.shape[2], arr.shape[1], arr.shape[0], dtype)
    for i in range(arr.shape[0]):
        ds.GetRasterBand(i + 1).WriteArray(arr[i])
    ds = None


@pytest.fixture()
def triplet_dir(tmp_path: Path) -> Path:
    """Three small triplets t0..t2 in the shared-triplet layout: a smooth scene, clouds on half of it."""
    root = tmp_path / "triplets"
    root.mkdir()
    rng = np.random.default_rng(3)
    for i in range(3):
        clear = (rng.random((13, 1, 1)) * 3000 + 500 + rng.normal(0, 200, (13, 40, 40))).clip(0, 10000)
        cloudy = clear.copy()
        cloudy[:, :20] = 7000
        s1 = rng.normal(-12, 3, (2, 40, 40)).astype(np.float32)
        _write(root / f"t{i}_s2_cloudfree.tif", clear.astype(np.uint16), gdal.GDT_UInt16)
        _write(root / f"t{i}_s2_cloudy.tif", cloudy.astype(np.uint16), gdal.GDT_UInt16)
        _write(root / f"t{i}_s1.tif", s1, gdal.GDT_Float32)
    return root


def _cfg(tmp_path: Path, data: Path, **kw: object) -> dict[str, object]:
    d: dict[str, object] = {
        "data": [str(data), {"path": str(data), "kind": "simulated"}],
        "val": [{"path": str(data), "include": ["t0"]}],
        "model": TINY_MODEL, "epochs": 2, "batch_size": 2, "crop": 32, "lr": 1e-3, "warmup_steps": 2,
        "checkpoint_every": 2, "log_every": 1, "run_dir": str(tmp_path / "run"),
        "output": str(tmp_path / "run" / "m.safetensors"), "device": "cpu", "threads": 1, "seed": 5, "workers": 0,
    }
    d.update(kw)
    return d


def test_unknown_keys_and_bad_values_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key.*lrate"):
        config_from_dict({"lrate": 1})
    with pytest.raises(ConfigError, match="batch_size must be an integer"):
        config_from_dict({"batch_size": "8"})
    with pytest.raises(ConfigError, match="strategy 'zigzag' unknown"):
        config_from_dict({"strategy": "zigzag"})
    with pytest.raises(ConfigError, match=r"data\[0\]: unknown key"):
        config_from_dict({"data": [{"path": "x", "folder": "y"}]})
    bad = tmp_path / "c.toml"
    bad.write_text("epochs = [\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(bad)


def test_empty_data_folder_fails_before_training(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    cfg = config_from_dict(_cfg(tmp_path, tmp_path / "empty"))
    with pytest.raises(Exception, match="empty"):
        train(cfg)


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path: Path, triplet_dir: Path) -> None:
    """Interrupted without loader workers, resumed with two: the weights equal an uninterrupted run's."""
    full = train(config_from_dict(_cfg(tmp_path / "a", triplet_dir)))
    calls = {"n": 0}

    def cancel_after_2() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    part = config_from_dict(_cfg(tmp_path / "b", triplet_dir))
    with pytest.raises(CancelledError):
        train(part, is_canceled=cancel_after_2)
    assert (tmp_path / "b" / "run" / "checkpoint.pt").is_file()
    state = torch.load(tmp_path / "b" / "run" / "checkpoint.pt", weights_only=True)["state"]
    # mid-epoch (6 samples per epoch): 2 steps of 2 samples, 1 process
    assert (state["step"], state["epoch"], state["samples"], state["world"]) == (2, 0, 4, 1)
    resumed = train(config_from_dict(_cfg(tmp_path / "b", triplet_dir, resume=True, workers=2)))
    assert resumed.steps == full.steps
    m1, _ = load_model(full.model_path)
    m2, card = load_model(resumed.model_path)
    for (n1, p1), (_, p2) in zip(m1.state_dict().items(), m2.state_dict().items(), strict=True):
        assert torch.equal(p1, p2), n1
    assert card.metrics["heldout"]["n_images"] == 1
    assert (tmp_path / "b" / "run" / "metrics.csv").read_text().count("\n") > full.steps // 2


@pytest.mark.slow
def test_torchrun_two_gloo_processes_keep_replicas_identical(tmp_path: Path, triplet_dir: Path) -> None:
    cfg = tmp_path / "c.json"
    val = [{"path": str(triplet_dir), "include": ["t0", "t1", "t2"]}]
    cfg.write_text(json.dumps(_cfg(tmp_path, triplet_dir, epochs=1, val=val, workers=1)))
    script = tmp_path / "ddp.py"
    # the training module exposes the trained replica through a hook for this check
    script.write_text(
        "import json, sys, hashlib, torch, torch.distributed as dist\n"
        "from mmcanet.config import config_from_dict\n"
        "from mmcanet import training\n"
        "cfg = config_from_dict(json.load(open(sys.argv[1])))\n"
        "res = training.train(cfg, keep_process_group=True)\n"
        "h = hashlib.sha256(b''.join(p.detach().numpy().tobytes() for p in res.model.parameters())).hexdigest()\n"
        "out = [None, None]\n"
        "dist.all_gather_object(out, h)\n"
        "rank = dist.get_rank()\n"
        "if rank == 0:  # the split, all-reduced validation equals one process scoring every image\n"
        "    from mmcanet.datasets import open_source\n"
        "    from mmcanet.evaluation import heldout_metrics\n"
        "    alone = heldout_metrics(res.model, [open_source(s.path, s.kind, 'val', s.include)[0] for s in cfg.val],\n"
        "                            torch.device('cpu'))\n"
        "    print('VAL', json.dumps([res.val_metrics, alone]), flush=True)\n"
        "dist.barrier()  # both ranks done communicating before either tears gloo down (else it can abort)\n"
        "dist.destroy_process_group()\n"
        "if rank == 0:  # one writer: two ranks printing at once can interleave on the shared stdout\n"
        "    print('HASHES', out[0], out[1], res.steps, flush=True)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), str(cfg)],
        capture_output=True, text=True, timeout=1800, env=env, cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("HASHES")][0]
    _, h0, h1, steps = line.split()
    assert h0 == h1
    assert int(steps) == 1  # 3 + 3 samples of two sources over 2 ranks: 3 per rank, 1 batch of 2
    split, alone = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("VAL")][0][4:])
    assert split["n_images"] == alone["n_images"] == 3
    for k in ("psnr", "ssim", "identity_psnr"):
        assert split[k] == pytest.approx(alone[k], rel=1e-6), k
    assert proc.stdout.count("model written") + proc.stderr.count("model written") <= 1  # rank 0 speaks
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.name != ".lock") == [
        "checkpoint.pt", "curves.png", "m.safetensors", "metrics.csv"]


def test_unknown_ids_in_include_or_exclude_are_named(tmp_path: Path, triplet_dir: Path) -> None:
    d = _cfg(tmp_path, triplet_dir)
    d["data"] = [{"path": str(triplet_dir), "exclude": ["t9"]}]
    cfg = config_from_dict(d)
    with pytest.raises(Exception, match="no triplet with id t9"):
        train(cfg)


def test_fine_tuning_starts_from_a_model_file(tmp_path: Path, triplet_dir: Path) -> None:
    first = train(config_from_dict(_cfg(tmp_path / "a", triplet_dir, max_steps=2)))
    cfg = config_from_dict(_cfg(tmp_path / "b", triplet_dir, max_steps=1, lr=1e-12, warmup_steps=1,
                                init=str(first.model_path)))
    second = train(cfg)
    m1, _ = load_model(first.model_path)
    m2, _ = load_model(second.model_path)
    for (n1, p1), (_, p2) in zip(m1.state_dict().items(), m2.state_dict().items(), strict=True):
        assert torch.allclose(p1, p2, atol=1e-6), n1
    with pytest.raises(ConfigError, match="init:"):
        train(config_from_dict(_cfg(tmp_path / "c", triplet_dir, init=str(first.model_path), strategy="iterative")))


def test_stop_at_ends_early_without_changing_the_schedule(tmp_path: Path, triplet_dir: Path) -> None:
    full = train(config_from_dict(_cfg(tmp_path / "a", triplet_dir)))
    early = train(config_from_dict(_cfg(tmp_path / "b", triplet_dir, stop_at=2)))
    assert early.steps == 2 < full.steps
    resumed = train(config_from_dict(_cfg(tmp_path / "b", triplet_dir, resume=True)))
    assert resumed.steps == full.steps
    m1, _ = load_model(full.model_path)
    m2, _ = load_model(resumed.model_path)
    for (n1, p1), (_, p2) in zip(m1.state_dict().items(), m2.state_dict().items(), strict=True):
        assert torch.equal(p1, p2), n1


def test_error_head_added_to_a_finished_model_trains_alone(tmp_path: Path, triplet_dir: Path) -> None:
    # a model trained without the trust layer (every file before it, the bundled one too) ...
    first = train(config_from_dict(_cfg(tmp_path / "a", triplet_dir, max_steps=2)))
    m1, card1 = load_model(first.model_path)
    assert m1.error_head is None and not card1.has_error_head
    # ... gets an error head trained on its frozen restoration
    second = train(config_from_dict(_cfg(tmp_path / "b", triplet_dir, max_steps=3, lr=1e-2, warmup_steps=1,
                                         model={**TINY_MODEL, "error_head": True}, init=str(first.model_path),
                                         train_only=["error_head"], loss_error=1.0)))
    m2, card2 = load_model(second.model_path)
    assert card2.has_error_head and m2.error_head is not None
    for name, p in m1.state_dict().items():
        assert torch.equal(p, m2.state_dict()[name]), name  # everything but the head is unchanged
    rows = (second.run_dir / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    nll = [float(r.split(",")[header.index("error_nll")]) for r in rows[1:]]
    assert len(nll) == 3 and all(np.isfinite(nll))
    s2, s1 = torch.rand(1, 13, 32, 32), torch.rand(1, 2, 32, 32)
    with torch.no_grad():
        out, err = m2.forward_with_error(s2, s1)
        assert torch.equal(out, m1(s2, s1))
    with pytest.raises(ConfigError, match="train_only"):  # no head in this network
        train(config_from_dict(_cfg(tmp_path / "c", triplet_dir, max_steps=1, train_only=["error_head"])))
    with pytest.raises(ConfigError, match="list of strings"):
        config_from_dict(_cfg(tmp_path / "d", triplet_dir, train_only="error_head"))
    with pytest.raises(ConfigError, match="init:"):  # a head cannot be dropped from a model that has one
        train(config_from_dict(_cfg(tmp_path / "e", triplet_dir, max_steps=1, init=str(second.model_path))))


def test_error_head_config_builds_on_the_finished_model() -> None:
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "error_head.toml")
    assert cfg.train_only == ["error_head"] and cfg.model == {"error_head": True}
    assert cfg.init.endswith("mmcanet_default.safetensors")
