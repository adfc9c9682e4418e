"""Model files: weights (safetensors) + a model card (JSON in the safetensors header). Never unpickles.

A model file is one ``.safetensors`` file. Its header's ``__metadata__`` holds ``mmcanet_card``: the
card as JSON (architecture + config, strategy, bands, normalisation with units, tile size / overlap,
training data, measured figures, version). ``read_card`` parses only the header (no torch needed), so
QGIS widgets can show a summary without loading torch.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .bands import S1_BANDS, S2_BANDS_L1C
from .errors import ModelFileError
from .normalization import Normalization

if TYPE_CHECKING:
    import torch
    from torch import nn

FORMAT = "mmcanet-model/1"
CARD_KEY = "mmcanet_card"
_MAX_HEADER = 100 * 1024 * 1024


@dataclass
class ModelCard:
    """Everything needed to use (and trust) a set of weights; travels inside the model file.

    Args:
        name: short model name shown to users.
        arch: architecture (see mmcanet.models.ARCHITECTURES).
        strategy: progressive strategy the weights were trained with.
        config: architecture keyword configuration (build_model overrides).
        s2_bands: optical band order the model expects (Level-1C, 13 bands).
        s1_bands: SAR band order (VV, VH), values in dB before normalisation.
        normalization: mapping of physical units to 0-1 (see Normalization).
        tile_size: default tile side (px) for full-scene inference.
        overlap: default overlap between tiles (px).
        training: free-form description of training data / command / budget.
        metrics: measured figures (on data not seen in training), e.g. {"heldout": {...}}.
        trust: calibration of the error head (docs/TRUST.md), written by scripts/calibrate_error.py:
            ``error_scale`` (the head's raw prediction times this is the predicted absolute error),
            ``kept_error`` (predicted absolute error, reflectance, of pixels kept from the input: their
            clear-sky difference), ``kept_error_bands`` (the same per band), ``calibrated_on``,
            ``reliability`` (the fitted table) and ``spearman``; with ``predictor`` (written by
            scripts/fit_trust.py) the error is predicted by a log-linear model on per-pixel features whose
            coefficients are this table's numbers (:class:`mmcanet.models.error_features.FeatureErrorModel`),
            no head needed. Empty: no trust layer unless the config has an error head (scale 1).
        version: software version that wrote the file.
        format: file format identifier.
    """

    name: str = "mmcanet"
    arch: str = "mmcanet"
    strategy: str = "single"
    config: dict[str, Any] = field(default_factory=dict)
    s2_bands: tuple[str, ...] = S2_BANDS_L1C
    s1_bands: tuple[str, ...] = S1_BANDS
    normalization: Normalization = field(default_factory=Normalization)
    tile_size: int = 256
    overlap: int = 32
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    trust: dict[str, Any] = field(default_factory=dict)
    version: str = __version__
    format: str = FORMAT

    def to_json(self) -> str:
        d = asdict(self)
        d["normalization"] = self.normalization.to_dict()
        return json.dumps(d, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "model card") -> ModelCard:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelFileError(f"{source}: the model card is not valid JSON ({exc})") from None
        if not isinstance(d, dict):
            raise ModelFileError(f"{source}: the model card must be a JSON object")
        if d.get("format") != FORMAT:
            raise ModelFileError(
                f"{source}: unsupported model format {d.get('format')!r} (this version reads {FORMAT!r})"
            )
        known = {f for f in cls.__dataclass_fields__}
        d = {k: v for k, v in d.items() if k in known}
        try:
            _check_card_fields(d)
            d["normalization"] = Normalization.from_dict(d.get("normalization", {}))
            d["s2_bands"] = tuple(d.get("s2_bands", S2_BANDS_L1C))
            d["s1_bands"] = tuple(d.get("s1_bands", S1_BANDS))
            return cls(**d)
        except (TypeError, ValueError, AssertionError) as exc:
            raise ModelFileError(f"{source}: the model card has invalid fields ({exc})") from None

    @property
    def has_error_head(self) -> bool:
        """Whether the model can write the trust layer: a fitted predictor in ``trust`` or an error head in the weights."""
        return bool(self.config.get("error_head", False)) or bool(self.trust.get("predictor"))

    def summary(self) -> str:
        """One line for users: name, architecture, strategy, size, held-out PSNR if measured."""
        held = self.metrics.get("heldout", {}) if isinstance(self.metrics, dict) else {}
        psnr = f", held-out PSNR {held['psnr']:.2f} dB" if isinstance(held, dict) and "psnr" in held else ""
        return f"{self.name} v{self.version}: {self.arch}/{self.strategy}, {len(self.s2_bands)} S2 + {len(self.s1_bands)} S1 bands{psnr}"


_CARD_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,), "arch": (str,), "strategy": (str,), "config": (dict,), "s2_bands": (list, tuple),
    "s1_bands": (list, tuple), "tile_size": (int,), "overlap": (int,), "training": (dict,), "metrics": (dict,),
    "trust": (dict,), "version": (str,),
}


def _check_card_fields(d: dict[str, Any]) -> None:
    """Types and ranges of a card's fields (a wrong type would fail later, deep inside the engine)."""
    for key, types in _CARD_TYPES.items():
        if key not in d:
            continue
        value = d[key]
        if isinstance(value, bool) or not isinstance(value, types):
            raise ValueError(f"{key} must be {' or '.join(t.__name__ for t in types)}, got {value!r}")
    for key in ("s2_bands", "s1_bands"):
        if key in d and (not d[key] or not all(isinstance(b, str) and b for b in d[key])):
            raise ValueError(f"{key} must be a non-empty list of band names, got {d[key]!r}")
    for key in ("error_scale", "kept_error"):
        value = d.get("trust", {}).get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e3):
            raise ValueError(f"trust.{key} must be a number >= 0, got {value!r}")
    predictor = d.get("trust", {}).get("predictor")
    if predictor is not None:
        _check_predictor(predictor)
    tile = d.get("tile_size", 256)
    if tile < 16:
        raise ValueError(f"tile_size must be >= 16 px, got {tile}")
    overlap = d.get("overlap", 32)
    if not 0 <= overlap <= tile // 2:
        raise ValueError(f"overlap must be between 0 and half the tile size ({tile // 2} px), got {overlap}")


_PREDICTOR_LISTS = ("features", "coef", "mean", "std")


def _check_predictor(table: Any) -> None:
    """The card's ``trust.predictor`` (plain numbers, see models/error_features.py), checked without torch."""
    if not isinstance(table, dict):
        raise ValueError(f"trust.predictor must be a table, got {table!r}")
    missing = [k for k in (*_PREDICTOR_LISTS, "intercept") if k not in table]
    if missing:
        raise ValueError(f"trust.predictor lacks {', '.join(missing)}")
    lists = {k: table[k] for k in _PREDICTOR_LISTS}
    if not all(isinstance(v, list) and v for v in lists.values()) or len({len(v) for v in lists.values()}) != 1:
        raise ValueError("trust.predictor: features, coef, mean and std must be non-empty lists of one length")
    if not all(isinstance(n, str) for n in table["features"]):
        raise ValueError(f"trust.predictor.features must be feature names, got {table['features']!r}")
    numbers = [*table["coef"], *table["mean"], *table["std"], table["intercept"]]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e6 for v in numbers):
        raise ValueError("trust.predictor: coef, intercept, mean and std must be finite numbers")
    if any(v <= 0 for v in table["std"]):
        raise ValueError("trust.predictor.std must be > 0")


def default_model_path() -> Path:
    """The bundled model shipped with the project (resources/ beside core/, or inside the plugin)."""
    env = os.environ.get("MMCANET_MODEL")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    for cand in (here / "resources" / "mmcanet_default.safetensors",
                 here.parent.parent / "resources" / "mmcanet_default.safetensors",
                 here.parent / "resources" / "mmcanet_default.safetensors"):
        if cand.is_file():
            return cand
    return here.parent.parent / "resources" / "mmcanet_default.safetensors"


def _read_header(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                raise ModelFileError(f"{path}: not a model file (too short: {size} bytes)")
            (n,) = struct.unpack("<Q", raw)
            if n <= 0 or n > _MAX_HEADER or 8 + n > size:
                raise ModelFileError(f"{path}: not a safetensors model file, or truncated (header length {n}, file {size} bytes)")
            header = json.loads(fh.read(n).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelFileError(f"{path}: corrupt model file (unreadable header)") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: corrupt model file (header is not an object)")
    meta = header.get("__metadata__", {})
    if meta is not None and (not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values())):
        raise ModelFileError(f"{path}: corrupt model file (header metadata must map names to text)")
    ends = []
    for k, v in header.items():
        if k == "__metadata__":
            continue
        offsets = v.get("data_offsets") if isinstance(v, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)):
            raise ModelFileError(f"{path}: corrupt model file (tensor {k!r} has no valid data_offsets)")
        ends.append(offsets[1])
    if ends and 8 + n + max(ends) > size:
        raise ModelFileError(f"{path}: truncated model file ({size} bytes, tensors need {8 + n + max(ends)})")
    return header


def read_card(path: str | os.PathLike[str]) -> ModelCard:
    """Read only the model card of a model file (no torch import). Raises ModelFileError."""
    p = Path(path)
    meta = _read_header(p).get("__metadata__") or {}
    if CARD_KEY not in meta:
        raise ModelFileError(f"{p}: no MMCANet model card in this safetensors file (key {CARD_KEY!r} missing)")
    return ModelCard.from_json(meta[CARD_KEY], str(p))


def save_model(path: str | os.PathLike[str], model: nn.Module, card: ModelCard) -> Path:
    """Write weights + card atomically (temporary file, then rename). Returns the path."""
    from safetensors.torch import save_file

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    tmp = p.with_name(p.name + ".tmp")
    try:
        save_file(state, str(tmp), metadata={CARD_KEY: card.to_json()})
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except Exception as exc:  # OSError, or safetensors' own SafetensorError (not an OSError)
        raise ModelFileError(f"{p}: the model file cannot be written ({str(exc).splitlines()[0][:200]}); is the disk "
                             "full? An existing file of that name is kept") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return p


def build_from_card(card: ModelCard, source: str = "model card") -> nn.Module:
    """Instantiate the (untrained) network a card describes; ``source`` names the file in messages."""
    from .models import build_model

    try:
        return build_model(card.arch, card.strategy, bands=len(card.s2_bands), **card.config)
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"{source}: the model card describes an unsupported network: {exc}") from None


def load_model(path: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelCard]:
    """Load a model file (default: the bundled model) for inference.

    Returns:
        (model in eval mode on ``device``, its ModelCard). Raises ModelFileError with the path and the
        reason on a missing, corrupt, truncated or incompatible file.
    """
    from safetensors.torch import load_file

    p = Path(path) if path is not None else default_model_path()
    card = read_card(p)
    try:
        state = load_file(str(p), device="cpu")
    except Exception as exc:  # safetensors' own SafetensorError, OSError, ValueError
        raise ModelFileError(f"{p}: corrupt model file ({exc})") from None
    import torch

    bad = [k for k, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise ModelFileError(f"{p}: the weights contain NaN or infinite values ({len(bad)} tensor(s), e.g. {bad[0]!r}); "
                             "the file is damaged or came from a diverged training: use another model file")
    model = build_from_card(card, str(p))
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise ModelFileError(f"{p}: weights do not match the architecture in its card ({str(exc)[:300]})") from None
    if missing or unexpected:
        raise ModelFileError(
            f"{p}: weights do not match the architecture in its card "
            f"(missing {len(missing)} tensors e.g. {missing[:2]}, unexpected {len(unexpected)} e.g. {unexpected[:2]})"
        )
    predictor = card.trust.get("predictor")
    if predictor:
        if not hasattr(model, "error_predictor"):
            raise ModelFileError(f"{p}: the card has a trust predictor but architecture {card.arch!r} cannot use one")
        from .models.error_features import FeatureErrorModel

        try:
            model.error_predictor = FeatureErrorModel.from_card(predictor)
        except ValueError as exc:  # e.g. a feature name this version does not know
            raise ModelFileError(f"{p}: {exc}; use a model file written for this version, or refit its trust layer "
                                 "with scripts/fit_trust.py") from None
    return model.to(device).eval(), card
