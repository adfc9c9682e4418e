"""Training losses: L1, CARL (cloud-adaptive), SSIM, SAM, opacity supervision, deep supervision of stages."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _gauss_window(ch: int, size: int = 11, sigma: float = 1.5, device: torch.device | None = None) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32, device=device) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(ch, 1, size, size).contiguous()


def ssim_map(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM per pixel and band, 11x11 Gaussian window (sigma 1.5), C1 = 0.01^2, C2 = 0.03^2, 0-1 data.

    Valid-window ("same" padding by reflection) variant, differentiable; (B, C, H, W) -> (B, C, H, W).
    """
    c = pred.shape[1]
    w = _gauss_window(c, device=pred.device).to(pred.dtype)
    pad = 5
    p = F.pad(pred, (pad,) * 4, mode="reflect")
    t = F.pad(target, (pad,) * 4, mode="reflect")
    mu_p = F.conv2d(p, w, groups=c)
    mu_t = F.conv2d(t, w, groups=c)
    spp = F.conv2d(p * p, w, groups=c) - mu_p**2
    stt = F.conv2d(t * t, w, groups=c) - mu_t**2
    spt = F.conv2d(p * t, w, groups=c) - mu_p * mu_t
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mu_p * mu_t + c1) * (2 * spt + c2)) / ((mu_p**2 + mu_t**2 + c1) * (spp + stt + c2))


def sam_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mean spectral angle in radians between (B, C, H, W) spectra (a loss; metrics report degrees)."""
    dot = (pred * target).sum(1)
    norm = pred.norm(dim=1) * target.norm(dim=1)
    cos = torch.clamp(dot / (norm + eps), -1 + 1e-4, 1 - 1e-4)  # bounded gradient near 0 degrees
    return torch.acos(cos).mean()


def restoration_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    cloudy: torch.Tensor,
    mask: torch.Tensor,
    w_l1: float = 1.0,
    w_carl: float = 0.5,
    w_ssim: float = 0.2,
    w_sam: float = 0.5,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the loss terms for one output.

    Args:
        pred, target, cloudy: (B, C, H, W) 0-1 reflectance.
        mask: (B, 1, H, W) cloud mask/opacity in [0, 1].
        w_*: term weights; CARL (Meraner et al. 2020) = mean(mask |p - t| + (1 - mask) |p - cloudy|) + mean |p - t|.

    Returns:
        (scalar loss, dict of the unweighted terms as floats).
    """
    l1 = (pred - target).abs().mean()
    terms = {"l1": float(l1.detach())}
    loss = w_l1 * l1
    if w_carl:
        carl = (mask * (pred - target).abs() + (1 - mask) * (pred - cloudy).abs()).mean() + l1
        loss = loss + w_carl * carl
        terms["carl"] = float(carl.detach())
    if w_ssim:
        s = 1.0 - ssim_map(pred, target).mean()
        loss = loss + w_ssim * s
        terms["ssim"] = float(s.detach())
    if w_sam:
        a = sam_loss(pred, target)
        loss = loss + w_sam * a
        terms["sam"] = float(a.detach())
    return loss, terms


def opacity_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the opacity net's logits (B, 1, H, W) against the cloud mask in [0, 1]."""
    return F.binary_cross_entropy_with_logits(logits, mask.clamp(0, 1))


def laplace_nll(log_b: torch.Tensor, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Laplace negative log-likelihood of the per-pixel absolute error (the error head's loss).

    Args:
        log_b: (B, 1, H, W) predicted log scale; for each pixel the minimiser is ``b = |e|``, so over
            many pixels alike ``b`` learns the expected mean absolute error over the bands.
        pred: (B, C, H, W) 0-1 restoration, detached (the head judges, it does not train the restorer).
        target: (B, C, H, W) 0-1 reference.

    Returns:
        scalar mean of ``log b + |e| / b`` with ``|e|`` the mean over bands of ``|pred - target|``.
    """
    e = (pred - target).abs().mean(1, keepdim=True)
    return (log_b + e * torch.exp(-log_b)).mean()
