"""Image quality metrics of the SEN12MS-CR protocol: PSNR, SSIM, MAE, SAM (degrees), per image, 0-1 scale."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter


def psnr(pred: np.ndarray, target: np.ndarray) -> float:
    """20 log10(1 / RMSE) over all bands and pixels of (C, H, W) arrays in [0, 1]."""
    rmse = float(np.sqrt(np.mean((pred.astype(np.float64) - target.astype(np.float64)) ** 2)))
    return float("inf") if rmse == 0 else 20.0 * np.log10(1.0 / rmse)


def mae(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean absolute error over all bands and pixels."""
    return float(np.mean(np.abs(pred.astype(np.float64) - target.astype(np.float64))))


def ssim(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean SSIM over bands: Gaussian window sigma 1.5 (11x11, truncate 3.5), C1 = 0.01^2, C2 = 0.03^2.

    Matches skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1) band by band (border of 5 px cropped as skimage does).
    """
    c1, c2 = 0.01**2, 0.03**2
    vals = []
    for p, t in zip(pred.astype(np.float64), target.astype(np.float64)):
        f = lambda x: gaussian_filter(x, 1.5, truncate=3.5)  # noqa: E731 - 11x11 window
        mp, mt = f(p), f(t)
        vp, vt, cov = f(p * p) - mp * mp, f(t * t) - mt * mt, f(p * t) - mp * mt
        s = ((2 * mp * mt + c1) * (2 * cov + c2)) / ((mp**2 + mt**2 + c1) * (vp + vt + c2))
        pad = 5
        vals.append(float(s[pad:-pad, pad:-pad].mean()) if min(s.shape) > 2 * pad else float(s.mean()))
    return float(np.mean(vals))


def sam_degrees(pred: np.ndarray, target: np.ndarray, eps: float = 1e-12) -> float:
    """Mean spectral angle in DEGREES over pixels of (C, H, W) arrays; zero-norm pixels count as 0."""
    p = pred.reshape(pred.shape[0], -1).astype(np.float64)
    t = target.reshape(target.shape[0], -1).astype(np.float64)
    dot = (p * t).sum(0)
    norm = np.linalg.norm(p, axis=0) * np.linalg.norm(t, axis=0)
    cos = np.where(norm > eps, dot / np.maximum(norm, eps), 1.0)
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))).mean())


def compute_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """All four protocol metrics of one image: {"psnr", "ssim", "mae", "sam"} (SAM in degrees)."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
    return {"psnr": psnr(pred, target), "ssim": ssim(pred, target), "mae": mae(pred, target), "sam": sam_degrees(pred, target)}
