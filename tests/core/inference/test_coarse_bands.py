"""Coarse bands smoothed under cloud in the network input (the #17 block-grid fix)."""

from __future__ import annotations

import numpy as np
import torch
from mmcanet.bands import S2_BANDS_L1C, S2_BANDS_L2A
from mmcanet.coarse_bands import coarse_band_sigmas, smooth_coarse_under_mask


def _blocky(seed: int, size: int = 48) -> torch.Tensor:
    """13 bands; each band a mosaic of blocks of its native size (2x2 for 20 m, 6x6 for 60 m)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((1, 13, size, size), np.float32)
    for i, name in enumerate(S2_BANDS_L1C):
        block = {"B1": 6, "B9": 6, "B10": 6, "B5": 2, "B6": 2, "B7": 2, "B8A": 2, "B11": 2, "B12": 2}.get(name, 1)
        coarse = rng.uniform(0.1, 0.5, (size // block, size // block)).astype(np.float32)
        out[0, i] = np.kron(coarse, np.ones((block, block), np.float32))
    return torch.from_numpy(out)


def test_sigmas_follow_native_resolution() -> None:
    s = coarse_band_sigmas(S2_BANDS_L1C)
    assert {S2_BANDS_L1C[i] for i in s} == {"B1", "B5", "B6", "B7", "B8A", "B9", "B10", "B11", "B12"}
    assert s[S2_BANDS_L1C.index("B1")] == 3.0 and s[S2_BANDS_L1C.index("B11")] == 1.0
    # band spellings of files and L2A order are understood
    s2a = coarse_band_sigmas(S2_BANDS_L2A)
    assert S2_BANDS_L2A.index("B11") in s2a and len(s2a) == 8
    assert coarse_band_sigmas(["B02", "B8A"]) == {1: 1.0}


def test_only_coarse_bands_under_the_mask_change() -> None:
    x = _blocky(0)
    before = x.clone()
    mask = torch.zeros(1, 1, 48, 48)
    mask[..., 24:, :] = 1.0
    y = smooth_coarse_under_mask(x, mask, S2_BANDS_L1C)
    assert torch.equal(x, before)  # the input is not modified
    fine = [i for i, b in enumerate(S2_BANDS_L1C) if i not in coarse_band_sigmas(S2_BANDS_L1C)]
    assert torch.equal(y[:, fine], x[:, fine])
    # far from the mask (more than 3 mask sigmas + the band's blur radius) nothing changes
    assert torch.allclose(y[..., :10, :], x[..., :10, :], atol=1e-6)
    # deep under the mask the 2x2 / 6x6 block edges are smoothed: neighbour differences shrink
    for i in coarse_band_sigmas(S2_BANDS_L1C):
        d_in = (x[0, i, 32:, 1:] - x[0, i, 32:, :-1]).abs().mean()
        d_out = (y[0, i, 32:, 1:] - y[0, i, 32:, :-1]).abs().mean()
        assert d_out < 0.6 * d_in, S2_BANDS_L1C[i]
    # the band mean is kept (a blur, not a colour change)
    assert torch.allclose(y[0, :, 30:, :].mean(dim=(1, 2)), x[0, :, 30:, :].mean(dim=(1, 2)), atol=0.02)


def test_clear_tile_is_returned_as_is() -> None:
    x = _blocky(1)
    assert smooth_coarse_under_mask(x, torch.zeros(1, 1, 48, 48), S2_BANDS_L1C) is x
