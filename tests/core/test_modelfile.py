"""Model files: card round trip, clear errors on corrupt / truncated / incompatible files, no QGIS needed."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from mmcanet.bands import S2_BANDS_L2A
from mmcanet.errors import ModelFileError
from mmcanet.modelfile import ModelCard, default_model_path, load_model, read_card, save_model
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


def _resave(src: Path, dst: Path, change: Callable[[dict[str, torch.Tensor]], None]) -> Path:
    """The same card with the weights changed (a tensor dropped, added ...), written by safetensors itself."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(src))
    change(state)
    save_file(state, str(dst), metadata={"mmcanet_card": read_card(src).to_json()})
    return dst


def test_weights_that_lack_or_add_tensors_are_named(model_file: Path, tmp_path: Path) -> None:
    first = sorted(load_model(model_file)[0].state_dict())[0]
    lacking = _resave(model_file, tmp_path / "lacking.safetensors", lambda s: s.pop(first))
    with pytest.raises(ModelFileError, match=rf"lacking.safetensors: weights do not match the architecture in its card "
                                             rf"\(missing 1 tensors e.g. \['{re.escape(first)}'\], unexpected 0 e.g. \[\]\)"):
        load_model(lacking)
    extra = _resave(model_file, tmp_path / "extra.safetensors", lambda s: s.update(spare=torch.zeros(3)))
    with pytest.raises(ModelFileError, match=r"\(missing 0 tensors e.g. \[\], unexpected 1 e.g. \['spare'\]\)"):
        load_model(extra)


def test_the_bundled_model_is_the_default_and_loads_for_inference() -> None:
    model, card = load_model()
    assert card == read_card(default_model_path()) and not model.training
    assert next(model.parameters()).device.type == "cpu"


def test_a_model_for_12_band_level_2a_input_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = build_model("mmcanet", "single", bands=12, **CFG).eval()
    card = ModelCard(name="l2a", config=model_config("mmcanet", **CFG), s2_bands=S2_BANDS_L2A)
    loaded, got = load_model(save_model(tmp_path / "l2a.safetensors", model, card))
    assert got.s2_bands == S2_BANDS_L2A
    s2, s1 = torch.rand(1, 12, 16, 16), torch.rand(1, 2, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(s2, s1), model(s2, s1))


def test_save_makes_missing_folders_and_leaves_only_the_file(model_file: Path, tmp_path: Path) -> None:
    model, card = load_model(model_file)
    target = tmp_path / "a" / "b" / "m.safetensors"
    assert save_model(target, model, card) == target
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.safetensors"]
    assert read_card(target) == card


def test_a_failed_save_keeps_the_old_file_and_says_why(model_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.torch

    model, card = load_model(model_file)
    before = model_file.read_bytes()

    def full_disk(*_: object, **__: object) -> None:
        raise OSError(28, "No space left on device\nsecond line")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    with pytest.raises(ModelFileError) as info:
        save_model(model_file, model, card)
    assert str(info.value) == (f"{model_file}: the model file cannot be written ([Errno 28] No space left on device); "
                               "is the disk full? An existing file of that name is kept")
    assert model_file.read_bytes() == before
    assert sorted(p.name for p in model_file.parent.iterdir()) == [model_file.name]


def test_nan_weights_message_says_what_to_do(model_file: Path, tmp_path: Path) -> None:
    name = sorted(load_model(model_file)[0].state_dict())[0]
    bad = _resave(model_file, tmp_path / "nan.safetensors", lambda s: s[name].view(-1)[0].fill_(float("inf")))
    with pytest.raises(ModelFileError) as info:
        load_model(bad)
    assert str(info.value) == (f"{bad}: the weights contain NaN or infinite values (1 tensor(s), e.g. {name!r}); "
                               "the file is damaged or came from a diverged training: use another model file")


def test_a_trust_predictor_in_the_card_is_attached_to_the_model(model_file: Path, tmp_path: Path) -> None:
    from mmcanet.models.error_features import FeatureErrorModel

    table = {"features": ["cloud", "log_bright"], "coef": [1.5, -0.5], "intercept": -4.0, "mean": [0.2, -2.0],
             "std": [0.3, 0.5]}
    with_trust = tmp_path / "trust.safetensors"
    _rewrite_card(model_file, with_trust, {"trust": {"predictor": table, "kept_error": 0.01}})
    model, card = load_model(with_trust)
    assert isinstance(model.error_predictor, FeatureErrorModel) and card.has_error_head
    assert model.error_predictor.to_card()["features"] == ["cloud", "log_bright"]
    assert load_model(model_file)[0].error_predictor is None
    unknown = tmp_path / "unknown.safetensors"
    _rewrite_card(model_file, unknown, {"trust": {"predictor": {**table, "features": ["cloud", "moon_phase"]}}})
    with pytest.raises(ModelFileError) as info:
        load_model(unknown)
    message = str(info.value)
    assert message.startswith(f"{unknown}: trust predictor: unknown feature(s) ['moon_phase']")
    assert message.endswith("; use a model file written for this version, or refit its trust layer with scripts/fit_trust.py")
