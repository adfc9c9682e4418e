"""Spectral-subspace prior: restored cloudy pixels are kept inside the spectral subspace of the scene.

A scene holds few materials; its spectra lie close to a low-dimensional affine subspace (linear mixing
of a few endmembers). Under thick cloud a network has to guess, and a wrong guess in spectral shape is
what the spectral angle (SAM) punishes. Projecting the restored spectra of cloudy pixels onto the mean
+ top-``rank`` principal components of the tile's clear (restored) pixels keeps brightness and spatial
detail but removes spectral shapes the scene does not contain. Measured on held-out images:
docs/MODEL.md ("Spectral-subspace prior").
"""

from __future__ import annotations

import torch


def project_to_scene_subspace(
    pred: torch.Tensor, cloud: torch.Tensor, rank: int, min_clear: int = 256
) -> torch.Tensor:
    """Blend each pixel with its projection onto the clear pixels' principal spectral subspace.

    Args:
        pred: restored image (B, C, H, W), 0-1 reflectance.
        cloud: cloud weight (B, 1, H, W) in [0, 1]; 1 = fully projected, 0 = untouched.
        rank: number of principal components kept (besides the mean).
        min_clear: when a tile has fewer clear pixels (cloud < 0.5) than this, the subspace is taken
            from all its pixels.

    Returns:
        (B, C, H, W): ``cloud * projection + (1 - cloud) * pred``.
    """
    b, c, h, w = pred.shape
    if rank <= 0 or rank >= c:
        return pred
    out = torch.empty_like(pred)
    for i in range(b):
        x = pred[i].reshape(c, -1).float()
        wgt = cloud[i].reshape(-1).float().clamp(0, 1)
        clear = wgt < 0.5
        basis = x[:, clear] if int(clear.sum()) >= min_clear else x
        mu = basis.mean(dim=1, keepdim=True)
        centred = basis - mu
        cov = centred @ centred.T / max(1, basis.shape[1])
        _, vecs = torch.linalg.eigh(cov.double())
        v = vecs[:, -rank:].to(x.dtype)
        proj = mu + v @ (v.T @ (x - mu))
        out[i] = (wgt * proj + (1 - wgt) * x).reshape(c, h, w).to(pred.dtype)
    return out
