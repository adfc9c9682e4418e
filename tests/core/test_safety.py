"""Data safety (docs/RELIABILITY.md): outputs never reach inputs, failed writes never look like success,
malformed model files and training configs fail with a message, training runs cannot clobber each other.

One test (or one parametrised test) per class of case; each failed on the code before the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasters
import torch
from mmcanet.bands import S2_BANDS_L1C
from mmcanet.cli import main
from mmcanet.config import config_from_dict
from mmcanet.errors import ConfigError, InputError, ModelFileError
from mmcanet.inference import RestoreOptions, restore_scene, restore_scene_with_model
from mmcanet.modelfile import ModelCard, load_model, save_model
from mmcanet.models import build_model, model_config
from mmcanet.output_files import remove_stale_partials
from mmcanet.outputs import check_outputs
from osgeo import gdal
from torch import nn
from toy_models import Card, Constant, Identity

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "core"
TINY = {"widths": [8, 8, 16, 16], "heads": 2, "window": 4}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    rc = main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


# ---- 1. an output that reaches an input by another spelling -------------------------------------------


def test_output_reaching_an_input_is_refused_and_the_input_untouched(
    tmp_path: Path, make_s2: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    s2 = make_s2("s2.tif")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link").symlink_to(tmp_path, target_is_directory=True)
    vrt = tmp_path / "s2.vrt"
    gdal.BuildVRT(str(vrt), [str(s2)])
    bands = tmp_path / "bands"
    bands.mkdir()
    for i, name in enumerate(rasters.S2_L1C):
        rasters.write_raster(bands / f"T31_{name}.tif", rasters.s2_array(32, 32)[i : i + 1], epsg=rasters.UTM31N,
                             geotransform=rasters.default_geotransform(), nodata=0)
    before = {p: _digest(p) for p in (s2, *bands.iterdir())}
    cases = [
        ("detect", "--input", str(s2), "--output", str(tmp_path / "sub" / ".." / "s2.tif")),  # `..`
        ("detect", "--input", str(s2), "--output", str(tmp_path / "link" / "s2.tif")),  # symlinked folder
        ("detect", "--input", str(vrt), "--output", str(s2)),  # the source file of a VRT
        ("simulate", "--input", str(s2), "--output", str(tmp_path / "link" / "sub" / ".." / "s2.tif")),
        ("detect", "--input", str(bands), "--output", str(bands / "T31_B04.tif")),  # a band file of the folder
        ("stack", "--optical", str(bands), "--output", str(bands / "stacked.tif")),  # inside the band folder
        ("simulate", "--input", str(s2), "--output", str(tmp_path / "a.tif"), "--opacity-output",
         str(tmp_path / "link" / "a.tif")),  # two outputs, one file
    ]
    for argv in cases:
        rc, err = _cli(capsys, *argv)
        assert rc == 1, argv
        assert "choose another output name" in err or "give each output its own name" in err, err
    assert {p: _digest(p) for p in before} == before
    assert not (bands / "stacked.tif").exists() and not (tmp_path / "a.tif").exists()


def test_check_outputs_catches_hard_links_and_model_files(tmp_path: Path) -> None:
    model = tmp_path / "m.safetensors"
    model.write_bytes(b"x")
    os.link(model, tmp_path / "alias.tif")
    with pytest.raises(InputError, match="model file"):
        check_outputs({"output": tmp_path / "alias.tif"}, {"model file": model})
    with pytest.raises(InputError, match="model file"):
        check_outputs({"output": tmp_path / "." / "m.safetensors"}, {"model file": str(model)})
    check_outputs({"output": tmp_path / "other.tif"}, {"model file": model})  # a new name is fine


def test_training_and_evaluation_outputs_cannot_reach_their_data(tmp_path: Path, make_s2: Callable[..., Path]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    make_s2("data/t0_s2_cloudy.tif")
    cfg = config_from_dict({"data": [str(data)], "run_dir": str(data / "run"), "output": str(tmp_path / "m.safetensors"),
                            "device": "cpu"})
    from mmcanet.training import train

    with pytest.raises(InputError, match="inside .*training data"):
        train(cfg)
    assert sorted(p.name for p in data.iterdir()) == ["t0_s2_cloudy.tif"]
    from mmcanet.evaluation import evaluate

    with pytest.raises(InputError, match="evaluation data"):
        evaluate(None, data, data)


# ---- 2. disk full: an error, the previous output intact, nothing partial -----------------------------------


def _limited(limit: int) -> Callable[[], None]:
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG, like a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize("command", ["simulate", "stack"])
def test_disk_full_fails_keeps_the_previous_output_and_leaves_nothing(tmp_path: Path, command: str) -> None:
    noise = np.random.default_rng(0).integers(1, 10000, (13, 192, 192), dtype=np.uint16)  # incompressible
    src = rasters.write_s2(tmp_path / "clear.tif", array=noise)
    out = tmp_path / "out.tif"
    out.write_bytes(b"previous good output")
    if command == "simulate":
        argv = ["simulate", "--input", str(src), "--output", str(out)]
    else:
        bands = tmp_path / "bands"
        bands.mkdir()
        for i, name in enumerate(rasters.S2_L1C):
            rasters.write_raster(bands / f"X_{name}.tif", noise[i : i + 1], epsg=rasters.UTM31N,
                                 geotransform=rasters.default_geotransform(), nodata=0)
        argv = ["stack", "--optical", str(bands), "--output", str(out)]
    env = {**os.environ, "PYTHONPATH": str(CORE)}
    res = subprocess.run([sys.executable, "-m", "mmcanet.cli", *argv], env=env, capture_output=True, text=True,
                         timeout=120, preexec_fn=_limited(200_000))  # main reported success here
    assert res.returncode == 1, res.stderr
    assert "disk full" in res.stderr and "Traceback" not in res.stderr
    assert out.read_bytes() == b"previous good output"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# ---- 4. stale .aux.xml; 7. output extension; 8. partial files of killed runs --------------------------------


def test_overwrite_removes_the_old_statistics_side_car(tmp_path: Path, make_s2: Callable[..., Path],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    s2 = make_s2("s2.tif")
    out = tmp_path / "mask.tif"
    assert _cli(capsys, "detect", "--input", str(s2), "--output", str(out))[0] == 0
    ds = gdal.Open(str(out))
    ds.GetRasterBand(1).ComputeStatistics(False)  # what QGIS does on first display: writes mask.tif.aux.xml
    ds = None
    assert Path(f"{out}.aux.xml").is_file()
    assert _cli(capsys, "detect", "--input", str(s2), "--output", str(out), "--binary")[0] == 0
    assert not Path(f"{out}.aux.xml").exists()


@pytest.mark.parametrize("name", ["out.png", "out.jp2", "out.vrt", "out"])
def test_output_extension_must_match_the_format(tmp_path: Path, make_s2: Callable[..., Path], name: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = _cli(capsys, "detect", "--input", str(make_s2("s2.tif")), "--output", str(tmp_path / name))
    assert rc == 1 and "must end in .tif or .tiff" in err
    assert not (tmp_path / name).exists()
    assert _cli(capsys, "detect", "--input", str(tmp_path / "s2.tif"), "--output", str(tmp_path / "OUT.TIF"))[0] == 0


def test_partial_file_of_a_killed_writer_is_removed_by_the_next_run(tmp_path: Path, make_s2: Callable[..., Path],
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mask.tif"
    script = textwrap.dedent(f"""
        import sys, time, numpy as np
        from mmcanet.raster_write import RasterWriter
        w = RasterWriter({str(out)!r}, width=64, height=512, count=1, dtype=np.uint8, geotransform=None,
                         crs_wkt=None, nodata=None, block=64)
        w.write_rows(0, np.ones((1, 128, 64), np.uint8))
        print("writing", flush=True)
        time.sleep(60)
    """)
    env = {**os.environ, "PYTHONPATH": str(CORE)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    partial = tmp_path / f".mask.tif.partial-{proc.pid}.tif"
    assert partial.is_file()
    live = tmp_path / f".mask.tif.partial-{os.getppid()}.tif"  # a writer that still runs: left alone
    live.write_bytes(b"busy")
    assert remove_stale_partials(out) == []  # the killed-to-be writer still runs
    proc.kill()
    proc.wait()
    assert partial.is_file()  # kill -9 left it
    assert _cli(capsys, "detect", "--input", str(make_s2("s2.tif")), "--output", str(out))[0] == 0
    assert not partial.exists() and live.exists() and out.is_file()


# ---- 9. malformed model cards and weights -----------------------------------------------------------------


@pytest.fixture()
def model_file(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = build_model("mmcanet", "single", **TINY)
    card = ModelCard(name="tiny", config=model_config("mmcanet", **TINY), tile_size=64, overlap=8)
    return save_model(tmp_path / "tiny.safetensors", model, card)


def _rewrite(src: Path, dst: Path, header_change: Callable[[dict[str, object]], None]) -> Path:
    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    header_change(header)
    new = json.dumps(header).encode()
    new += b" " * ((8 - len(new) % 8) % 8)
    dst.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])
    return dst


def _card_change(**change: object) -> Callable[[dict[str, object]], None]:
    def apply(header: dict[str, object]) -> None:
        meta = header["__metadata__"]
        assert isinstance(meta, dict)
        card = json.loads(meta["mmcanet_card"])
        card.update(change)
        meta["mmcanet_card"] = json.dumps(card)

    return apply


MALFORMED: dict[str, Callable[[dict[str, object]], None]] = {
    "string tile size": _card_change(tile_size="256"),
    "null overlap": _card_change(overlap=None),
    "overlap too large": _card_change(overlap=60),
    "normalisation not an object": _card_change(normalization=[1, 2]),
    "zero-width dB range": _card_change(normalization={"s2_max_dn": 10000, "s1_db_ranges": [[0, 0], [-30, 0]]}),
    "negative max DN": _card_change(normalization={"s2_max_dn": -1}),
    "bands not a list": _card_change(s2_bands=13),
    "string widths": _card_change(config={**TINY, "widths": "8,8,16,16"}),
    "config null": _card_change(config=None),
    "metadata is a list": lambda h: h.update({"__metadata__": ["x"]}),
    "card is not text": lambda h: h.update({"__metadata__": {"mmcanet_card": 5}}),
    "tensor without offsets": lambda h: h.update({"extra": {"dtype": "F32", "shape": [1]}}),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_model_card_is_a_model_file_error(model_file: Path, tmp_path: Path, case: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    bad = _rewrite(model_file, tmp_path / "bad.safetensors", MALFORMED[case])
    with pytest.raises(ModelFileError, match="bad.safetensors"):
        load_model(bad)
    rc, err = _cli(capsys, "info", str(bad))
    assert rc == 1 and "bad.safetensors" in err


def test_nan_weights_are_refused(tmp_path: Path) -> None:
    model = build_model("mmcanet", "single", **TINY)
    with torch.no_grad():
        next(model.parameters())[0].fill_(float("nan"))
    path = save_model(tmp_path / "nan.safetensors", model, ModelCard(config=model_config("mmcanet", **TINY)))
    with pytest.raises(ModelFileError, match="NaN or infinite"):
        load_model(path)


# ---- 10. training configuration types and ranges -----------------------------------------------------------

BAD_CONFIGS: dict[str, tuple[dict[str, object], str]] = {
    "string widths": ({"model": {"widths": "16,32"}}, "widths must be a list"),
    "string width entry": ({"model": {"widths": [16, "32"]}}, r"widths\[1\] must be an integer"),
    "zero heads": ({"model": {"heads": 0}}, "heads must be between"),
    "heads not dividing": ({"model": {"heads": 5}}, "divisible by heads"),
    "negative lr": ({"lr": -0.1}, "lr must be > 0"),
    "nan lr": ({"lr": float("nan")}, "finite"),
    "sar_dropout 5": ({"sar_dropout": 5}, "sar_dropout .*between 0 and 1"),
    "negative max_steps": ({"max_steps": -3}, "max_steps must be >= 0"),
    "negative loss": ({"loss_l1": -1.0}, "loss_l1 must be >= 0"),
    "output is run_dir": ({"output": "RUN"}, "is a folder"),
    "output not safetensors": ({"output": "RUN/model.pt"}, "must end in .safetensors"),
    "repeat 0": ({"data": [{"path": "d", "repeat": 0}]}, "repeat must be >= 1"),
    "include not a list": ({"data": [{"path": "d", "include": "t0"}]}, "include must be a list"),
    "resume and overwrite": ({"resume": True, "overwrite": True}, "exclude each other"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_training_config_values_are_named(tmp_path: Path, case: str) -> None:
    change, message = BAD_CONFIGS[case]
    d: dict[str, object] = {"run_dir": str(tmp_path / "run"), "output": str(tmp_path / "run" / "m.safetensors")}
    d.update(json.loads(json.dumps(change).replace("RUN", str(tmp_path / "run"))))
    with pytest.raises(ConfigError, match=message):
        config_from_dict(d, tmp_path)


# ---- 10/11. training runs: no silent clobbering, one run per run_dir, Ctrl-C keeps the work -------------------


@pytest.fixture()
def triplets(tmp_path: Path) -> Path:
    """Two small triplets in the shared-triplet layout."""
    root = tmp_path / "triplets"
    root.mkdir()
    rng = np.random.default_rng(3)
    for i in range(2):
        clear = (rng.random((13, 1, 1)) * 3000 + 500 + rng.normal(0, 200, (13, 32, 32))).clip(0, 10000)
        cloudy = clear.copy()
        cloudy[:, :16] = 7000
        kw = {"epsg": rasters.UTM31N, "geotransform": rasters.default_geotransform()}
        rasters.write_raster(root / f"t{i}_s2_cloudfree.tif", clear.astype(np.uint16), **kw)
        rasters.write_raster(root / f"t{i}_s2_cloudy.tif", cloudy.astype(np.uint16), **kw)
        rasters.write_raster(root / f"t{i}_s1.tif", rng.normal(-12, 3, (2, 32, 32)).astype(np.float32), **kw)
    return root


def _train_cfg(tmp_path: Path, data: Path, **kw: object) -> dict[str, object]:
    d: dict[str, object] = {
        "data": [str(data)], "model": TINY, "epochs": 3, "batch_size": 1, "crop": 16, "warmup_steps": 1,
        "checkpoint_every": 100, "log_every": 1, "run_dir": str(tmp_path / "run"),
        "output": str(tmp_path / "run" / "m.safetensors"), "device": "cpu", "threads": 1,
    }
    d.update(kw)
    return d


def test_a_second_run_in_a_run_dir_is_refused_unless_resumed_or_overwritten(tmp_path: Path, triplets: Path) -> None:
    from mmcanet.training import run_dir_lock, train

    train(config_from_dict(_train_cfg(tmp_path, triplets, max_steps=2)))
    first = _digest(tmp_path / "run" / "checkpoint.pt")
    with pytest.raises(ConfigError, match="holds another run .*--resume.*--overwrite"):
        train(config_from_dict(_train_cfg(tmp_path, triplets, max_steps=2)))
    assert _digest(tmp_path / "run" / "checkpoint.pt") == first
    with run_dir_lock(tmp_path / "run"), pytest.raises(InputError, match="in use by another training"):
        train(config_from_dict(_train_cfg(tmp_path, triplets, max_steps=2, overwrite=True)))
    assert train(config_from_dict(_train_cfg(tmp_path, triplets, max_steps=3, overwrite=True))).steps == 3


def test_ctrl_c_writes_a_checkpoint_and_resume_logs_each_step_once(tmp_path: Path, triplets: Path) -> None:
    from mmcanet.training import train

    calls = {"n": 0}

    def press_ctrl_c_at_step_3() -> bool:
        calls["n"] += 1
        if calls["n"] == 4:
            os.kill(os.getpid(), signal.SIGINT)  # what the terminal sends on Ctrl-C
        return False

    with pytest.raises(KeyboardInterrupt):
        train(config_from_dict(_train_cfg(tmp_path, triplets)), is_canceled=press_ctrl_c_at_step_3)
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ck["state"]["step"] == 3  # the signal came after step 3: checkpoint there, before step 4 starts
    result = train(config_from_dict(_train_cfg(tmp_path, triplets, resume=True)))
    steps = [int(line.split(",")[0]) for line in (tmp_path / "run" / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == list(range(1, result.steps + 1))


def test_damaged_or_foreign_checkpoint_on_resume_is_named(tmp_path: Path, triplets: Path) -> None:
    from mmcanet.training import train

    train(config_from_dict(_train_cfg(tmp_path, triplets, max_steps=2)))
    ckpt = tmp_path / "run" / "checkpoint.pt"
    with pytest.raises(ConfigError, match="another network"):
        train(config_from_dict(_train_cfg(tmp_path, triplets, resume=True, model={**TINY, "widths": [8, 8, 16, 32]})))
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    with pytest.raises(InputError, match="checkpoint .* cannot be read"):
        train(config_from_dict(_train_cfg(tmp_path, triplets, resume=True)))


def test_training_on_a_full_disk_fails_and_leaves_no_temporary_checkpoint(tmp_path: Path, triplets: Path) -> None:
    cfg = tmp_path / "c.yaml"  # JSON is YAML
    cfg.write_text(json.dumps(_train_cfg(tmp_path, triplets, max_steps=2, checkpoint_every=1)))
    script = "import json, sys; from mmcanet.cli import main; sys.exit(main(['train', '--config', sys.argv[1]]))"
    env = {**os.environ, "PYTHONPATH": str(CORE), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", script, str(cfg)], env=env, capture_output=True, text=True,
                         timeout=300, preexec_fn=_limited(20_000))
    assert res.returncode == 1, res.stderr[-2000:]
    assert "disk full" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "run" / "checkpoint.pt.tmp").exists() and not (tmp_path / "run" / "m.safetensors").exists()


# ---- restore: outputs vs inputs, SAR gaps, wrong scales and types, nodata, scene lists --------------------------


def _restore(s1: Path, s2: Path, out: Path, model: nn.Module | None = None, **kw: object) -> Any:
    kw = {"keep_clear": True, "smooth_coarse_bands": False, "tame_bright_cloud": False, **kw}  # exact-value plumbing, not the smoothing
    return restore_scene_with_model(model or Constant(0.3), Card(), RestoreOptions(sar=s1, optical=s2, output=out, **{"harmonise": 0, "sar_structure": 0, **kw}))


def test_restore_output_reaching_an_input_or_the_model_is_refused(tmp_path: Path, make_s2: Callable[..., Path],
                                                                  make_s1: Callable[..., Path]) -> None:
    s2, s1 = make_s2("s2.tif"), make_s1("s1.tif")
    (tmp_path / "d").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path, target_is_directory=True)
    model = tmp_path / "m.safetensors"
    model.write_bytes(b"weights")
    before = {p: _digest(p) for p in (s2, s1, model)}
    for out, kw in ((tmp_path / "d" / ".." / "s2.tif", {}), (tmp_path / "alias" / "s1.tif", {}),
                    (tmp_path / "o.tif", {"mask_output": tmp_path / "alias" / "o.tif"})):
        with pytest.raises(InputError, match="choose another output name|its own name"):
            _restore(s1, s2, out, **kw)
    with pytest.raises(InputError, match="model file"):
        restore_scene(RestoreOptions(sar=s1, optical=s2, output=tmp_path / "alias" / "m.safetensors", model=model))
    assert {p: _digest(p) for p in before} == before


def _s1_with(tmp_path: Path, change: Callable[[np.ndarray], None], nodata: float | None = None) -> Path:
    arr = rasters.s1_array(40, 48)
    change(arr)
    return rasters.write_s1(tmp_path / "s1.tif", 40, 48, array=arr, nodata=nodata)


SAR_GAPS: dict[str, tuple[Callable[[np.ndarray], None], float | None, float]] = {
    "all NaN": (lambda a: a.fill(np.nan), None, 1.0),
    "all nodata": (lambda a: a.fill(-9999.0), -9999.0, 1.0),
    "half NaN": (lambda a: a.__setitem__((slice(None), slice(None), slice(24, None)), np.nan), None, 0.5),
    "VH only NaN in a block": (lambda a: a.__setitem__((1, slice(0, 10), slice(0, 12)), np.nan), None, 120 / 1920),
}


@pytest.mark.parametrize("case", sorted(SAR_GAPS))
def test_missing_sar_never_blanks_valid_optical_pixels(tmp_path: Path, case: str) -> None:
    change, nodata, fraction = SAR_GAPS[case]
    s1 = _s1_with(tmp_path, change, nodata)
    s2 = rasters.write_s2(tmp_path / "s2.tif", 40, 48)
    res = _restore(s1, s2, tmp_path / "o.tif", keep_clear=False)
    out = rasters.read(res.output)
    assert (out == 3000).all() and res.nodata_fraction == 0  # every valid optical pixel restored
    assert res.sar_missing_fraction == pytest.approx(fraction)
    assert any("restored from the optical image alone" in w for w in res.warnings)
    assert float(gdal.Open(str(res.output)).GetMetadataItem("MMCANET_SAR_MISSING_FRACTION")) == pytest.approx(fraction)


def _optical(tmp_path: Path, arr: np.ndarray, nodata: float | None = 0) -> Path:
    return rasters.write_raster(tmp_path / "s2.tif", arr, geotransform=rasters.default_geotransform(), nodata=nodata,
                                descriptions=S2_BANDS_L1C)


WRONG_OPTICAL: dict[str, tuple[Callable[[np.ndarray], np.ndarray], str]] = {
    "reflectance 0-1": (lambda a: (a / 10000.0).astype(np.float32), "reflectance on the 0-1 scale"),
    "uint8 picture": (lambda a: (a // 40).astype(np.uint8), "8-bit pixels"),
    "complex": (lambda a: a.astype(np.complex64), "complex"),
}


@pytest.mark.parametrize("case", sorted(WRONG_OPTICAL))
def test_optical_in_the_wrong_scale_or_type_is_refused(tmp_path: Path, make_s1: Callable[..., Path], case: str) -> None:
    convert, message = WRONG_OPTICAL[case]
    s2 = _optical(tmp_path, convert(rasters.s2_array(40, 48)), nodata=None)
    with pytest.raises(InputError, match=message):
        _restore(make_s1(height=40, width=48), s2, tmp_path / "o.tif")
    assert not (tmp_path / "o.tif").exists()


def test_int16_optical_with_a_negative_nodata_keeps_it(tmp_path: Path, make_s1: Callable[..., Path]) -> None:
    arr = rasters.s2_array(40, 48).astype(np.int16)
    arr[:, :4] = -9999
    s2 = _optical(tmp_path, arr, nodata=-9999)
    res = _restore(make_s1(height=40, width=48), s2, tmp_path / "o.tif", model=Identity(), keep_clear=False)
    ds = gdal.Open(str(res.output))
    out = ds.ReadAsArray()
    assert out.dtype == np.int16 and ds.GetRasterBand(1).GetNoDataValue() == -9999
    assert (out[:, :4] == -9999).all()
    np.testing.assert_array_equal(out[:, 4:], arr[:, 4:])  # no wrap-around to 55537


def _sar(tmp_path: Path, arr: np.ndarray) -> Path:
    return rasters.write_raster(tmp_path / "s1.tif", arr, geotransform=rasters.default_geotransform(),
                                descriptions=("VV", "VH"))


WRONG_SAR: dict[str, tuple[Callable[[np.ndarray], np.ndarray], str]] = {
    "dB x 100 as int16": (lambda db: np.rint(db * 100).astype(np.int16), "scaled dB"),
    "uint8 picture": (lambda db: np.clip((db + 30) * 8, 0, 255).astype(np.uint8), "8-bit pixels"),
    "complex": (lambda db: (10 ** (db / 20)).astype(np.complex64), "complex"),
    "linear amplitude": (lambda db: (10 ** (db / 20)).astype(np.float32), "amplitude, not power"),
}


@pytest.mark.parametrize("case", sorted(WRONG_SAR))
def test_sar_in_the_wrong_scale_or_type_is_refused(tmp_path: Path, make_s2: Callable[..., Path], case: str) -> None:
    convert, message = WRONG_SAR[case]
    s1 = _sar(tmp_path, convert(rasters.s1_array(40, 48)))
    with pytest.raises(InputError, match=message):
        _restore(s1, make_s2(height=40, width=48), tmp_path / "o.tif")
    power = _sar(tmp_path, (10 ** (rasters.s1_array(40, 48) / 10)).astype(np.float32))  # linear power: accepted
    assert _restore(power, make_s2(height=40, width=48), tmp_path / "o.tif").sar_units == "linear"


def test_a_valid_zero_in_one_band_is_not_hidden_as_nodata(tmp_path: Path, make_s1: Callable[..., Path]) -> None:
    arr = rasters.s2_array(40, 48)
    arr[10, 20:30] = 0  # B10 (cirrus) reads 0 DN on valid pixels
    arr[:, :2] = 0  # real nodata rows: 0 in every band
    s2 = _optical(tmp_path, arr, nodata=0)
    res = _restore(make_s1(height=40, width=48), s2, tmp_path / "o.tif", model=Identity(), keep_clear=False)
    ds = gdal.Open(str(res.output))
    b10 = ds.GetRasterBand(11)
    assert (b10.GetMaskBand().ReadAsArray()[20:30] == 255).all()  # GDAL / QGIS see valid pixels there
    assert (b10.ReadAsArray()[20:30] == 1).all()  # moved by 1 DN away from nodata
    assert (ds.GetRasterBand(1).GetMaskBand().ReadAsArray()[:2] == 0).all()  # the nodata rows stay nodata


def test_scene_list_with_one_output_twice_or_not_utf8_is_refused(tmp_path: Path, make_s2: Callable[..., Path],
                                                                  make_s1: Callable[..., Path],
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    make_s2("s2.tif")
    make_s1("s1.tif")
    (tmp_path / "list.csv").write_text("s1.tif,s2.tif,out.tif\ns1.tif,s2.tif,./sub/../out.tif\n")
    (tmp_path / "sub").mkdir()
    rc, err = _cli(capsys, "restore", "--list", str(tmp_path / "list.csv"))
    assert rc == 1 and "output of line 2" in err and "own name" in err
    (tmp_path / "list.csv").write_bytes("s1.tif,s2.tif,sortie-é.tif\n".encode("latin-1"))
    rc, err = _cli(capsys, "restore", "--list", str(tmp_path / "list.csv"))
    assert rc == 1 and "not UTF-8" in err
    assert not list(tmp_path.glob("*out*.tif")) and not list(tmp_path.glob("sortie*"))


def test_evaluation_refuses_a_reference_of_another_processing_level(tmp_path: Path) -> None:
    from mmcanet.datasets import TripletFolder

    kw = {"epsg": rasters.UTM31N, "geotransform": rasters.default_geotransform()}
    rasters.write_raster(tmp_path / "a_s2_cloudy.tif", rasters.s2_array(32, 32), **kw)
    rasters.write_raster(tmp_path / "a_s2_cloudfree.tif", rasters.s2_array(32, 32, bands=12), **kw)
    rasters.write_raster(tmp_path / "a_s1.tif", rasters.s1_array(32, 32), **kw)
    with pytest.raises(InputError, match="13 bands and the cloud-free reference 12"):
        TripletFolder(tmp_path)
