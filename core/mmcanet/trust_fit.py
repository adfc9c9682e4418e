"""Fit the trust layer's feature predictor for a model file (docs/TRUST.md; run by scripts/fit_trust.py).

One rerunnable release step per model file, a few CPU minutes:

1. run the restorer on every real (not simulated) training image and every validation image of a
   training config, and measure per pixel the error cues of :func:`mmcanet.models.error_features.error_features`
   and the actual absolute error against the clear reference;
2. fit ``log b = intercept + coef . features`` on the TRAINING images by the Laplace negative
   log-likelihood (:func:`mmcanet.trust.fit_log_linear`); check it by cross-validation over training images;
3. calibrate on the VALIDATION images (never trained on, where the restorer errs as on new data):
   ``b' = exp(a) * b ** gamma`` (two numbers, Laplace NLL), folded into the coefficients, then the
   one-factor scale of :func:`mmcanet.trust.fit_error_scale`;
4. write the model file again with the card's ``trust`` table: the predictor's numbers, the scale,
   the kept-pixel error and the measured figures. The weights are unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .bands import S2_DN_SCALE
from .errors import ConfigError, InputError
from .models.error_features import FEATURE_NAMES
from .trust import (
    DEFAULT_BINS,
    ReliabilityBin,
    fit_error_scale,
    fit_log_linear,
    reliability_holds,
    reliability_table,
    spearman,
)

DEFAULT_FEATURES: tuple[str, ...] = FEATURE_NAMES
"""Features of the predictor: all of them (on v0.2, fewer ranked worse on the validation images and in
cross-validation, docs/TRUST.md)."""
FIT_PIXELS = 1500
"""Pixels drawn (seeded) per training image for the fit: every image weighs the same anyway."""
EVAL_PIXELS = 20_000
"""Pixels kept (seeded) per image for the figures (Spearman of a 256 px image is stable at this size)."""
CV_FOLDS = 8


@dataclass
class ImageCues:
    """One image's error cues and actual error (a seeded subsample of its valid pixels).

    Attributes:
        id: sample id.
        features: (F, n) feature values.
        actual: (n,) actual absolute error, reflectance, mean over bands.
        clear_diff: (bands,) sum of |cloudy - reference| over clear pixels, reflectance, and ``n_clear``.
    """

    id: str
    features: np.ndarray
    actual: np.ndarray
    clear_diff: np.ndarray
    n_clear: int


@dataclass
class TrustFit:
    """What :func:`fit_trust` fitted and measured.

    Attributes:
        predictor: the card's ``trust.predictor`` table (calibrated coefficients).
        error_scale: the one factor left after the two-number calibration (close to 1).
        gamma: the calibration's exponent (1 = the training fit's spread was right; < 1 = too wide).
        kept_error, kept_error_bands: clear-sky difference of clear validation pixels (reflectance).
        table: reliability table of the calibrated prediction on the validation pixels.
        spearman: within-image Spearman correlation per validation image.
        cv_spearman: per training image, Spearman of a predictor fitted without it (cross-validation).
        lovo_table: reliability table when each validation image is calibrated on the others only.
        train_images, val_images: ids used.
    """

    predictor: dict[str, Any]
    error_scale: float
    gamma: float
    kept_error: float
    kept_error_bands: list[float]
    table: list[ReliabilityBin]
    spearman: dict[str, float]
    cv_spearman: dict[str, float]
    lovo_table: list[ReliabilityBin]
    train_images: list[str] = field(default_factory=list)
    val_images: list[str] = field(default_factory=list)

    @property
    def median_spearman(self) -> float:
        """Median within-image Spearman over the validation images (NaN ones left out)."""
        return _median(self.spearman.values())

    @property
    def median_cv_spearman(self) -> float:
        """Median cross-validated within-image Spearman over the training images."""
        return _median(self.cv_spearman.values())

    def card_entry(self, source: str) -> dict[str, Any]:
        """The model card's ``trust`` table."""
        return {
            "predictor": self.predictor, "error_scale": round(self.error_scale, 5), "gamma": round(self.gamma, 5),
            "kept_error": round(self.kept_error, 5), "kept_error_bands": [round(v, 5) for v in self.kept_error_bands],
            "calibrated_on": source, "images": self.val_images, "fitted_on": self.train_images,
            "reliability": [b.to_dict() for b in self.table], "reliability_holds": reliability_holds(self.table),
            "reliability_leave_one_image_out": [b.to_dict() for b in self.lovo_table],
            "spearman": {k: round(v, 4) for k, v in self.spearman.items()},
            "median_spearman": round(self.median_spearman, 4),
            "cv_spearman_median": round(self.median_cv_spearman, 4),
        }


def _median(values: Any) -> float:
    v = [x for x in values if math.isfinite(x)]
    return float(np.median(v)) if v else math.nan


def image_cues(
    model: Any, sample: dict[str, Any], to_refl: float, features: Sequence[str], pixels: int, seed: int,
) -> ImageCues:
    """Restore one sample (S2 in model units) and measure its error cues and actual error.

    Args:
        model: the restorer (``model(s2, s1, mask)``), eval mode, CPU or GPU.
        sample: a :mod:`mmcanet.datasets` sample.
        to_refl: model units -> reflectance (``s2_max_dn / 10000``).
        features: feature names.
        pixels: keep at most this many valid pixels (seeded draw).
        seed: seed of the draw.
    """
    import torch

    from .models.error_features import error_features

    dev = next(model.parameters()).device
    s2 = torch.from_numpy(np.asarray(sample["s2_cloudy"], np.float32))[None].to(dev)
    s1 = torch.from_numpy(np.asarray(sample["s1"], np.float32))[None].to(dev)
    if float(np.asarray(sample.get("has_sar", 1.0))) <= 0.5:
        s1 = torch.zeros_like(s1)
    m = np.asarray(sample["mask"], np.float32)
    h, w = m.shape[-2:]
    mask = torch.from_numpy(m.reshape(1, 1, h, w)).to(dev)
    with torch.inference_mode():
        if hasattr(model, "restore_with_opacity"):
            y, opacity = model.restore_with_opacity(s2, s1, mask)
        else:
            y, opacity = model(s2, s1, mask), None
        f = error_features(s2, y, mask, s1, features, opacity)[0].float().cpu().numpy().reshape(len(features), -1)
    restored = np.clip(np.clip(y[0].float().cpu().numpy(), 0.0, 1.0) * to_refl, 0.0, 1.0)
    reference = np.asarray(sample["s2_clear"], np.float32) * np.float32(to_refl)
    cloudy = np.asarray(sample["s2_cloudy"], np.float32) * np.float32(to_refl)
    valid = (np.asarray(sample["valid"], np.float32).reshape(h, w) > 0.5) if "valid" in sample else np.ones((h, w), bool)
    actual = np.mean(np.abs(restored - reference), axis=0).ravel()
    keep = np.flatnonzero(valid.ravel())
    if len(keep) > pixels:
        keep = np.sort(np.random.default_rng(seed).choice(keep, pixels, replace=False))
    clear = (m.reshape(h, w) < 0.5) & valid
    return ImageCues(str(sample.get("id", seed)), f[:, keep], actual[keep],
                     np.abs(cloudy - reference)[:, clear].sum(axis=1), int(clear.sum()))


def _predict(fit: tuple[np.ndarray, float, np.ndarray, np.ndarray], f: np.ndarray) -> np.ndarray:
    """log b of a :func:`fit_log_linear` result for features ``(F, n)``."""
    coef, intercept, mean, std = fit
    return np.asarray(coef @ ((f - mean[:, None]) / std[:, None]) + intercept)


def _fit(images: Sequence[ImageCues], pixels: int) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    return fit_log_linear([c.features[:, :pixels] for c in images], [c.actual[:pixels] for c in images])


GAMMA_RANGE = (0.05, 2.0)
"""Bounds of the calibration exponent: never 0 or below (that would flatten or invert the ranking)."""


def _calibrate(log_p: Sequence[np.ndarray], actual: Sequence[np.ndarray]) -> tuple[float, float]:
    """``(gamma, a)`` of ``log b' = a + gamma * log b``; every image weighs the same.

    ``gamma`` comes from the variation INSIDE each image (Laplace NLL with a free level per image),
    the quantity the within-image ranking is about: fitted on pooled pixels it would be set by which
    images are harder, and can even come out negative and invert every image's ranking. It is kept in
    :data:`GAMMA_RANGE`. ``a`` is then the Laplace NLL optimum of the common level,
    ``log(mean |e| / b ** gamma)``.
    """
    n = len(log_p)
    rows = []
    for i, lp in enumerate(log_p):
        levels = np.zeros((max(n - 1, 0), len(lp)))
        if i > 0:
            levels[i - 1] = 1.0  # a level per image (the first one's is the intercept)
        rows.append(np.vstack([lp[None] - lp.mean(), levels]))
    g, _, _, std = fit_log_linear(rows, list(actual), ridge=0.0)
    gamma = float(np.clip(g[0] / std[0], *GAMMA_RANGE))
    level = np.mean([np.mean(np.abs(e) * np.exp(-gamma * lp)) for lp, e in zip(log_p, actual, strict=True)])
    return gamma, float(math.log(max(float(level), 1e-12)))


def fit_cues(
    train: Sequence[ImageCues], val: Sequence[ImageCues], features: Sequence[str], bins: int = DEFAULT_BINS,
    fit_pixels: int = FIT_PIXELS, folds: int = CV_FOLDS, to_refl: float = 1.0,
) -> TrustFit:
    """Fit on ``train``, calibrate on ``val``, measure; pure numpy (see the module docstring).

    Errors and figures are in reflectance; the stored predictor predicts in model units (reflectance
    / ``to_refl``), as the network's error output does, and the engine multiplies by ``error_scale * to_refl``.

    The draws in :func:`image_cues` are random, so the first ``fit_pixels`` pixels of an image are a
    random subsample of it.

    Raises:
        InputError: no training or no validation image.
    """
    if not train or not val:
        raise InputError(f"trust fit: {len(train)} training and {len(val)} validation images; both are needed")
    fit = _fit(train, fit_pixels)
    # cross-validation over training images: each fold's images scored by a fit without them
    cv: dict[str, float] = {}
    k = min(folds, len(train))
    if k >= 2:
        for i in range(k):
            held = set(range(i, len(train), k))
            part = _fit([c for j, c in enumerate(train) if j not in held], fit_pixels)
            for j in sorted(held):
                cv[train[j].id] = spearman(_predict(part, train[j].features), train[j].actual)
    log_p = [_predict(fit, c.features) for c in val]
    actual = [c.actual for c in val]
    gamma, a = _calibrate(log_p, actual)
    final = [np.exp(a + gamma * lp) for lp in log_p]
    p_all, a_all = np.concatenate(final), np.concatenate(actual)
    scale = fit_error_scale(p_all, a_all, bins)
    # honest reliability: each validation image calibrated on the others only
    lovo = []
    for i in range(len(val)):
        if len(val) < 2:
            break
        g_i, a_i = _calibrate([lp for j, lp in enumerate(log_p) if j != i], [e for j, e in enumerate(actual) if j != i])
        p_i = [np.exp(a_i + g_i * lp) for j, lp in enumerate(log_p) if j != i]
        s_i = fit_error_scale(np.concatenate(p_i), np.concatenate([e for j, e in enumerate(actual) if j != i]), bins)
        lovo.append(s_i * np.exp(a_i + g_i * log_p[i]))
    coef, intercept, mean, std = fit
    predictor = {
        "kind": "log-linear", "features": list(features),
        "coef": [round(float(gamma * c), 6) for c in coef], "intercept": round(float(gamma * intercept + a - math.log(to_refl)), 6),
        "mean": [round(float(v), 6) for v in mean], "std": [round(float(v), 6) for v in std],
        "units": "model units (reflectance / (s2_max_dn / 10000)) before error_scale; see models/error_features.py",
    }
    clear_sum = np.sum([c.clear_diff for c in val], axis=0)
    n_clear = sum(c.n_clear for c in val)
    bands = clear_sum / n_clear if n_clear else np.full(len(clear_sum), 0.01)
    return TrustFit(
        predictor=predictor, error_scale=scale, gamma=gamma, kept_error=float(bands.mean()),
        kept_error_bands=[float(v) for v in bands], table=reliability_table(scale * p_all, a_all, bins),
        spearman={c.id: spearman(p, c.actual) for c, p in zip(val, final, strict=True)}, cv_spearman=cv,
        lovo_table=reliability_table(np.concatenate(lovo), a_all, bins) if lovo else [],
        train_images=[c.id for c in train], val_images=[c.id for c in val],
    )


def fit_trust(
    model_path: str, config_path: str, output: str | None = None, device: str = "cpu",
    features: Sequence[str] = DEFAULT_FEATURES, bins: int = DEFAULT_BINS,
    progress: Any = None,
) -> tuple[TrustFit, str]:
    """Fit, calibrate and store the trust predictor of a model file (see the module docstring).

    Args:
        model_path: the model file (any restorer; an existing ``trust`` table is replaced).
        config_path: a training config: its real ``[[data]]`` sources (simulated ones are skipped) are
            fitted on, its ``[[val]]`` sources calibrated and measured on.
        output: where to write the model file with the trust table (default: in place, atomically).
        device: where the restorer runs.
        features: the predictor's features.
        bins: reliability bins.
        progress: optional ``progress(message)`` callable, one call per image.

    Returns:
        ``(fit, path written)``.

    Raises:
        ConfigError: no ``[[val]]`` / real ``[[data]]`` source; InputError / ModelFileError: bad data or model.
    """
    import torch

    from .config import load_config
    from .datasets import open_source
    from .modelfile import load_model, save_model

    cfg = load_config(config_path)
    if not cfg.val:
        raise ConfigError(f"{config_path}: no [[val]] sources to calibrate on (the held-out validation images)")
    dev = torch.device(device)
    model, card = load_model(model_path, dev)
    if hasattr(model, "error_predictor"):
        setattr(model, "error_predictor", None)  # noqa: B010  # judged afresh (mypy: an nn.Module attribute)
    to_refl = float(card.normalization.s2_max_dn / S2_DN_SCALE)
    groups: dict[str, list[ImageCues]] = {"train": [], "val": []}
    seen: set[tuple[str, str]] = set()
    sources = [("val", s) for s in cfg.val] + [("train", s) for s in cfg.data]
    for role, src in sources:
        reader, simulated = open_source(src.path, src.kind, "val", src.include, src.exclude)
        if simulated:
            continue  # simulated clouds err otherwise than real ones
        for i in range(len(reader)):
            sample = reader[i]
            key = (str(src.path), str(sample.get("id", i)))
            if key in seen:  # a source listed twice (e.g. repeat) is measured once
                continue
            seen.add(key)
            n = len(groups["train"]) + len(groups["val"])
            groups[role].append(image_cues(model, sample, to_refl, features, EVAL_PIXELS, seed=n))
            if progress is not None:
                progress(f"{role} {groups[role][-1].id}")
    if not groups["train"]:
        raise ConfigError(f"{config_path}: no real (not simulated) [[data]] images to fit the trust predictor on")
    result = fit_cues(groups["train"], groups["val"], features, bins, to_refl=to_refl)
    card.trust = result.card_entry(", ".join(str(s.path) + (f" {s.include}" if s.include else "") for s in cfg.val))
    out = output or model_path
    save_model(out, model, card)
    return result, str(out)
