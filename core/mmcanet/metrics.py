"""Image quality metrics of the SEN12MS-CR protocol (docs: ../shared/docs/DOMAIN.md).

All metrics use every band, values on the 0-1 scale (data range 1), one image at a time (results
are then averaged over images by the caller):

* RMSE over all bands and pixels; PSNR = 20 log10(1 / RMSE) in dB (``inf`` for identical images);
* SSIM: 11 x 11 Gaussian window, sigma 1.5, C1 = 0.01^2, C2 = 0.03^2, population (co)variances,
  computed per band over the "valid" region (pixels at least 5 px from the border, as
  ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1)`` does), then averaged over bands;
* MAE: mean absolute error over all bands and pixels;
* SAM: per pixel, the angle between the predicted and reference spectra (all bands),
  arccos(<p, t> / (|p| |t|)) in DEGREES, averaged over pixels. Zero-norm guard: a pixel where both
  spectra are zero has angle 0; where exactly one is zero, 90 degrees.

The metrics do not clip: callers clip model outputs to [0, 1] first (``evaluation`` does).
numpy versions return Python floats for one ``(C, H, W)`` image; torch versions take ``(B, C, H, W)``
and return per-image tensors ``(B,)`` (or their mean), differentiable for use in losses.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

SSIM_WINDOW: int = 11
SSIM_SIGMA: float = 1.5
SSIM_C1: float = 0.01**2
SSIM_C2: float = 0.03**2
METRIC_NAMES: tuple[str, ...] = ("psnr", "ssim", "mae", "sam", "rmse")
"""Keys of :func:`compute_metrics` (PSNR dB, SSIM, MAE, SAM degrees, RMSE), 0-1 scale."""


def gaussian_kernel_1d(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian weights, float64 ``(size,)``."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def _check_pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {p.shape} differs from reference shape {t.shape}")
    if p.ndim != 3:
        raise ValueError(f"expected (C, H, W) arrays, got shape {p.shape}")
    return p, t


def rmse(pred: np.ndarray, target: np.ndarray) -> float:
    """Root mean square error over all bands and pixels of ``(C, H, W)`` arrays (0-1 scale)."""
    p, t = _check_pair(pred, target)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def psnr(pred: np.ndarray, target: np.ndarray) -> float:
    """PSNR in dB, 20 log10(1 / RMSE), data range 1; ``inf`` when the images are identical.

    Args:
        pred: ``(C, H, W)`` prediction, 0-1 scale.
        target: ``(C, H, W)`` reference, 0-1 scale.
    """
    e = rmse(pred, target)
    return math.inf if e == 0.0 else float(-20.0 * math.log10(e))


def mae(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean absolute error over all bands and pixels of ``(C, H, W)`` arrays (0-1 scale)."""
    p, t = _check_pair(pred, target)
    return float(np.mean(np.abs(p - t)))


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of ``(C, H, W)`` with the 1-D kernel ``g`` on both axes."""
    k = g.shape[0]
    w = x.shape[2] - k + 1
    rows = g[0] * x[:, :, :w]
    for i in range(1, k):
        rows += g[i] * x[:, :, i : i + w]
    h = x.shape[1] - k + 1
    out = g[0] * rows[:, :h]
    for i in range(1, k):
        out += g[i] * rows[:, i : i + h]
    return out


def ssim_per_band(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """SSIM of each band (11x11 Gaussian window, sigma 1.5, data range 1), float64 ``(C,)``.

    Raises:
        ValueError: if H or W is smaller than the 11 px window.
    """
    p, t = _check_pair(pred, target)
    if min(p.shape[1:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} px, got {p.shape[1:]}")
    g = gaussian_kernel_1d()
    mu_p, mu_t = _filter_valid(p, g), _filter_valid(t, g)
    var_p = _filter_valid(p * p, g) - mu_p**2
    var_t = _filter_valid(t * t, g) - mu_t**2
    cov = _filter_valid(p * t, g) - mu_p * mu_t
    num = (2 * mu_p * mu_t + SSIM_C1) * (2 * cov + SSIM_C2)
    den = (mu_p**2 + mu_t**2 + SSIM_C1) * (var_p + var_t + SSIM_C2)
    return (num / den).mean(axis=(1, 2))


def ssim(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean over bands of the per-band SSIM of ``(C, H, W)`` arrays (see module docstring)."""
    return float(ssim_per_band(pred, target).mean())


def sam(pred: np.ndarray, target: np.ndarray) -> float:
    """Spectral angle mapper in DEGREES, mean over pixels of ``(C, H, W)`` arrays (zero-norm guarded)."""
    p, t = _check_pair(pred, target)
    dot = np.sum(p * t, axis=0)
    n_p = np.sqrt(np.sum(p * p, axis=0))
    n_t = np.sqrt(np.sum(t * t, axis=0))
    denom = n_p * n_t
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(denom > 0, dot / np.where(denom > 0, denom, 1.0), 0.0)
    ang = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    ang = np.where((n_p == 0) & (n_t == 0), 0.0, ang)  # both zero: same (empty) spectrum
    return float(ang.mean())


def compute_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """All protocol metrics of one image.

    Args:
        pred: ``(C, H, W)`` prediction, 0-1 scale (clip model outputs first).
        target: ``(C, H, W)`` reference, 0-1 scale.

    Returns:
        ``{"psnr": dB, "ssim": -, "mae": -, "sam": degrees, "rmse": -}``.
    """
    return {
        "psnr": psnr(pred, target),
        "ssim": ssim(pred, target),
        "mae": mae(pred, target),
        "sam": sam(pred, target),
        "rmse": rmse(pred, target),
    }


STRUCTURE_SIGMAS: tuple[float, float] = (1.0, 8.0)
"""Gaussian sigmas (px) of the band-pass of :func:`structure_correlation`: field-scale detail, 10-80 m."""


def _gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of ``(C, H, W)`` float32 with reflected edges (radius 3 sigma)."""
    r = max(1, int(math.ceil(3 * sigma)))
    k = torch.from_numpy(gaussian_kernel_1d(2 * r + 1, sigma).astype(np.float32))
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[:, None]
    mode = "reflect" if r < min(x.shape[-2:]) else "replicate"
    t = F.conv2d(F.pad(t, (r, r, 0, 0), mode=mode), k.view(1, 1, 1, -1))
    t = F.conv2d(F.pad(t, (0, 0, r, r), mode=mode), k.view(1, 1, -1, 1))
    return t[:, 0].numpy()


def structure_correlation(pred: np.ndarray, target: np.ndarray, mask: np.ndarray, min_pixels: int = 64) -> float:
    """How much of the reference's field-scale structure the prediction reproduces where ``mask`` is set.

    Both images are band-pass filtered (Gaussian sigma 1 minus sigma 8, :data:`STRUCTURE_SIGMAS`:
    field edges, roads, rivers; no colour offset, no pixel noise); per band, the Pearson correlation
    of the two band-pass images over the masked pixels; the mean over bands. 1: the structure is
    reproduced; 0: none of it (a flat fill scores 0); negative: inverted.

    Args:
        pred: ``(C, H, W)`` prediction, 0-1 scale.
        target: ``(C, H, W)`` reference, 0-1 scale.
        mask: bool ``(H, W)``, e.g. the cloud mask of the input: where the structure had to be made up.
        min_pixels: fewer masked pixels than this give NaN (too few to mean anything).

    Returns:
        The mean correlation over bands, or NaN.
    """
    p, t = _check_pair(pred, target)
    m = np.asarray(mask, dtype=bool)
    if m.shape != p.shape[1:]:
        raise ValueError(f"mask shape {m.shape} does not match the image {p.shape[1:]}")
    if int(m.sum()) < min_pixels:
        return float("nan")
    fine, coarse = STRUCTURE_SIGMAS
    bp = _gaussian_blur(p, fine) - _gaussian_blur(p, coarse)
    bt = _gaussian_blur(t, fine) - _gaussian_blur(t, coarse)
    corrs = []
    for b in range(p.shape[0]):
        a, c = bp[b][m].astype(np.float64), bt[b][m].astype(np.float64)
        a, c = a - a.mean(), c - c.mean()
        den = math.sqrt(float((a * a).sum()) * float((c * c).sum()))
        corrs.append(float((a * c).sum()) / den if den > 1e-18 else 0.0)
    return float(np.mean(corrs))


# --------------------------------------------------------------------------------------- torch


def _reduce(x: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return x.mean()
    if reduction == "none":
        return x
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def _check_pair_torch(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(f"expected two (B, C, H, W) tensors of one shape, got {tuple(pred.shape)}, {tuple(target.shape)}")


def mae_torch(pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """MAE per image of ``(B, C, H, W)`` tensors; ``(B,)`` for reduction "none", else their mean."""
    _check_pair_torch(pred, target)
    return _reduce((pred - target).abs().mean(dim=(1, 2, 3)), reduction)


def psnr_torch(pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """PSNR (dB, data range 1) per image of ``(B, C, H, W)`` tensors (``inf`` for identical images)."""
    _check_pair_torch(pred, target)
    mse = ((pred - target) ** 2).mean(dim=(1, 2, 3))
    return _reduce(-10.0 * torch.log10(mse), reduction)


def ssim_torch(pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Differentiable SSIM (same definition as :func:`ssim`) per image of ``(B, C, H, W)`` tensors.

    Args:
        pred: prediction, 0-1 scale, H and W >= 11.
        target: reference, 0-1 scale.
        reduction: "mean" (scalar) or "none" (``(B,)``, each the mean over bands and valid pixels).

    Returns:
        SSIM tensor (use ``1 - ssim_torch(...)`` as a loss).
    """
    _check_pair_torch(pred, target)
    b, c, h, w = pred.shape
    if min(h, w) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} px, got {(h, w)}")
    g = torch.as_tensor(gaussian_kernel_1d(), dtype=pred.dtype, device=pred.device)
    gx = g.view(1, 1, 1, -1).expand(c, 1, 1, SSIM_WINDOW)
    gy = g.view(1, 1, -1, 1).expand(c, 1, SSIM_WINDOW, 1)

    def filt(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(x, gx, groups=c), gy, groups=c)

    mu_p, mu_t = filt(pred), filt(target)
    var_p = filt(pred * pred) - mu_p**2
    var_t = filt(target * target) - mu_t**2
    cov = filt(pred * target) - mu_p * mu_t
    num = (2 * mu_p * mu_t + SSIM_C1) * (2 * cov + SSIM_C2)
    den = (mu_p**2 + mu_t**2 + SSIM_C1) * (var_p + var_t + SSIM_C2)
    return _reduce((num / den).mean(dim=(1, 2, 3)), reduction)


def sam_torch(
    pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean", eps: float = 1e-8
) -> torch.Tensor:
    """Differentiable spectral angle in DEGREES, mean over pixels, per image of ``(B, C, H, W)`` tensors.

    Computed as ``2 asin(|p/|p| - t/|t|| / 2)``, which equals arccos(<p, t> / (|p| |t|)) but stays
    accurate and has a finite gradient for identical spectra (arccos does not). Norms are clamped at
    ``eps``; spectra with norm <= ``eps`` follow the zero-norm rule of :func:`sam` (90 degrees against a
    non-zero spectrum, 0 against another zero one). Agrees with :func:`sam` to ~ 1e-4 degrees.
    """
    _check_pair_torch(pred, target)
    n_p = pred.norm(dim=1, keepdim=True)
    n_t = target.norm(dim=1, keepdim=True)
    u = pred / n_p.clamp_min(eps)
    v = target / n_t.clamp_min(eps)
    chord = (u - v).norm(dim=1)
    ang = torch.rad2deg(2.0 * torch.asin((0.5 * chord).clamp(0.0, 1.0 - 1e-7)))
    zp, zt = (n_p[:, 0] <= eps), (n_t[:, 0] <= eps)
    ang = torch.where(zp ^ zt, torch.full_like(ang, 90.0), torch.where(zp & zt, torch.zeros_like(ang), ang))
    return _reduce(ang.mean(dim=(1, 2)), reduction)


def compute_metrics_torch(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """All protocol metrics per image of ``(B, C, H, W)`` tensors, each ``(B,)`` (no gradient needed)."""
    with torch.no_grad():
        mse = ((pred - target) ** 2).mean(dim=(1, 2, 3))
        return {
            "psnr": -10.0 * torch.log10(mse),
            "ssim": ssim_torch(pred, target, "none"),
            "mae": mae_torch(pred, target, "none"),
            "sam": sam_torch(pred, target, "none"),
            "rmse": mse.sqrt(),
        }


sam_degrees = sam
"""Alias of :func:`sam` (degrees), kept for callers written against the first metrics module."""
