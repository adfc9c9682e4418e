"""The `mmcanet` commands and the model-file rule, by value: info, stack, train, restore --list /
--threads / --gdal-cache-mb, Ctrl-C and SIGTERM (exit 130, no partial file), pickles refused before
anything is unpickled, evaluation clipping the model's output.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasters
import torch
from mmcanet.cli import main
from mmcanet.commands.restore import read_list
from mmcanet.errors import ModelFileError
from osgeo import gdal

REPO = Path(__file__).resolve().parents[2]
TINY = {"widths": [4, 8], "heads": 1, "window": 4, "stages": 1}


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _env() -> dict[str, str]:
    """Environment of a child `python -m mmcanet.cli`: this checkout's core, one torch thread."""
    return dict(os.environ, PYTHONPATH=str(REPO / "core"), OMP_NUM_THREADS="1")


@pytest.fixture
def tiny_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mmcanet import modelfile, models

    torch.manual_seed(0)
    model = models.build_model("mmcanet", "single", **TINY)
    card = modelfile.ModelCard(name="tiny-cli", config=TINY, tile_size=32, overlap=8, training={"steps": 3})
    return modelfile.save_model(tmp_path_factory.mktemp("model") / "tiny.safetensors", model, card)


# ---- model files are data: a pickle is refused before anything is unpickled ----------------------------


class _Payload:
    """Unpickling this creates ``path``: stands for any code a malicious pickle would run."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.path, "w"))


@pytest.fixture
def pickles(tmp_path: Path) -> dict[str, Path]:
    """A torch.save zip and a plain pickle, each with a payload; proves the payload works when unpickled."""
    control = tmp_path / "control-marker"
    torch.save({"weights": _Payload(control)}, tmp_path / "control.pt")
    torch.load(tmp_path / "control.pt", weights_only=False)  # what loading a pickle would do
    assert control.exists(), "the payload creates its marker when unpickled"
    marker = tmp_path / "marker"
    out = {"torch.save zip": tmp_path / "evil.safetensors", "plain pickle": tmp_path / "evil.pth"}
    torch.save({"weights": _Payload(marker)}, out["torch.save zip"])
    out["plain pickle"].write_bytes(pickle.dumps({"weights": _Payload(marker)}))
    return out


@pytest.mark.parametrize("kind", ["torch.save zip", "plain pickle"])
def test_pickled_model_file_is_refused_before_unpickling(pickles: dict[str, Path], tmp_path: Path, kind: str) -> None:
    from mmcanet.modelfile import load_model, read_card

    path = pickles[kind]
    for load in (load_model, read_card):
        with pytest.raises(ModelFileError, match=str(path.name)):
            load(path)
    assert not (tmp_path / "marker").exists(), "nothing was unpickled"


def test_pickled_model_file_through_the_cli(pickles: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s2, s1 = rasters.write_s2(tmp_path / "s2.tif", 32, 32), rasters.write_s1(tmp_path / "s1.tif", 32, 32)
    for path in pickles.values():
        assert main(["info", str(path)]) == 1
        assert main(["restore", "--sar", str(s1), "--optical", str(s2), "--output", str(tmp_path / "o.tif"),
                     "--model", str(path), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "not a safetensors model file" in err and "Traceback" not in err
    assert not (tmp_path / "marker").exists() and not (tmp_path / "o.tif").exists()


# ---- info -----------------------------------------------------------------------------------------------


def test_info_describes_the_model_file(tiny_model_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mmcanet.complexity import count_params
    from mmcanet.modelfile import load_model

    model, _ = load_model(tiny_model_file)
    assert main(["info", str(tiny_model_file), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["path"] == str(tiny_model_file) and d["name"] == "tiny-cli" and d["arch"] == "mmcanet"
    assert d["params"] == count_params(model) == sum(p.numel() for p in model.parameters())
    assert (d["tile_size"], d["overlap"], d["config"], d["training"]) == (32, 8, TINY, {"steps": 3})
    assert d["s2_bands"] == list(rasters.S2_L1C) and d["s1_bands"] == ["VV", "VH"]
    assert d["gmacs_per_256_tile"] > 0
    from mmcanet.models import DEFAULT_CONFIGS

    assert d["effective_config"] == {**DEFAULT_CONFIGS["mmcanet"], **TINY}  # what the network was built with
    assert d["effective_config"]["guide_reach"] == 16 and "guide_reach" not in d["config"]
    assert main(["info", str(tiny_model_file)]) == 0
    text = capsys.readouterr().out
    assert '"guide_reach": 16' in text
    assert f"parameters : {d['params']:,}" in text and "tiles      : 32 px, overlap 8 px" in text


# ---- stack ----------------------------------------------------------------------------------------------


def test_stack_sar_folder_writes_vv_then_vh(tmp_path: Path) -> None:
    folder = tmp_path / "s1"
    folder.mkdir()
    sar = rasters.s1_array(30, 40)
    # VH sorts first by name: the stack must still be VV, VH
    rasters.write_raster(folder / "S1A_x_VH.tif", sar[1], geotransform=rasters.default_geotransform())
    rasters.write_raster(folder / "S1A_x_VV.tif", sar[0], geotransform=rasters.default_geotransform())
    out = tmp_path / "stack.tif"
    assert main(["stack", "--sar", str(folder), "--output", str(out)]) == 0
    ds = gdal.Open(str(out))
    assert [ds.GetRasterBand(i).GetDescription() for i in (1, 2)] == ["VV", "VH"]
    np.testing.assert_array_equal(ds.ReadAsArray(), sar)
    assert ds.GetGeoTransform() == rasters.default_geotransform()


def test_stack_optical_band_folder_puts_bands_in_order(tmp_path: Path) -> None:
    folder = tmp_path / "s2"
    folder.mkdir()
    arr = rasters.s2_array(20, 20)
    for k, name in enumerate(rasters.S2_L1C):
        rasters.write_raster(folder / f"T31UDQ_20200101T105441_{name}.tif", arr[k], geotransform=rasters.default_geotransform())
    out = tmp_path / "stack.tif"
    assert main(["stack", "--optical", str(folder), "--output", str(out)]) == 0
    ds = gdal.Open(str(out))
    assert tuple(ds.GetRasterBand(i + 1).GetDescription() for i in range(13)) == rasters.S2_L1C
    np.testing.assert_array_equal(ds.ReadAsArray(), arr)


def test_stack_refuses_an_incomplete_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "s1").mkdir()
    rasters.write_raster(tmp_path / "s1" / "x_VV.tif", rasters.s1_array(8, 8)[0], geotransform=rasters.default_geotransform())
    assert main(["stack", "--sar", str(tmp_path / "s1"), "--output", str(tmp_path / "o.tif")]) == 1
    assert "VH" in capsys.readouterr().err and not (tmp_path / "o.tif").exists()


# ---- train ----------------------------------------------------------------------------------------------


def test_train_command_writes_a_loadable_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mmcanet.modelfile import load_model

    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        rasters.write_s1(data / f"t{i}_s1.tif", 32, 32, seed=10 + i)
        rasters.write_s2(data / f"t{i}_s2_cloudy.tif", 32, 32, seed=20 + i)
        rasters.write_s2(data / f"t{i}_s2_cloudfree.tif", 32, 32, array=rasters.s2_array(32, 32, seed=20 + i, cloud=False))
    out = tmp_path / "run" / "m.safetensors"
    (tmp_path / "c.toml").write_text(
        f'data = ["{data}"]\nval = []\nepochs = 1\nbatch_size = 1\ncrop = 16\nmax_steps = 2\n'
        f'run_dir = "{tmp_path / "run"}"\noutput = "{out}"\ndevice = "cpu"\nthreads = 1\nseed = 3\n'
        '[model]\nwidths = [4, 8]\nheads = 1\nwindow = 4\n'
    )
    assert main(["train", "--config", str(tmp_path / "c.toml")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"model: {out}"
    model, card = load_model(out)
    assert card.arch == "mmcanet" and card.config["widths"] == [4, 8]
    assert list((tmp_path / "run").glob("checkpoint*"))
    with torch.no_grad():
        y = model(torch.full((1, 13, 16, 16), 0.2), torch.full((1, 2, 16, 16), 0.5))
    assert y.shape == (1, 13, 16, 16) and torch.isfinite(y).all()
    bad = tmp_path / "bad.toml"
    bad.write_text("epochz = 1\n")
    assert main(["train", "--config", str(bad)]) == 1
    assert "epochz" in capsys.readouterr().err


# ---- restore: --list, --threads, --gdal-cache-mb -----------------------------------------------------------


def test_list_continues_past_a_failed_scene(tiny_model_file: Path, tmp_path: Path) -> None:
    for i in (1, 3):
        rasters.write_s1(tmp_path / f"s1_{i}.tif", 30, 30, seed=i)
        rasters.write_s2(tmp_path / f"s2_{i}.tif", 30, 30, seed=i)
    rasters.write_s1(tmp_path / "s1_2.tif", 30, 30)
    rasters.write_raster(tmp_path / "s2_2.tif", np.ones((3, 30, 30), np.uint8), geotransform=rasters.default_geotransform())
    lst = tmp_path / "scenes.csv"
    lst.write_text("s1_1.tif,s2_1.tif,o1.tif\ns1_2.tif,s2_2.tif,o2.tif\ns1_3.tif,s2_3.tif,o3.tif\n")
    # in a child process, as a user runs it (exit code and stderr of the real command)
    proc = subprocess.run([sys.executable, "-m", "mmcanet.cli", "restore", "--list", str(lst), "--model",
                           str(tiny_model_file), "--device", "cpu"], env=_env(), capture_output=True, text=True,
                          timeout=300, check=False)
    err = proc.stderr
    assert proc.returncode == 1, err
    assert (tmp_path / "o1.tif").is_file() and (tmp_path / "o3.tif").is_file() and not (tmp_path / "o2.tif").exists()
    assert "s2_2.tif' has 3 band(s)" in err and "1 of 3 scene(s) failed" in err
    assert not [n for n in files(tmp_path) if ".partial" in n]
    assert rasters.read(tmp_path / "o3.tif").shape == (13, 30, 30)


def test_list_under_torchrun_finishes_every_rank_despite_a_failed_scene(tiny_model_file: Path, tmp_path: Path) -> None:
    # 3 scenes on 2 ranks: rank 0 gets lines 1 and 3, rank 1 only the bad line 2, so rank 1 is done first;
    # if its failure ended it with a non-zero exit, torchrun would stop rank 0 before scene 3
    for i in (1, 3):
        rasters.write_s1(tmp_path / f"s1_{i}.tif", 30, 30, seed=i)
        rasters.write_s2(tmp_path / f"s2_{i}.tif", 30, 30, seed=i)
    rasters.write_s1(tmp_path / "s1_2.tif", 30, 30)
    rasters.write_raster(tmp_path / "s2_2.tif", np.ones((3, 30, 30), np.uint8), geotransform=rasters.default_geotransform())
    lst = tmp_path / "scenes.csv"
    lst.write_text("s1_1.tif,s2_1.tif,o1.tif\ns1_2.tif,s2_2.tif,o2.tif\ns1_3.tif,s2_3.tif,o3.tif\n")
    failures = tmp_path / "failed.csv"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "mmcanet.cli",
           "restore", "--list", str(lst), "--model", str(tiny_model_file), "--device", "cpu", "--failures", str(failures)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900, check=False)
    err = proc.stdout + proc.stderr
    assert proc.returncode != 0, "the exit status says a scene failed"
    assert (tmp_path / "o1.tif").is_file() and (tmp_path / "o3.tif").is_file(), err
    assert not (tmp_path / "o2.tif").exists() and not [n for n in files(tmp_path) if ".partial" in n]
    assert "[rank 1/2] " in err and "s2_2.tif' has 3 band(s)" in err, "the scene's error is in the log, per rank"
    assert "[all ranks] 1 of 3 scene(s) failed" in err, "rank 0 sums up every rank"
    lines = failures.read_text().splitlines()
    assert [x for x in lines if not x.startswith("#")] == [f"{tmp_path / 's1_2.tif'},{tmp_path / 's2_2.tif'},{tmp_path / 'o2.tif'}"]
    assert "has 3 band(s)" in lines[1]
    assert read_list(failures) == [(str(tmp_path / "s1_2.tif"), str(tmp_path / "s2_2.tif"), str(tmp_path / "o2.tif"), None)]
    # after the fix, rerunning the list with --skip-existing restores only the missing scene
    rasters.write_s2(tmp_path / "s2_2.tif", 30, 30, seed=2)
    rerun = subprocess.run([sys.executable, "-m", "mmcanet.cli", "restore", "--list", str(lst), "--model",
                            str(tiny_model_file), "--device", "cpu", "--skip-existing"], env=_env(), capture_output=True,
                           text=True, timeout=300, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert "skipping 2 scene(s) whose output exists" in rerun.stderr and "1 scene(s) to restore" in rerun.stderr
    assert (tmp_path / "o2.tif").is_file()


@pytest.fixture
def restore_torch_threads() -> Any:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_option_sets_torch_threads(tiny_model_file: Path, tmp_path: Path, restore_torch_threads: None,
                                           caplog: pytest.LogCaptureFixture, threads: int) -> None:
    s2, s1 = rasters.write_s2(tmp_path / "s2.tif", 24, 24), rasters.write_s1(tmp_path / "s1.tif", 24, 24)
    torch.set_num_threads(3)
    with caplog.at_level("INFO"):
        assert main(["restore", "--sar", str(s1), "--optical", str(s2), "--output", str(tmp_path / "o.tif"),
                     "--model", str(tiny_model_file), "--device", "cpu", "--threads", str(threads)]) == 0
    assert torch.get_num_threads() == threads
    assert f"torch CPU threads: {threads}" in caplog.text


def test_gdal_cache_option_caps_gdals_cache(tiny_model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s2, s1 = rasters.write_s2(tmp_path / "s2.tif", 24, 24), rasters.write_s1(tmp_path / "s1.tif", 24, 24)
    monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    before = gdal.GetCacheMax()
    args = ["restore", "--sar", str(s1), "--optical", str(s2), "--model", str(tiny_model_file), "--device", "cpu"]
    try:
        assert main([*args, "--output", str(tmp_path / "a.tif"), "--gdal-cache-mb", "37"]) == 0
        assert gdal.GetCacheMax() == 37 * 1024 * 1024
        assert main([*args, "--output", str(tmp_path / "b.tif")]) == 0
        assert gdal.GetCacheMax() == 256 * 1024 * 1024  # the default of --gdal-cache-mb
        monkeypatch.setenv("GDAL_CACHEMAX", "100")  # the user's own setting wins
        gdal.SetCacheMax(123 * 1024 * 1024)
        assert main([*args, "--output", str(tmp_path / "c.tif"), "--gdal-cache-mb", "37"]) == 0
        assert gdal.GetCacheMax() == 123 * 1024 * 1024
    finally:
        gdal.SetCacheMax(before)


# ---- Ctrl-C / SIGTERM: exit 130, no partial file -----------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_run_exits_130_and_leaves_no_file(tiny_model_file: Path, tmp_path: Path, sig: int) -> None:
    work = tmp_path / "work"
    work.mkdir()
    s2 = rasters.write_s2(work / "s2.tif", 640, 640)
    s1 = rasters.write_s1(work / "s1.tif", 640, 640)
    before = files(work)
    cmd = [sys.executable, "-m", "mmcanet.cli", "restore", "--sar", str(s1), "--optical", str(s2),
           "--output", str(work / "o.tif"), "--mask-output", str(work / "m.tif"), "--model", str(tiny_model_file),
           "--device", "cpu", "--batch-size", "1", "--no-keep-clear"]
    # a suite started in the background (nohup, `cmd &` in a script) hands its children SIGINT ignored, and
    # Python then rightly ignores Ctrl-C too: the run gets the default disposition, as in a terminal
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not [n for n in files(work) if ".partial-" in n]:  # the output is being written
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never started writing"
            time.sleep(0.02)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert files(work) == before


# ---- evaluation clips the model's output to [0, 1] before scoring -------------------------------------------


class _Constant(torch.nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, s2: torch.Tensor, s1: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return torch.full_like(s2, self.value)


def test_evaluation_clips_model_output(tmp_path: Path) -> None:
    from mmcanet.evaluation import evaluate_model, open_evaluation_data
    from mmcanet.metrics import compute_metrics

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    clear = rasters.s2_array(32, 32, seed=4, cloud=False)
    rasters.write_s2(data_dir / "t0_s2_cloudfree.tif", 32, 32, array=clear)
    rasters.write_s2(data_dir / "t0_s2_cloudy.tif", 32, 32, seed=4)
    rasters.write_s1(data_dir / "t0_s1.tif", 32, 32)
    data, _ = open_evaluation_data(data_dir)
    ref = clear.astype(np.float32) / 10000
    rows = {}
    for value in (-0.5, 0.0, 1.0, 2.0):
        res = evaluate_model(_Constant(value), data, tmp_path / f"e{value}", quicklooks=0, use_mask=False)
        rows[value] = res.rows[0]
    for over, edge in ((-0.5, 0.0), (2.0, 1.0)):
        expected = compute_metrics(np.full_like(ref, edge), ref)
        for k, v in expected.items():
            assert rows[over][f"model_{k}"] == pytest.approx(v, rel=1e-6), (over, k)
            assert rows[edge][f"model_{k}"] == pytest.approx(v, rel=1e-6), (edge, k)
