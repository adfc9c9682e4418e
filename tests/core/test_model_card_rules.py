"""The model card's rules, one case per rule: what is accepted (and becomes what) and what is refused, with
the exact reason a user reads. No torch model needed: cards are parsed from JSON, headers from bytes."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from mmcanet.bands import S1_BANDS, S2_BANDS_L1C
from mmcanet.errors import ModelFileError
from mmcanet.modelfile import CARD_KEY, FORMAT, ModelCard, read_card

PREDICTOR = {"features": ["a", "b"], "coef": [0.5, -1.0], "mean": [0.0, 1.0], "std": [1.0, 2.0], "intercept": -3.0}


def _card(**fields: Any) -> ModelCard:
    return ModelCard.from_json(json.dumps({"format": FORMAT, **fields}), "card.json")


def _refused(fields: dict[str, Any]) -> str:
    with pytest.raises(ModelFileError) as info:
        _card(**fields)
    message = str(info.value)
    assert message.startswith("card.json: ")
    return message


def test_a_card_with_only_its_format_takes_every_default() -> None:
    card = _card()
    assert (card.name, card.arch, card.strategy, card.tile_size, card.overlap) == ("mmcanet", "mmcanet", "single", 256, 32)
    assert card.s2_bands == tuple(S2_BANDS_L1C) and card.s1_bands == tuple(S1_BANDS)
    assert card.config == {} and card.trust == {} and not card.has_error_head
    assert _card(unknown_key=[1, 2], another={"x": 1}) == card  # fields of a newer version are ignored


# field -> a value of the wrong type, and the type names the message must give
WRONG_TYPES = {
    "name": (5, "str"), "arch": (["mmcanet"], "str"), "strategy": (None, "str"), "config": ([1], "dict"),
    "s2_bands": (13, "list or tuple"), "s1_bands": ("VV,VH", "list or tuple"), "tile_size": ("256", "int"),
    "overlap": (32.0, "int"), "training": ("long", "dict"), "metrics": (1.0, "dict"), "trust": ([], "dict"),
    "version": (3, "str"),
}


@pytest.mark.parametrize("key", sorted(WRONG_TYPES))
def test_a_field_of_the_wrong_type_is_named_with_the_type_expected(key: str) -> None:
    value, names = WRONG_TYPES[key]
    message = _refused({key: value})
    assert f"the model card has invalid fields ({key} must be {names}, got {value!r})" in message


@pytest.mark.parametrize("key", ["tile_size", "overlap"])
def test_booleans_are_not_numbers(key: str) -> None:
    assert f"{key} must be int, got True" in _refused({key: True})


@pytest.mark.parametrize(("key", "value"), [("s2_bands", []), ("s1_bands", ["VV", ""]), ("s1_bands", ["VV", 5]),
                                            ("s2_bands", [None])])
def test_band_lists_must_name_every_band(key: str, value: list[Any]) -> None:
    assert f"{key} must be a non-empty list of band names, got {value!r}" in _refused({key: value})


def test_band_lists_are_kept_in_their_order_as_tuples() -> None:
    card = _card(s2_bands=["B4", "B3", "B2"], s1_bands=["VH", "VV"])
    assert card.s2_bands == ("B4", "B3", "B2") and card.s1_bands == ("VH", "VV")


@pytest.mark.parametrize("key", ["error_scale", "kept_error"])
@pytest.mark.parametrize("value", [-0.001, 1000, 1e9, True, "0.02", [0.02]])
def test_trust_numbers_must_be_small_non_negative_numbers(key: str, value: Any) -> None:
    assert f"trust.{key} must be a number >= 0, got {value!r}" in _refused({"trust": {key: value}})


@pytest.mark.parametrize("key", ["error_scale", "kept_error"])
@pytest.mark.parametrize("value", [0, 0.02, 999.5, 3])
def test_trust_numbers_in_range_are_kept(key: str, value: float) -> None:
    assert _card(trust={key: value}).trust[key] == value


def _predictor(**change: Any) -> dict[str, Any]:
    table = {**PREDICTOR, **change}
    return {k: v for k, v in table.items() if v is not None}


PREDICTOR_ERRORS = {
    "not a table": (5, "trust.predictor must be a table, got 5"),
    "a list": ([1, 2], "trust.predictor must be a table, got [1, 2]"),
    "no intercept": (_predictor(intercept=None), "trust.predictor lacks intercept"),
    "no features, coef": ({"mean": [0.0], "std": [1.0], "intercept": 0.0}, "trust.predictor lacks features, coef"),
    "lengths differ": (_predictor(coef=[0.5]), "(trust.predictor: features, coef, mean and std must be non-empty lists of one length)"),
    "empty lists": (_predictor(features=[], coef=[], mean=[], std=[]), "must be non-empty lists of one length"),
    "std not a list": (_predictor(std=1.0), "must be non-empty lists of one length"),
    "feature not a name": (_predictor(features=["a", 2]), "trust.predictor.features must be feature names, got ['a', 2]"),
    "text coefficient": (_predictor(coef=[0.5, "1"]), "(trust.predictor: coef, intercept, mean and std must be finite numbers)"),
    "boolean mean": (_predictor(mean=[True, 1.0]), "must be finite numbers"),
    "huge std": (_predictor(std=[1.0, 1e6]), "must be finite numbers"),
    "huge intercept": (_predictor(intercept=-2e6), "must be finite numbers"),
    "zero std": (_predictor(std=[1.0, 0.0]), "(trust.predictor.std must be > 0)"),
    "negative std": (_predictor(std=[-1.0, 1.0]), "trust.predictor.std must be > 0"),
}


@pytest.mark.parametrize("case", sorted(PREDICTOR_ERRORS))
def test_a_malformed_trust_predictor_is_refused_with_its_reason(case: str) -> None:
    table, reason = PREDICTOR_ERRORS[case]
    assert reason in _refused({"trust": {"predictor": table}})


def test_a_well_formed_predictor_is_kept_and_makes_a_trust_layer() -> None:
    card = _card(trust={"predictor": PREDICTOR, "kept_error": 0.01})
    assert card.trust["predictor"] == PREDICTOR and card.has_error_head
    assert _card(trust={"predictor": _predictor(intercept=0, coef=[0, 999999.0])}).has_error_head
    assert _card(config={"error_head": True}).has_error_head
    assert not _card(config={"error_head": False}, trust={"kept_error": 0.01}).has_error_head


@pytest.mark.parametrize(("tile", "overlap", "reason"), [
    (15, 0, "tile_size must be >= 16 px, got 15"),
    (0, 0, "tile_size must be >= 16 px, got 0"),
    (256, -1, "overlap must be between 0 and half the tile size (128 px), got -1"),
    (256, 129, "overlap must be between 0 and half the tile size (128 px), got 129"),
    (64, 33, "overlap must be between 0 and half the tile size (32 px), got 33"),
])
def test_tiling_out_of_range_is_refused(tile: int, overlap: int, reason: str) -> None:
    assert reason in _refused({"tile_size": tile, "overlap": overlap})


@pytest.mark.parametrize(("tile", "overlap"), [(16, 0), (16, 8), (256, 128), (512, 0), (33, 16)])
def test_tiling_in_range_is_kept(tile: int, overlap: int) -> None:
    card = _card(tile_size=tile, overlap=overlap)
    assert (card.tile_size, card.overlap) == (tile, overlap)


def test_tiling_defaults_are_checked_together_with_a_given_value() -> None:
    assert "got 129" in _refused({"overlap": 129})  # against the default tile of 256
    assert "overlap must be between 0 and half the tile size (10 px), got 32" in _refused({"tile_size": 20})


@pytest.mark.parametrize(("text", "reason"), [
    ("{not json", "the model card is not valid JSON"),
    ("[1, 2]", "the model card must be a JSON object"),
    ('"card"', "the model card must be a JSON object"),
    (json.dumps({"format": "mmcanet-model/0"}), "unsupported model format 'mmcanet-model/0' (this version reads 'mmcanet-model/1')"),
    (json.dumps({"name": "x"}), "unsupported model format None"),
])
def test_cards_that_are_not_cards_are_refused(text: str, reason: str) -> None:
    with pytest.raises(ModelFileError, match="^card.json: ") as info:
        ModelCard.from_json(text, "card.json")
    assert reason in str(info.value)


def test_json_round_trip_is_exact_and_sorted() -> None:
    card = _card(name="n", s2_bands=["B2", "B3"], tile_size=128, overlap=16, trust={"predictor": PREDICTOR},
                 metrics={"heldout": {"psnr": 25.0}}, training={"steps": 10})
    text = card.to_json()
    d = json.loads(text)
    assert list(d) == sorted(d) and d["format"] == FORMAT and d["s2_bands"] == ["B2", "B3"]
    assert d["normalization"] == json.loads(json.dumps(card.normalization.to_dict()))  # units travel with the weights
    assert ModelCard.from_json(text) == card


@pytest.mark.parametrize(("metrics", "tail"), [
    ({"heldout": {"psnr": 25.456}}, ", held-out PSNR 25.46 dB"),
    ({"heldout": {"ssim": 0.8}}, ""),
    ({"heldout": 25.0}, ""),
    ({"validation": {"psnr": 30.0}}, ""),
    ({}, ""),
])
def test_summary_quotes_only_a_held_out_psnr(metrics: dict[str, Any], tail: str) -> None:
    card = _card(name="tiny", version="9.9", arch="mmcanet", strategy="iterative", s2_bands=["B2", "B3", "B4"],
                 metrics=metrics)
    assert card.summary() == f"tiny v9.9: mmcanet/iterative, 3 S2 + 2 S1 bands{tail}"


# -- the file's header, read without torch -------------------------------------------------------------


def _file(tmp_path: Path, header: Any, payload: bytes = b"", length: int | None = None, name: str = "m.safetensors") -> Path:
    raw = json.dumps(header).encode()
    path = tmp_path / name
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + payload)
    return path


def _card_meta(**fields: Any) -> dict[str, str]:
    return {CARD_KEY: json.dumps({"format": FORMAT, **fields})}


def test_read_card_accepts_a_consistent_header(tmp_path: Path) -> None:
    header = {"__metadata__": _card_meta(name="ok"), "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    assert read_card(_file(tmp_path, header, b"\0" * 8)).name == "ok"
    no_tensors = {"__metadata__": _card_meta(name="empty")}
    assert read_card(_file(tmp_path, no_tensors, name="e.safetensors")).name == "empty"


HEADER_ERRORS: dict[str, tuple[Any, bytes, int | None, str]] = {
    "tensor past the end": ({"__metadata__": _card_meta(), "w": {"data_offsets": [0, 9]}}, b"\0" * 8, None,
                            "truncated model file ("),
    "header of one byte": (7, b"", None, "header is not an object"),
    "header length with the top bit set": ({}, b"", 1 << 63, "(header length 9223372036854775808, file"),
    "negative offset": ({"__metadata__": _card_meta(), "w": {"data_offsets": [-1, 4]}}, b"\0" * 8, None,
                        "tensor 'w' has no valid data_offsets"),
    "boolean offset": ({"__metadata__": _card_meta(), "w": {"data_offsets": [False, 4]}}, b"\0" * 8, None,
                       "tensor 'w' has no valid data_offsets"),
    "three offsets": ({"__metadata__": _card_meta(), "w": {"data_offsets": [0, 4, 8]}}, b"\0" * 8, None,
                      "tensor 'w' has no valid data_offsets"),
    "tensor entry not an object": ({"__metadata__": _card_meta(), "w": [0, 4]}, b"", None,
                                   "tensor 'w' has no valid data_offsets"),
    "metadata value not text": ({"__metadata__": {CARD_KEY: {"format": FORMAT}}}, b"", None,
                                "header metadata must map names to text"),
    "header not an object": ([1, 2, 3], b"", None, "header is not an object"),
    "header length zero": ({}, b"", 0, "not a safetensors model file, or truncated (header length 0"),
    "header longer than the file": ({}, b"", 10_000, "header length 10000, file"),
    "no card": ({"__metadata__": {"other": "x"}}, b"", None, f"no MMCANet model card in this safetensors file (key {CARD_KEY!r} missing)"),
    "no metadata": ({"w": {"data_offsets": [0, 0]}}, b"", None, "no MMCANet model card"),
    "null metadata": ({"__metadata__": None}, b"", None, "no MMCANet model card"),
}


@pytest.mark.parametrize("case", sorted(HEADER_ERRORS))
def test_a_bad_header_is_refused_with_the_file_and_reason(tmp_path: Path, case: str) -> None:
    header, payload, length, reason = HEADER_ERRORS[case]
    path = _file(tmp_path, header, payload, length)
    with pytest.raises(ModelFileError) as info:
        read_card(path)
    assert str(info.value).startswith(str(path)) and reason in str(info.value)


def test_short_unreadable_and_missing_files_are_named(tmp_path: Path) -> None:
    short = tmp_path / "short.safetensors"
    short.write_bytes(b"\x01\x02\x03")
    with pytest.raises(ModelFileError, match=r"short.safetensors: not a model file \(too short: 3 bytes\)"):
        read_card(short)
    binary = tmp_path / "bin.safetensors"
    binary.write_bytes(struct.pack("<Q", 4) + b"\xff\xfe\xfd\xfc")
    with pytest.raises(ModelFileError, match=r"bin.safetensors: corrupt model file \(unreadable header\)"):
        read_card(binary)
    with pytest.raises(ModelFileError, match="model file not found: .*nope.safetensors"):
        read_card(tmp_path / "nope.safetensors")
    with pytest.raises(ModelFileError, match="model file not found"):
        read_card(tmp_path)  # a folder is not a model file


def test_a_truncated_file_says_how_many_bytes_its_tensors_need(tmp_path: Path) -> None:
    header = {"__metadata__": _card_meta(), "w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}}
    path = _file(tmp_path, header, b"\0" * 8)
    n = len(json.dumps(header).encode())
    with pytest.raises(ModelFileError) as info:
        read_card(path)
    assert str(info.value) == f"{path}: truncated model file ({8 + n + 8} bytes, tensors need {8 + n + 12})"
