"""Model files: card round trip, clear errors on corrupt / truncated / incompatible files, no QGIS needed."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmcanet.errors import ModelFileError
from mmcanet.modelfile import ModelCard, load_model, read_card, save_model
from mmcanet.models import build_model, model_config

CFG = {"widths": [8, 8, 16, 16], "heads": 2, "window": 4}


@pytest.fixture()
def model_file(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = build_model("mmcanet", "iterative", **CFG)
    card = ModelCard(name="tiny", arch="mmcanet", strategy="iterative", config=model_config("mmcanet", **CFG),
                     tile_size=128, overlap=16, metrics={"heldout": {"psnr": 25.5}})
    return save_model(tmp_path / "tiny.safetensors", model, card)


def test_round_trip_keeps_weights_and_card(model_file: Path) -> None:
    model, card = load_model(model_file)
    assert card.name == "tiny" and card.strategy == "iterative" and card.tile_size == 128
    assert card.normalization.s1_db_ranges == ((-25.0, 0.0), (-32.5, 0.0))
    assert "held-out PSNR 25.50 dB" in card.summary()
    torch.manual_seed(0)
    ref = build_model("mmcanet", "iterative", **CFG).eval()
    s2, s1 = torch.rand(1, 13, 24, 24), torch.rand(1, 2, 24, 24)
    with torch.no_grad():
        assert torch.equal(model(s2, s1), ref(s2, s1))
    assert read_card(model_file) == card


def test_truncated_file(model_file: Path, tmp_path: Path) -> None:
    data = model_file.read_bytes()
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        load_model(bad)


def test_garbage_and_missing_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00\x01not a model at all" * 10)
    with pytest.raises(ModelFileError, match="junk.safetensors"):
        load_model(junk)
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "nope.safetensors")
    pickle_like = tmp_path / "model.pt"
    torch.save({"a": torch.zeros(1)}, pickle_like)
    with pytest.raises(ModelFileError):
        load_model(pickle_like)


def _rewrite_card(src: Path, dst: Path, change: dict[str, object]) -> None:
    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    card = json.loads(header["__metadata__"]["mmcanet_card"])
    card.update(change)
    header["__metadata__"]["mmcanet_card"] = json.dumps(card)
    new = json.dumps(header).encode()
    new += b" " * ((8 - len(new) % 8) % 8)
    dst.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])


def test_incompatible_cards(model_file: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.safetensors"
    _rewrite_card(model_file, other, {"config": model_config("mmcanet", widths=[8, 16, 16, 32], heads=2, window=4)})
    with pytest.raises(ModelFileError, match="do not match"):
        load_model(other)
    _rewrite_card(model_file, other, {"format": "someone-else/9"})
    with pytest.raises(ModelFileError, match="unsupported model format"):
        load_model(other)
    _rewrite_card(model_file, other, {"arch": "resnet"})
    with pytest.raises(ModelFileError, match="unsupported network"):
        load_model(other)


def test_core_imports_without_qgis_or_qt(tmp_path: Path) -> None:
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('qgis', 'PyQt5', 'PyQt6'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, _Block())\n"
    )
    code = (
        "import importlib, pkgutil, mmcanet\n"
        "for m in pkgutil.walk_packages(mmcanet.__path__, 'mmcanet.'):\n"
        "    importlib.import_module(m.name)\n"
        "import sys; assert not any(k.split('.')[0] in ('qgis', 'PyQt5') for k in sys.modules)\n"
        "print('ok')\n"
    )
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("ok")
