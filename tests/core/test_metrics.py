"""Metrics against scikit-image and closed forms (SEN12MS-CR protocol, ../shared/docs/DOMAIN.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from mmcanet.metrics import (
    compute_metrics,
    compute_metrics_torch,
    mae,
    mae_torch,
    psnr,
    psnr_torch,
    sam,
    sam_torch,
    ssim,
    ssim_per_band,
    ssim_torch,
)
from skimage import metrics as skm  # a pinned dev dependency (requirements-dev.txt): missing = error


def pair(seed: int, c: int = 13, h: int = 40, w: int = 36, noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = rng.random((c, h, w)).astype(np.float32)
    # spatially structured target: smooth it a little so SSIM is not trivially ~0
    t = (t + np.roll(t, 1, axis=1) + np.roll(t, 1, axis=2)) / 3
    p = np.clip(t + noise * rng.standard_normal(t.shape), 0, 1).astype(np.float32)
    return p, t


def sk_ssim(p: np.ndarray, t: np.ndarray) -> float:
    return float(
        skm.structural_similarity(
            t, p, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=0
        )
    )


@pytest.mark.parametrize("seed,noise", [(0, 0.01), (1, 0.05), (2, 0.3)])
def test_ssim_matches_skimage(seed: int, noise: float) -> None:
    p, t = pair(seed, noise=noise)
    assert ssim(p, t) == pytest.approx(sk_ssim(p, t), abs=1e-4)
    # symmetric and 1 for identical images
    assert ssim(t, p) == pytest.approx(ssim(p, t), abs=1e-12)
    assert ssim(t, t) == pytest.approx(1.0, abs=1e-12)


def test_ssim_per_band_is_averaged() -> None:
    p, t = pair(3, c=4)
    per = ssim_per_band(p, t)
    assert per.shape == (4,)
    for i in range(4):
        single = skm.structural_similarity(
            t[i], p[i], gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0
        )
        assert per[i] == pytest.approx(single, abs=1e-4)


def test_psnr_matches_skimage_and_closed_form() -> None:
    p, t = pair(4)
    assert psnr(p, t) == pytest.approx(skm.peak_signal_noise_ratio(t, p, data_range=1.0), abs=1e-4)
    t0 = np.zeros((13, 8, 8), np.float32)
    assert psnr(t0 + 0.1, t0) == pytest.approx(20.0, abs=1e-6)  # RMSE 0.1 -> 20 dB
    assert psnr(t0, t0) == math.inf


def test_mae_and_sam_closed_form() -> None:
    t = np.zeros((3, 4, 4), np.float32)
    t[0] = 1.0
    p = np.zeros_like(t)
    p[1] = 1.0  # orthogonal spectra -> 90 degrees everywhere
    assert sam(p, t) == pytest.approx(90.0)
    assert mae(p, t) == pytest.approx(2.0 / 3.0)
    p2 = np.zeros_like(t)
    p2[0] = 1.0
    p2[1] = 1.0  # 45 degrees
    assert sam(p2, t) == pytest.approx(45.0)
    assert sam(2.0 * t, t) == pytest.approx(0.0, abs=1e-6)  # scale invariant
    # zero-norm guard: both zero -> 0, one zero -> 90, never NaN
    z = np.zeros_like(t)
    assert sam(z, z) == 0.0
    assert sam(z, t) == pytest.approx(90.0)
    zt, tt = torch.from_numpy(z)[None], torch.from_numpy(t)[None]
    assert float(sam_torch(zt, zt)) == 0.0 and float(sam_torch(zt, tt)) == pytest.approx(90.0)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(st.integers(0, 10_000), st.floats(0.0, 0.5))
def test_torch_metrics_match_numpy(seed: int, noise: float) -> None:
    p, t = pair(seed, c=5, h=16, w=20, noise=noise)
    pt, tt = torch.from_numpy(p)[None], torch.from_numpy(t)[None]
    assert float(ssim_torch(pt, tt)) == pytest.approx(ssim(p, t), abs=1e-4)
    assert float(mae_torch(pt, tt)) == pytest.approx(mae(p, t), abs=1e-6)
    assert float(sam_torch(pt, tt)) == pytest.approx(sam(p, t), abs=1e-3)
    if noise > 0:
        assert float(psnr_torch(pt, tt)) == pytest.approx(psnr(p, t), abs=1e-3)


def test_torch_metrics_batch_and_gradients() -> None:
    p0, t0 = pair(5, c=13, h=24, w=24)
    p1, t1 = pair(6, c=13, h=24, w=24, noise=0.2)
    pt = torch.from_numpy(np.stack([p0, p1])).requires_grad_(True)
    tt = torch.from_numpy(np.stack([t0, t1]))
    per = ssim_torch(pt, tt, reduction="none").detach()
    assert per.shape == (2,)
    assert float(per[0]) == pytest.approx(ssim(p0, t0), abs=1e-4)
    assert float(per[1]) == pytest.approx(ssim(p1, t1), abs=1e-4)
    loss = (1 - ssim_torch(pt, tt)) + sam_torch(pt, tt) / 90.0
    loss.backward()
    assert pt.grad is not None and torch.isfinite(pt.grad).all() and pt.grad.abs().sum() > 0
    # identical inputs: SAM gradient stays finite (arccos clamped)
    q = tt.clone().requires_grad_(True)
    sam_torch(q, tt).backward()
    assert torch.isfinite(q.grad).all()
    m = compute_metrics_torch(pt.detach(), tt)
    assert set(m) == {"psnr", "ssim", "mae", "sam", "rmse"} and m["psnr"].shape == (2,)


def test_compute_metrics_and_errors() -> None:
    p, t = pair(7)
    m = compute_metrics(p, t)
    assert set(m) == {"psnr", "ssim", "mae", "sam", "rmse"}
    assert m["psnr"] == pytest.approx(-20 * math.log10(m["rmse"]))
    with pytest.raises(ValueError, match="shape"):
        compute_metrics(p, t[:, :10])
    with pytest.raises(ValueError, match="11x11"):
        ssim(p[:, :8, :8], t[:, :8, :8])


# ------------------------------------------------------------------------- structure correlation


def _fields(seed: int, shape: tuple[int, int] = (96, 96)) -> np.ndarray:
    """Piecewise-constant 'fields' with edges (the structure the band-pass keeps), 3 bands, 0-1."""
    rng = np.random.default_rng(seed)
    h, w = shape
    img = np.zeros((3, h, w), np.float32)
    for _ in range(12):
        r, c = rng.integers(0, h - 8), rng.integers(0, w - 8)
        img[:, r:r + rng.integers(6, 30), c:c + rng.integers(6, 30)] = rng.uniform(0.05, 0.4, (3, 1, 1))
    return img + 0.1


def test_structure_correlation_values() -> None:
    from mmcanet.metrics import structure_correlation

    ref = _fields(1)
    mask = np.zeros(ref.shape[1:], bool)
    mask[20:80, 10:90] = True
    assert structure_correlation(ref, ref, mask) == pytest.approx(1.0)
    # a colour offset and a gain keep the structure: the band-pass removes the offset, Pearson the gain
    assert structure_correlation(0.5 * ref + 0.2, ref, mask) == pytest.approx(1.0, abs=1e-6)
    # a flat fill (the training-set mean under thick cloud) has no structure
    assert structure_correlation(np.full_like(ref, 0.15), ref, mask) == 0.0
    # inverted structure
    assert structure_correlation(1.0 - ref, ref, mask) == pytest.approx(-1.0, abs=1e-6)
    # another scene's structure: near zero, far from 1
    assert abs(structure_correlation(_fields(2), ref, mask)) < 0.3
    # heavy blur (what a network copying 20 m blocks or smoothing does) loses much of it
    from mmcanet.metrics import _gaussian_blur
    blurred = [structure_correlation(_gaussian_blur(ref, s), ref, mask) for s in (1.0, 3.0, 6.0)]
    assert 1.0 > blurred[0] > blurred[1] > blurred[2]
    assert blurred[2] < 0.8


def test_structure_correlation_needs_enough_masked_pixels() -> None:
    from mmcanet.metrics import structure_correlation

    ref = _fields(3)
    mask = np.zeros(ref.shape[1:], bool)
    mask[:5, :5] = True  # 25 px < 64
    assert math.isnan(structure_correlation(ref, ref, mask))
    with pytest.raises(ValueError, match="mask shape"):
        structure_correlation(ref, ref, mask[:10])


def test_structure_correlation_small_images_do_not_fail() -> None:
    from mmcanet.metrics import structure_correlation

    ref = _fields(4, (20, 20))
    assert structure_correlation(ref, ref, np.ones((20, 20), bool)) == pytest.approx(1.0)


def test_per_image_torch_metrics_equal_numpy_image_by_image() -> None:
    """compute_metrics_torch and every ``reduction="none"`` metric give each image's own numpy value."""
    p0, t0 = pair(7, c=4, h=20, w=24, noise=0.05)
    p1, t1 = pair(8, c=4, h=20, w=24, noise=0.3)
    pt, tt = torch.from_numpy(np.stack([p0, p1])), torch.from_numpy(np.stack([t0, t1]))
    got = compute_metrics_torch(pt, tt)
    per = {"mae": mae_torch(pt, tt, "none"), "psnr": psnr_torch(pt, tt, "none"), "sam": sam_torch(pt, tt, "none")}
    for i, (p, t) in enumerate(((p0, t0), (p1, t1))):
        want = compute_metrics(p, t)
        for k, tol in (("psnr", 1e-3), ("ssim", 1e-4), ("mae", 1e-6), ("sam", 1e-3), ("rmse", 1e-6)):
            assert float(got[k][i]) == pytest.approx(want[k], abs=tol), (k, i)
        for k, v in per.items():
            assert float(v[i]) == pytest.approx(want[k], abs=1e-3), (k, i)
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'none', got 'sum'"):
        mae_torch(pt, tt, "sum")


def test_structure_correlation_reflectance_scale_and_integer_masks() -> None:
    """Band-pass images of real reflectance are small (den << 1): still a correlation; a 0/1 uint8 mask is a mask."""
    from mmcanet.metrics import structure_correlation

    ref = 0.05 * _fields(9)
    mask = np.zeros(ref.shape[1:], np.uint8)
    mask[20:80, 10:90] = 1
    assert structure_correlation(0.9 * ref, ref, mask) == pytest.approx(1.0, abs=1e-6)
    assert structure_correlation(0.9 * ref, ref, mask) == structure_correlation(0.9 * ref, ref, mask.astype(bool))
    exact = np.zeros(ref.shape[1:], bool)
    exact.flat[:64] = True  # exactly min_pixels: scored (even if in one row)
    assert not math.isnan(structure_correlation(ref, _fields(10), exact))
    with pytest.raises(ValueError, match=r"does not match the image \(96, 96\)"):
        structure_correlation(ref, ref, mask[:10])
