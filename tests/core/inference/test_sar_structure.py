"""The SAR structure transfer: detail under the mask from a per-tile SAR->optical regression, nothing else moved."""

from __future__ import annotations

import numpy as np
from mmcanet.inference.blending import _smooth
from mmcanet.inference.sar_structure import transfer_sar_structure


def _fields(seed: int, h: int = 128, w: int = 128) -> np.ndarray:
    """Piecewise-constant 'fields' (4 x 4 px parcels) with random backscatter."""
    rng = np.random.default_rng(seed)
    parcels = rng.normal(0.0, 1.0, (h // 4, w // 4))
    return np.kron(parcels, np.ones((4, 4))).astype(np.float32)


def _scene() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """SAR (VV, VH dB) and a 4-band optical image whose detail follows the SAR (different gain per band)."""
    f = _fields(1)
    rng = np.random.default_rng(2)
    sar = np.stack([-12.0 + 3.0 * f, -19.0 + 2.0 * f]) + rng.normal(0, 0.3, (2, *f.shape))
    gains = np.array([0.02, 0.03, -0.01, 0.05], np.float32)[:, None, None]
    truth = (0.2 + gains * f).astype(np.float32)
    mask = np.zeros(f.shape, bool)
    mask[40:100, 30:90] = True
    return sar.astype(np.float32), truth, mask, np.zeros(f.shape, bool)


def _detail(x: np.ndarray) -> np.ndarray:
    """The band-pass the transfer predicts (sigma 1 minus sigma 8), for comparing structure."""
    return (_smooth(x, 1.0) / _smooth(np.ones(x.shape[-2:], np.float32), 1.0)
            - _smooth(x, 8.0) / _smooth(np.ones(x.shape[-2:], np.float32), 8.0))


def test_fill_takes_the_detail_the_sar_shows() -> None:
    sar, truth, mask, invalid = _scene()
    optical = np.where(mask, np.float32(0.7), truth)  # a thick cloud over the masked block
    # the right mean colour without the fields: a flat fill, as the network gives under thick cloud
    flat = truth[:, mask].mean(axis=1)[:, None, None]
    restored = np.where(mask, flat, truth).astype(np.float32)
    out = transfer_sar_structure(restored, optical, sar, mask, invalid, sigma=8)
    inner = np.zeros_like(mask)
    inner[50:90, 40:80] = True  # away from the mask edge, where the band-pass would see the edge
    for b in range(4):
        got, want = _detail(out)[b][inner], _detail(truth)[b][inner]
        # the fields appear in every band, with that band's gain (B3's is negative): correlation, not just contrast
        assert np.corrcoef(got, want)[0, 1] > 0.9
        assert 0.5 < np.polyfit(want, got, 1)[0] < 1.3  # ridge shrinks a little
    assert np.abs(out[:, inner] - truth[:, inner]).mean() < np.abs(restored[:, inner] - truth[:, inner]).mean() * 0.7


def test_only_the_mask_and_its_soft_edge_change() -> None:
    sar, truth, mask, invalid = _scene()
    restored = np.where(mask, np.float32(0.25), truth).astype(np.float32)
    out = transfer_sar_structure(restored, truth, sar, mask, invalid, sigma=8)
    near = np.zeros_like(mask)
    near[40 - 3 : 100 + 3, 30 - 3 : 90 + 3] = True  # the mask and its soft edge
    np.testing.assert_array_equal(out[:, ~near], restored[:, ~near])
    assert out.dtype == np.float32 and out.shape == restored.shape


def test_nothing_changes_without_enough_clear_pixels_sar_or_scale() -> None:
    sar, truth, mask, invalid = _scene()
    restored = np.where(mask, np.float32(0.25), truth).astype(np.float32)
    assert transfer_sar_structure(restored, truth, sar, mask, invalid, sigma=0) is restored  # off
    assert transfer_sar_structure(restored, truth, sar, np.ones_like(mask), invalid, sigma=8) is restored
    assert transfer_sar_structure(restored, truth, sar, np.zeros_like(mask), invalid, sigma=8) is restored
    almost = np.ones_like(mask)
    almost[:12, :12] = False  # 144 clear px: too few to fit on
    assert transfer_sar_structure(restored, truth, sar, almost, invalid, sigma=8) is restored
    no_sar = sar.copy()
    no_sar[1, 60:80, :] = np.nan  # VH missing in a band of rows: those pixels keep the fill
    out = transfer_sar_structure(restored, truth, no_sar, mask, invalid, sigma=8)
    np.testing.assert_array_equal(out[:, 60:80, 30:90], restored[:, 60:80, 30:90])
    assert np.abs(out[:, 45:55, 40:80] - restored[:, 45:55, 40:80]).max() > 0.01


def test_nodata_is_neither_fitted_on_nor_changed() -> None:
    sar, truth, mask, invalid = _scene()
    restored = np.where(mask, np.float32(0.25), truth).astype(np.float32)
    invalid = np.zeros_like(mask)
    invalid[:, :20] = True
    wild = truth.copy()
    wild[:, invalid] = 9.0  # nodata values in the optical input must not enter the fit
    a = transfer_sar_structure(restored, wild, sar, mask, invalid, sigma=8)
    b = transfer_sar_structure(restored, np.where(invalid, np.float32(0.0), truth), sar, mask, invalid, sigma=8)
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_array_equal(a[:, invalid], restored[:, invalid])
