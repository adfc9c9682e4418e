"""Cloud / shadow detectors behind one interface: the rule-based one, and two optional field libraries.

Every detector maps a Sentinel-2 stack in model band order (``(13, H, W)`` L1C or ``(12, H, W)`` L2A,
reflectance = DN / 10000) to :class:`~mmcanet.clouds.detect.CloudMasks` (bool cloud, bool shadow,
float32 cloud score), so whatever consumes the masks (the engine, the soft training/inference mask)
does not care which one ran.

* ``rules``: :mod:`mmcanet.clouds.detect` (numpy only, always available; the fallback).
* ``ukis``: the CNN of ukis-csmask (Wieland, Li, Martinis, RSE 2019; Wieland, Fichtner, Martinis, ISPRS
  2022; Apache-2.0 code and ONNX models, ~150 MB) run through onnxruntime: clouds AND shadows, separate
  L1C and L2A models, trained on SPARCS + CloudSEN12+ at ~30 m. Optional install:
  ``pip install ukis-csmask==1.0.0 onnxruntime``.
* ``s2cloudless``: Sentinel Hub's LightGBM pixel classifier, the detector of the SEN12MS-CR(-TS) data
  (Zupanc 2017; Ebel et al. 2022). Its model is CC-BY-SA-4.0, so it is never bundled: optional install
  ``pip install s2cloudless==1.7.3``. Clouds only, 13-band L1C only (it reads B10); shadows are added
  by the rule-based shadow test near its clouds.

``auto`` picks the first of :data:`AUTO_ORDER` that is installed (today: ``rules``; see
docs/DETECTORS.md for the measurements behind that). Asking by name for a detector that is not installed raises an
:class:`~mmcanet.errors.InputError` that says how to install it; ``auto`` falls back to ``rules``
and says so through ``log``.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..bands import S2_BANDS_L1C, S2_BANDS_L2A
from ..errors import InputError
from ..names import CLOUD_DETECTORS
from .detect import CloudMasks, box_mean, detect_clouds, dilate_far, shadow_candidates

AUTO_ORDER: tuple[str, ...] = ("rules",)
"""What ``auto`` tries, best first. Only ``rules`` for now: on the validation triplets neither optional
detector restored measurably better, and ukis costs ~100x the time (docs/DETECTORS.md)."""

PACKAGES: dict[str, tuple[str, ...]] = {
    "rules": (),
    "ukis": ("ukis_csmask", "onnxruntime"),
    "s2cloudless": ("s2cloudless", "lightgbm"),
}
"""Importable modules each detector needs."""

INSTALL: dict[str, str] = {
    "ukis": "pip install ukis-csmask==1.0.0 onnxruntime",
    "s2cloudless": "pip install s2cloudless==1.7.3",
}
"""The pip command that makes a detector available (the QGIS plugin offers the same as an extra)."""

UKIS_BANDS: tuple[str, ...] = ("B2", "B3", "B4", "B8", "B11", "B12")
"""Sentinel-2 bands of ukis-csmask's 6-band models, in the order its model cards name them."""

UKIS_SCALE = 3
"""ukis-csmask runs on a 3 x 3 block mean (10 m -> 30 m, the resolution its models were trained at)."""

S2CLOUDLESS_PARAMS: dict[str, Any] = {"threshold": 0.4, "average_over": 4, "dilation_size": 2}
"""s2cloudless settings of the SEN12MS-CR-TS / UnCRtainTS data loaders (at 10 m)."""

SHADOW_SEARCH_PX = 40
"""Shadows are looked for within this many pixels of a cloud (as in :func:`detect_clouds`)."""


class Detector(Protocol):
    """A cloud / shadow detector: ``detector(s2)`` with ``s2`` a (13|12, H, W) reflectance stack."""

    name: str

    def __call__(self, s2: np.ndarray) -> CloudMasks: ...


def missing_packages(name: str) -> list[str]:
    """Modules detector ``name`` needs that cannot be imported here (empty: it is available).

    Raises:
        InputError: unknown detector name.
    """
    if name not in PACKAGES:
        raise InputError(f"cloud detector '{name}': unknown; choose one of {', '.join(CLOUD_DETECTORS)}")
    return [m for m in PACKAGES[name] if importlib.util.find_spec(m) is None]


def available() -> list[str]:
    """Detector names usable in this Python environment (``rules`` always)."""
    return [n for n in PACKAGES if not missing_packages(n)]


def resolve(name: str = "auto") -> tuple[str, str | None]:
    """The detector a request means here, and a note when ``auto`` had to fall back.

    Args:
        name: ``"auto"`` or one of the detector names.

    Returns:
        ``(detector name, note or None)``.

    Raises:
        InputError: unknown name, or a named detector whose packages are not installed (the message
            gives the pip command).
    """
    choice = (name or "auto").strip().lower()
    if choice == "auto":
        for cand in AUTO_ORDER:
            if not missing_packages(cand):
                note = None
                if cand != AUTO_ORDER[0]:
                    note = f"cloud detector: {AUTO_ORDER[0]} is not installed, using {cand} ({INSTALL.get(AUTO_ORDER[0], '')})"
                return cand, note
        return "rules", None  # unreachable: rules needs nothing
    missing = missing_packages(choice)
    if missing:
        raise InputError(
            f"cloud detector '{choice}' needs {', '.join(missing)}, which is not installed in this Python; "
            f"install it with `{INSTALL[choice]}` (QGIS: the plugin's 'Install dependencies' offers it), "
            "or choose detector 'rules' (built in) or 'auto'"
        )
    return choice, None


def get_detector(name: str = "auto", log: Callable[[str], None] | None = None) -> Detector:
    """The detector ``name`` resolves to (see :func:`resolve`); models are loaded on first use.

    Args:
        name: ``"auto"``, ``"rules"``, ``"ukis"`` or ``"s2cloudless"``.
        log: receives the fallback note of ``auto`` (if any).

    Raises:
        InputError: see :func:`resolve`.
    """
    chosen, note = resolve(name)
    if note and log is not None:
        log(note)
    if chosen == "ukis":
        return UkisDetector()
    if chosen == "s2cloudless":
        return S2CloudlessDetector()
    return RulesDetector()


def _check_stack(s2: np.ndarray) -> tuple[str, ...]:
    if s2.ndim != 3 or s2.shape[0] not in (12, 13):
        raise InputError(f"cloud detection expects a (13 or 12, H, W) S2 array, got shape {s2.shape}")
    return S2_BANDS_L1C if s2.shape[0] == 13 else S2_BANDS_L2A


def _clean(x: np.ndarray) -> np.ndarray:
    return np.nan_to_num(np.asarray(x, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)


def _shadows_near(s2: np.ndarray, names: tuple[str, ...], cloud: np.ndarray) -> np.ndarray:
    """The rule-based shadow test restricted to pixels near ``cloud`` and outside it."""
    if not cloud.any():
        return np.zeros_like(cloud)
    bands = {n: _clean(s2[names.index(n)]) for n in ("B2", "B8", "B11")}
    return shadow_candidates(bands) & dilate_far(cloud, SHADOW_SEARCH_PX) & ~cloud


class RulesDetector:
    """The built-in rule-based detector (:func:`mmcanet.clouds.detect.detect_clouds`, default settings)."""

    name = "rules"

    def __call__(self, s2: np.ndarray) -> CloudMasks:
        """Cloud, shadow and score of a (13|12, H, W) reflectance stack."""
        _check_stack(s2)
        return detect_clouds(s2)


def _block_mean(x: np.ndarray, k: int) -> np.ndarray:
    """Mean over non-overlapping ``k x k`` blocks of ``(C, H, W)`` (edge-padded to a multiple of k)."""
    if k == 1:
        return x
    c, h, w = x.shape
    ph, pw = -h % k, -w % k
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, ph), (0, pw)), mode="edge")
    return x.reshape(c, (h + ph) // k, k, (w + pw) // k, k).mean(axis=(2, 4), dtype=np.float32)


def _upsample(p: np.ndarray, k: int, h: int, w: int) -> np.ndarray:
    """``(C, h', w')`` block values back to ``(C, h, w)``: replicate, then a k x k box (about bilinear)."""
    if k == 1:
        return p[:, :h, :w]
    up = np.repeat(np.repeat(p, k, axis=1), k, axis=2)[:, :h, :w]
    return box_mean(up, k // 2)


def _ramp_window(n: int, ramp: int) -> np.ndarray:
    """1-D blending weight: rises linearly over ``ramp`` px at both ends (never exactly 0)."""
    r = np.minimum(np.arange(n) + 1, np.arange(n)[::-1] + 1).astype(np.float32)
    return np.clip(r / max(ramp, 1), 1e-3, 1.0)


def _tile_starts(n: int, size: int, step: int) -> list[int]:
    if n <= size:
        return [0]
    starts = list(range(0, n - size, step)) + [n - size]
    return sorted(set(starts))


class UkisDetector:
    """ukis-csmask's 6-band CNN (L1C or L2A model by band count), run tile by tile through onnxruntime.

    The image's B2, B3, B4, B8, B11, B12 are averaged over 3 x 3 blocks (30 m), normalised with the
    model card's statistics, cut into 256 x 256 tiles overlapping by ``overlap`` px (smaller images are
    mirror-padded), and the class probabilities (clear, cloud, shadow) are blended with linear ramps,
    brought back to 10 m and arg-maxed. ``score`` is the cloud probability.

    Args:
        scale: block size of the averaging (1 = run at the input resolution).
        overlap: tile overlap at the working resolution (px).
        batch_size: tiles per onnxruntime call.
        threads: onnxruntime intra-op threads (0 = its default, all cores).
    """

    name = "ukis"
    _sessions: dict[tuple[str, int], Any] = {}
    _lock = threading.Lock()

    def __init__(self, scale: int = UKIS_SCALE, overlap: int = 32, batch_size: int = 4, threads: int = 0) -> None:
        self.scale, self.overlap, self.batch_size, self.threads = scale, overlap, batch_size, threads

    @classmethod
    def _session(cls, level: str, threads: int) -> tuple[Any, np.ndarray, np.ndarray, int]:
        """(onnxruntime session, band means, band stds, tile size) of the ``level`` model, cached per process."""
        import onnxruntime
        import ukis_csmask

        model = Path(ukis_csmask.__file__).parent / f"model_6b_{level}.onnx"
        with cls._lock:
            key = (level, threads)
            if key not in cls._sessions:
                if not model.is_file():
                    raise InputError(f"ukis-csmask has no model file {model.name}; reinstall it: {INSTALL['ukis']}")
                card = json.loads(model.with_suffix(".json").read_text())
                stats = card["data"]["dataset_statistics"]
                if list(stats["band_names"]) != ["blue", "green", "red", "nir", "swir16", "swir22"]:
                    raise InputError(f"ukis-csmask model {model.name} expects bands {stats['band_names']}; "
                                     f"this version of mmcanet supports ukis-csmask 1.0.0 ({INSTALL['ukis']})")
                opts = onnxruntime.SessionOptions()
                opts.intra_op_num_threads = threads
                session = onnxruntime.InferenceSession(str(model), sess_options=opts,
                                                       providers=["CPUExecutionProvider"])
                mean = np.asarray(stats["img"][0], np.float32)[:, None, None]
                std = np.asarray(stats["img"][1], np.float32)[:, None, None]
                cls._sessions[key] = (session, mean, std, int(card["data"]["target_size"][0]))
            return cls._sessions[key]

    def probabilities(self, s2: np.ndarray) -> np.ndarray:
        """Class probabilities (clear, cloud, shadow) ``(3, H, W)`` float32 of a (13|12, H, W) stack."""
        names = _check_stack(s2)
        level = "l1c" if len(names) == 13 else "l2a"
        session, mean, std, size = self._session(level, self.threads)
        h, w = s2.shape[1:]
        x = _block_mean(_clean(s2[[names.index(b) for b in UKIS_BANDS]]), self.scale)
        x = (x - mean) / std
        _, xh, xw = x.shape
        ph, pw = max(size - xh, 0), max(size - xw, 0)
        if ph or pw:  # smaller than one tile: mirror-pad (as ukis-csmask does)
            x = np.pad(x, ((0, 0), (0, ph), (0, pw)), mode="symmetric")
        _, H, W = x.shape
        step = size - self.overlap
        wy, wx = _ramp_window(size, self.overlap), _ramp_window(size, self.overlap)
        weight = wy[:, None] * wx[None, :]
        acc = np.zeros((3, H, W), np.float32)
        wsum = np.zeros((H, W), np.float32)
        origins = [(r, c) for r in _tile_starts(H, size, step) for c in _tile_starts(W, size, step)]
        inp = session.get_inputs()[0].name
        for b in range(0, len(origins), self.batch_size):
            chunk = origins[b : b + self.batch_size]
            batch = np.stack([x[:, r : r + size, c : c + size] for r, c in chunk]).astype(np.float32)
            logits = session.run(None, {inp: batch})[0].astype(np.float32)
            logits -= logits.max(axis=1, keepdims=True)
            prob = np.exp(logits)
            prob /= prob.sum(axis=1, keepdims=True)
            for (r, c), p in zip(chunk, prob, strict=True):
                acc[:, r : r + size, c : c + size] += p * weight
                wsum[r : r + size, c : c + size] += weight
        prob = (acc / wsum)[:, :xh, :xw]
        return np.clip(_upsample(prob, self.scale, h, w), 0.0, 1.0).astype(np.float32)

    def __call__(self, s2: np.ndarray) -> CloudMasks:
        """Cloud, shadow (arg-max classes) and cloud probability of a (13|12, H, W) reflectance stack."""
        prob = self.probabilities(s2)
        cls_ = np.argmax(prob, axis=0)
        return CloudMasks(cloud=cls_ == 1, shadow=cls_ == 2, score=prob[1])


class S2CloudlessDetector:
    """Sentinel Hub's s2cloudless (LightGBM per pixel) with the SEN12MS-CR-TS settings, plus rule-based shadows.

    Args:
        shadows: add the rule-based shadow test within :data:`SHADOW_SEARCH_PX` of its clouds.
        params: s2cloudless settings (default :data:`S2CLOUDLESS_PARAMS`).
    """

    name = "s2cloudless"

    def __init__(self, shadows: bool = True, params: dict[str, Any] | None = None) -> None:
        self.shadows = shadows
        self.params = dict(S2CLOUDLESS_PARAMS if params is None else params)
        self._model: Any = None

    def __call__(self, s2: np.ndarray) -> CloudMasks:
        """Cloud, shadow and cloud probability of a 13-band L1C reflectance stack."""
        names = _check_stack(s2)
        if len(names) != 13:
            raise InputError("cloud detector 's2cloudless' needs 13-band Level-1C input (it reads the cirrus "
                             "band B10); this image has 12 bands (Level-2A): choose detector 'ukis' or 'rules'")
        if self._model is None:
            from s2cloudless import S2PixelCloudDetector

            self._model = S2PixelCloudDetector(all_bands=True, **self.params)
        refl = _clean(s2)
        prob = self._model.get_cloud_probability_maps(np.moveaxis(refl, 0, -1)[None])
        cloud = self._model.get_mask_from_prob(prob)[0].astype(bool)
        shadow = _shadows_near(refl, names, cloud) if self.shadows else np.zeros_like(cloud)
        return CloudMasks(cloud=cloud, shadow=shadow, score=np.asarray(prob[0], np.float32))
