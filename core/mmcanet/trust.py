"""The trust layer's numbers: rank correlation, reliability table, calibration scale (docs/TRUST.md).

The error head predicts, per pixel, the absolute error of the restoration (mean over the bands,
reflectance 0-1). Two questions decide whether an analyst can use it:

* does it rank the pixels of ONE image right (within-image Spearman correlation between predicted
  and actual absolute error, :func:`spearman`), and
* does "0.05" mean 0.05 (reliability: pixels binned by predicted error, the mean actual error per bin
  against the mean predicted, :func:`reliability_table`; one scale factor fixes it,
  :func:`fit_error_scale`).

Pure numpy; torch is only needed by :func:`predict_sample`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .bands import S2_DN_SCALE
from .errors import InputError, ModelFileError

if TYPE_CHECKING:
    import torch

    from .normalization import Normalization

RELIABILITY_TOLERANCE = 0.30
"""A reliability bin holds when its mean actual error is within this fraction of its mean predicted."""
DEFAULT_BINS = 8
"""Equal-count bins of predicted error in the reliability table."""
DEFAULT_KEPT_ERROR = 0.01
"""Predicted absolute error (reflectance) of kept clear pixels for a model that was never calibrated."""
_MAX_PIXELS = 400_000
"""Pixels per image used for the Spearman correlation (a fixed, seeded subsample above it)."""


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of a 1-D array, ties given their mean rank (as ``scipy.stats.rankdata`` - 1)."""
    x = np.asarray(x).ravel()
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    mean_rank = (starts + ends - 1) / 2.0
    out = np.empty(len(x), np.float64)
    out[order] = np.repeat(mean_rank, ends - starts)
    return out


def spearman(predicted: np.ndarray, actual: np.ndarray, max_pixels: int = _MAX_PIXELS) -> float:
    """Spearman rank correlation between predicted and actual absolute error over the finite pixels.

    Args:
        predicted: predicted absolute error, any shape.
        actual: actual absolute error, same shape.
        max_pixels: above this many pixels a seeded random subsample is used (same result on rerun).

    Returns:
        correlation in [-1, 1]; NaN when fewer than 3 pixels or either side is constant.
    """
    p, a = np.asarray(predicted, np.float64).ravel(), np.asarray(actual, np.float64).ravel()
    if p.shape != a.shape:
        raise ValueError(f"predicted {p.shape} and actual {a.shape} differ")
    ok = np.isfinite(p) & np.isfinite(a)
    p, a = p[ok], a[ok]
    if len(p) > max_pixels:
        pick = np.random.default_rng(0).choice(len(p), max_pixels, replace=False)
        p, a = p[pick], a[pick]
    if len(p) < 3:
        return math.nan
    rp, ra = ranks(p), ranks(a)
    rp -= rp.mean()
    ra -= ra.mean()
    den = math.sqrt(float(rp @ rp) * float(ra @ ra))
    return float(rp @ ra / den) if den > 0 else math.nan


@dataclass
class ReliabilityBin:
    """One bin of the reliability table: pixels whose predicted error falls in ``[low, high]``."""

    low: float
    high: float
    n: int
    mean_predicted: float
    mean_actual: float

    @property
    def ratio(self) -> float:
        """Mean actual / mean predicted error (1 = calibrated)."""
        return self.mean_actual / self.mean_predicted if self.mean_predicted > 0 else math.inf

    def holds(self, tolerance: float = RELIABILITY_TOLERANCE) -> bool:
        """Whether the mean actual error is within ``tolerance`` of the mean predicted."""
        return abs(self.mean_actual - self.mean_predicted) <= tolerance * self.mean_predicted

    def to_dict(self) -> dict[str, float]:
        return {"low": self.low, "high": self.high, "n": self.n, "mean_predicted": self.mean_predicted,
                "mean_actual": self.mean_actual}


def reliability_table(predicted: np.ndarray, actual: np.ndarray, bins: int = DEFAULT_BINS) -> list[ReliabilityBin]:
    """Pixels sorted by predicted error into ``bins`` equal-count bins; mean predicted and actual per bin.

    Equal-count bins (quantiles of the prediction) give every bin the same weight of evidence; a bin
    of a handful of extreme pixels would otherwise decide whether the table holds.

    Args:
        predicted: predicted absolute error (any shape, reflectance).
        actual: actual absolute error (same shape).
        bins: number of bins (fewer when there are fewer pixels).

    Returns:
        the bins from low to high predicted error (empty when no finite pixel).
    """
    p, a = np.asarray(predicted, np.float64).ravel(), np.asarray(actual, np.float64).ravel()
    if p.shape != a.shape:
        raise ValueError(f"predicted {p.shape} and actual {a.shape} differ")
    ok = np.isfinite(p) & np.isfinite(a)
    p, a = p[ok], a[ok]
    if len(p) == 0:
        return []
    order = np.argsort(p, kind="mergesort")
    table = []
    for part in np.array_split(order, min(bins, len(p))):
        table.append(ReliabilityBin(float(p[part].min()), float(p[part].max()), len(part),
                                    float(p[part].mean()), float(a[part].mean())))
    return table


def reliability_holds(table: Sequence[ReliabilityBin], tolerance: float = RELIABILITY_TOLERANCE) -> bool:
    """Whether every bin's mean actual error is within ``tolerance`` of its mean predicted error."""
    return bool(table) and all(b.holds(tolerance) for b in table)


def fit_error_scale(predicted: np.ndarray, actual: np.ndarray, bins: int = DEFAULT_BINS) -> float:
    """The one factor ``s`` that makes ``s * predicted`` as reliable as a single factor can.

    Scaling the prediction scales every bin's ratio (actual / predicted) alike, so the worst bin's
    relative miss is smallest when the largest and smallest ratios are pushed equally far from 1:
    ``s = sqrt(max ratio * min ratio)`` over the bins of :func:`reliability_table` (the bins do not
    move: a factor keeps the order). If the table can hold at all, it holds with this ``s``.

    Returns:
        the scale (> 0); 1.0 when there is nothing to fit.
    """
    table = [b for b in reliability_table(predicted, actual, bins) if b.mean_predicted > 0 and b.mean_actual > 0]
    if not table:
        return 1.0
    ratios = [b.ratio for b in table]
    return float(math.sqrt(max(ratios) * min(ratios)))


def trust_settings(card: Any) -> tuple[float, float]:
    """``(error_scale, kept_error)`` of a model card: its calibration, else 1 and :data:`DEFAULT_KEPT_ERROR`."""
    t = getattr(card, "trust", None) or {}
    return float(t.get("error_scale", 1.0)), float(t.get("kept_error", DEFAULT_KEPT_ERROR))


def require_error_head(card: Any, source: str) -> None:
    """Refuse a model without a trust layer, saying which model and how to give it one.

    Raises:
        ModelFileError: when the card has neither a fitted ``trust.predictor`` nor ``config.error_head``.
    """
    config = getattr(card, "config", {}) or {}
    trust = getattr(card, "trust", {}) or {}
    if not config.get("error_head", False) and not trust.get("predictor"):
        raise ModelFileError(
            f"model '{getattr(card, 'name', '?')}' ({source}) has no trust layer (no fitted error predictor, no error "
            "head), so it cannot write the predicted-error (uncertainty) output. Use a model file that has one, or "
            "fit one for this model: `python scripts/fit_trust.py THIS_MODEL configs/bundled.toml --output NEW_MODEL` "
            "(docs/TRUST.md); or restore without the uncertainty output"
        )


def predict_sample(
    model: torch.nn.Module, sample: dict[str, Any], norm: Normalization, device: torch.device, use_mask: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Restore one sample and predict its error, both in reflectance 0-1 (DN / 10000).

    Args:
        model: a network with ``forward_with_error``.
        sample: a :mod:`mmcanet.datasets` sample whose ``s2_cloudy`` is in the model's units.
        norm: the model card's normalisation.
        device: where the model runs.
        use_mask: pass the sample's cloud mask to the model (as the engine passes its mask).

    Returns:
        ``(restored (C, H, W) clipped to 0-1, raw predicted error (H, W))``: raw = before the card's scale.
    """
    import torch

    to_refl = np.float32(norm.s2_max_dn / S2_DN_SCALE)
    s2 = torch.from_numpy(np.asarray(sample["s2_cloudy"], dtype=np.float32))[None].to(device)
    s1 = torch.from_numpy(np.asarray(sample["s1"], dtype=np.float32))[None].to(device)
    if float(np.asarray(sample.get("has_sar", 1.0))) <= 0.5:
        s1 = torch.zeros_like(s1)
    mask = None
    if use_mask and "mask" in sample:
        m = np.asarray(sample["mask"], dtype=np.float32)
        mask = torch.from_numpy(m.reshape(1, 1, *m.shape[-2:])).to(device)
    with torch.inference_mode():
        y, err = model.forward_with_error(s2, s1, mask)  # type: ignore[operator]
    restored = np.clip(np.clip(y[0].float().cpu().numpy(), 0.0, 1.0) * to_refl, 0.0, 1.0)
    return restored, err[0, 0].float().cpu().numpy() * to_refl


def actual_error(restored: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-pixel absolute error, mean over bands: ``(C, H, W)`` twice -> ``(H, W)`` (reflectance)."""
    return np.mean(np.abs(np.asarray(restored, np.float32) - np.asarray(reference, np.float32)), axis=0)


@dataclass
class Calibration:
    """What :func:`calibrate_model` fitted and measured on the validation images.

    Attributes:
        error_scale: factor applied to the head's raw prediction.
        kept_error: mean absolute clear-sky difference (reflectance, mean over bands) of clear pixels.
        kept_error_bands: the same per band.
        table: reliability table of the calibrated prediction (pooled pixels of every image).
        spearman: within-image Spearman correlation per image id.
        images: ids of the images used.
    """

    error_scale: float
    kept_error: float
    kept_error_bands: list[float]
    table: list[ReliabilityBin]
    spearman: dict[str, float]
    images: list[str]

    @property
    def median_spearman(self) -> float:
        """Median over images of the within-image Spearman correlation (NaN images left out)."""
        v = [s for s in self.spearman.values() if math.isfinite(s)]
        return float(np.median(v)) if v else math.nan

    def card_entry(self, source: str) -> dict[str, Any]:
        """The model card's ``trust`` table."""
        return {
            "error_scale": round(self.error_scale, 5), "kept_error": round(self.kept_error, 5),
            "kept_error_bands": [round(v, 5) for v in self.kept_error_bands], "calibrated_on": source,
            "images": self.images, "reliability": [b.to_dict() for b in self.table],
            "reliability_holds": reliability_holds(self.table),
            "spearman": {k: round(v, 4) for k, v in self.spearman.items()},
            "median_spearman": round(self.median_spearman, 4),
        }


def calibrate_samples(
    model: torch.nn.Module, readers: Sequence[Any], norm: Normalization, device: torch.device, bins: int = DEFAULT_BINS,
    use_mask: bool = True,
) -> Calibration:
    """Fit the error scale and the kept-pixel error on validation images (see :func:`fit_error_scale`).

    Args:
        model: a network with an error head.
        readers: indexable sample sources (training's validation readers), S2 in model units.
        norm: the model card's normalisation.
        device: where the model runs.
        bins: reliability bins.
        use_mask: pass each sample's cloud mask to the model.

    Returns:
        :class:`Calibration`.
    """
    to_refl = np.float32(norm.s2_max_dn / S2_DN_SCALE)
    preds: list[np.ndarray] = []
    actuals: list[np.ndarray] = []
    ids: list[str] = []
    clear_diff: list[np.ndarray] = []
    for reader in readers:
        for i in range(len(reader)):
            s = reader[i]
            restored, raw = predict_sample(model, s, norm, device, use_mask)
            reference = np.asarray(s["s2_clear"], np.float32) * to_refl
            cloudy = np.asarray(s["s2_cloudy"], np.float32) * to_refl
            valid = np.asarray(s["valid"], np.float32).reshape(raw.shape) > 0.5 if "valid" in s else np.ones(raw.shape, bool)
            err = actual_error(restored, reference)
            err[~valid] = np.nan  # nodata in either image: left out of every figure
            preds.append(raw.ravel())
            actuals.append(err.ravel())
            ids.append(str(s.get("id", f"{len(ids)}")))
            clear = (np.asarray(s["mask"], np.float32).reshape(raw.shape) < 0.5) & valid
            if clear.any():
                clear_diff.append(np.abs(cloudy - reference)[:, clear])
    if not preds:
        raise InputError("calibration: no validation images")
    p_all, a_all = np.concatenate(preds), np.concatenate(actuals)
    scale = fit_error_scale(p_all, a_all, bins)
    bands = np.concatenate(clear_diff, axis=1).mean(axis=1) if clear_diff else np.full(cloudy.shape[0], DEFAULT_KEPT_ERROR)
    return Calibration(
        error_scale=scale, kept_error=float(bands.mean()), kept_error_bands=[float(v) for v in bands],
        table=reliability_table(scale * p_all, a_all, bins),
        spearman={k: spearman(p, a) for k, p, a in zip(ids, preds, actuals, strict=True)}, images=ids,
    )


def calibrate_model(
    model_path: str, config_path: str, output: str | None = None, device: str = "cpu", bins: int = DEFAULT_BINS
) -> tuple[Calibration, str]:
    """Calibrate a model file's error head on the validation sources (``[[val]]``) of a training config.

    Writes the model file again (``output``, default: in place, atomically) with the card's ``trust``
    table filled; the weights are unchanged.

    Returns:
        ``(calibration, path written)``.

    Raises:
        ModelFileError: the model has no error head; ConfigError / InputError: bad config or data.
    """
    import torch

    from .config import load_config
    from .datasets import open_source
    from .errors import ConfigError
    from .modelfile import load_model, read_card, save_model

    card = read_card(model_path)
    require_error_head(card, str(model_path))
    cfg = load_config(config_path)
    if not cfg.val:
        raise ConfigError(f"{config_path}: no [[val]] sources to calibrate on (the held-out validation images)")
    readers = [open_source(s.path, s.kind, "val", s.include, s.exclude)[0] for s in cfg.val]
    dev = torch.device(device)
    model, card = load_model(model_path, dev)
    cal = calibrate_samples(model, readers, card.normalization, dev, bins)
    card.trust = cal.card_entry(", ".join(str(src.path) + (f" {src.include}" if src.include else "") for src in cfg.val))
    out = output or model_path
    save_model(out, model, card)
    return cal, str(out)


def fit_log_linear(
    features: Sequence[np.ndarray], errors: Sequence[np.ndarray], ridge: float = 1e-3, iterations: int = 50,
) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Fit ``log b = intercept + coef . standardised features`` by the Laplace negative log-likelihood.

    Minimises the mean over images (each image weighs the same, whatever its pixel count) of the mean
    over its pixels of ``log b + |e| / b``; its minimiser in ``b`` is the expected absolute error, and
    it is convex in the coefficients, so Newton's method finds the one optimum (a small ridge on the
    coefficients, not the intercept, keeps correlated features stable).

    Args:
        features: per image, ``(F, n_i)`` feature values of its pixels.
        errors: per image, ``(n_i,)`` actual absolute errors (> 0 is not required; zeros are fine).
        ridge: L2 penalty on the standardised coefficients.
        iterations: Newton steps at most.

    Returns:
        ``(coef (F,), intercept, mean (F,), std (F,))`` with the standardisation used.

    Raises:
        ValueError: no pixel, or features and errors of different lengths.
    """
    if not features or sum(f.shape[1] for f in features) == 0:
        raise ValueError("fit_log_linear: no pixels")
    for f, e in zip(features, errors, strict=True):
        if f.shape[1] != len(e):
            raise ValueError(f"fit_log_linear: {f.shape[1]} feature columns but {len(e)} errors")
    x_all = np.concatenate([np.asarray(f, np.float64) for f in features], axis=1)
    mean = x_all.mean(axis=1)
    std = x_all.std(axis=1)
    std[std < 1e-6] = 1.0
    x = np.vstack([(x_all - mean[:, None]) / std[:, None], np.ones(x_all.shape[1])])
    a = np.concatenate([np.abs(np.asarray(e, np.float64)) for e in errors])
    w = np.concatenate([np.full(len(e), 1.0 / (len(e) * len(errors))) for e in errors])
    theta = np.zeros(x.shape[0])
    theta[-1] = math.log(max(float((w * a).sum()), 1e-8))
    pen = np.full(x.shape[0], ridge)
    pen[-1] = 0.0

    def loss(t: np.ndarray) -> float:
        eta = t @ x
        return float((w * (eta + a * np.exp(-eta))).sum() + 0.5 * (pen * t * t).sum())

    current = loss(theta)
    for _ in range(iterations):
        eta = theta @ x
        r = a * np.exp(-eta)
        grad = x @ (w * (1.0 - r)) + pen * theta
        hess = (x * (w * r)) @ x.T + np.diag(pen) + 1e-9 * np.eye(len(theta))
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-4:
            cand = theta - t * step
            new = loss(cand)
            if new <= current:
                break
            t *= 0.5
        else:
            break
        theta, done = cand, current - new < 1e-10
        current = new
        if done:
            break
    return theta[:-1], float(theta[-1]), mean, std
