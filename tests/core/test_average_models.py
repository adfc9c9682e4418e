"""scripts/average_models.py: the weighted mean of continuations of one model, refused for other networks."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from mmcanet.errors import ModelFileError
from mmcanet.modelfile import ModelCard, load_model, save_model
from mmcanet.models import build_model

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "average_models.py"
TINY = {"widths": [4, 8], "heads": 1, "window": 4, "stages": 1}


def _script():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("average_models", SCRIPT)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def _model(path: Path, seed: int, config: dict | None = None) -> Path:
    torch.manual_seed(seed)
    cfg = config or TINY
    net = build_model("mmcanet", "single", **cfg)
    card = ModelCard(name="tiny", config=cfg,
                     metrics={"heldout": {"psnr": 30.0}})
    return save_model(path, net, card)


def test_weighted_mean_of_the_weights_and_an_honest_card(tmp_path: Path) -> None:
    mod = _script()
    a, b = _model(tmp_path / "a.safetensors", 1), _model(tmp_path / "b.safetensors", 2)
    out = mod.average([(a, 1.0), (b, 3.0)], tmp_path / "soup.safetensors")
    (na, _), (nb, _), (ns, card) = load_model(a), load_model(b), load_model(out)
    sa, sb, ss = na.state_dict(), nb.state_dict(), ns.state_dict()
    floats = [k for k, v in sa.items() if v.is_floating_point()]
    assert floats
    for k in floats:
        torch.testing.assert_close(ss[k], (sa[k] + 3 * sb[k]) / 4)
    assert card.metrics == {}, "the first file's held-out figures do not describe the average"
    assert [e["weight"] for e in card.training["averaged_from"]] == [1.0, 3.0]


def test_other_networks_and_bad_arguments_are_refused(tmp_path: Path) -> None:
    mod = _script()
    a = _model(tmp_path / "a.safetensors", 1)
    wider = _model(tmp_path / "wide.safetensors", 2, {**TINY, "widths": [8, 8]})
    with pytest.raises(ModelFileError, match="not the same network"):
        mod.average([(a, 1.0), (wider, 1.0)], tmp_path / "x.safetensors")
    # a card that spells out the defaults (and its inference-only guide) is the same network
    spelled = _model(tmp_path / "spelled.safetensors", 3, {**TINY, "guide_reach": 0, "error_head": False})
    assert mod.average([(a, 1.0), (spelled, 1.0)], tmp_path / "ok.safetensors").exists()
    with pytest.raises(ModelFileError, match="at least two"):
        mod.average([(a, 1.0)], tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()
    assert mod.parse_input("m.safetensors@0.5") == (Path("m.safetensors"), 0.5)
    for bad in ("m.safetensors@x", "m.safetensors@0"):
        with pytest.raises(Exception, match="weight after @"):
            mod.parse_input(bad)
