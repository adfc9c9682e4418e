"""Cloud brighter than any the network learned from: brought into the range it knows before the forward.

The bundled network learned what opaque cloud looks like from the simulator (:mod:`mmcanet.clouds.simulate`)
and a handful of real triplets: thick cloud at about 0.47-0.58 reflectance in the visible, with the
spectrum of :data:`~mmcanet.clouds.simulate.CLOUD_BRIGHTNESS` (dark in the cirrus band B10, bright in
SWIR). Real overcast is often brighter and differently coloured: the fully clouded dates of the
SEN12MS-CR-TS patch in ``../shared/data`` reach 0.69-0.85 in B2, and high (ice) cloud shows B10 up to
0.25 and SWIR at a quarter of the visible. Fed such a pixel, the network does not fill from the SAR: it
extrapolates from the cloud's colour, and a fully clouded scene came out near black in most bands (B3,
B4, B8 and B12 at 0.000 on one date) or with the wrong colours, the same fill whatever the SAR showed.

Under such cloud the optical input carries no information about the ground (nothing shows through), so
the engine hands the network the opaque cloud it was trained on instead: where the mask is set, a pixel
whose visible brightness (mean of B2, B3, B4) exceeds :data:`FROM_REFLECTANCE` is moved towards the
simulator's cloud spectrum at its own brightness (kept within 0.9-1.1 x the table's, as the simulator's
per-image factor and texture vary it), fully from :data:`FULL_REFLECTANCE` on. Clouds the network has
seen (up to ~0.58) are barely touched, darker pixels (thin cloud, haze, shadow) and pixels outside the
mask not at all; only the network INPUT changes. The network then fills from the SAR and the clear
context as it learned to, and the harmonisation and SAR-structure steps after it work as before.

Measured through ``mmcanet restore`` (``bench/validate_engine.py --images overcast``, docs/QUALITY.md
section 10): the 5 overcast dates over the SAR and references of the 5 validation triplets, 19.36 ->
25.67 dB, SAM 43.3 -> 11.8 deg; the real validation, trained and simulated sets move by +0.01, -0.12 and
-0.01 dB.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .bands import S2_BANDS_L1C, normalise_band_name
from .clouds.simulate import CLOUD_BRIGHTNESS

if TYPE_CHECKING:
    import torch

FROM_REFLECTANCE: float = 0.50
"""Visible brightness (mean of B2, B3, B4, reflectance) above which a masked pixel starts to be moved."""
FULL_REFLECTANCE: float = 0.60
"""... and from which it is replaced entirely (the simulator's brightest cloud is ~0.58)."""
LEVEL_RANGE: tuple[float, float] = (0.9, 1.1)
"""The replacement's brightness relative to the table's, following the pixel's own (cloud texture)."""
VISIBLE: tuple[str, ...] = ("B2", "B3", "B4")


def tame_bright_cloud(
    s2: torch.Tensor, mask: torch.Tensor, band_names: Sequence[str], reflectance_per_unit: float = 1.0
) -> torch.Tensor:
    """Network input with cloud brighter than the simulator's replaced by its cloud (module docstring).

    Args:
        s2: ``(B, C, H, W)`` optical input in model units, band order ``band_names``.
        mask: ``(B, 1, H, W)`` cloud (and shadow) mask, 0/1 or soft; only pixels with ``mask > 0`` change.
        band_names: the model's band names (the card's ``s2_bands``); a band set without B2, B3, B4, or
            with a band the cloud table lacks, is returned unchanged.
        reflectance_per_unit: reflectance of one model unit (the card's ``s2_max_dn / 10000``).

    Returns:
        A new tensor; ``s2`` itself when no pixel is bright enough.
    """
    import torch

    table = dict(zip(S2_BANDS_L1C, CLOUD_BRIGHTNESS.tolist(), strict=False))
    names = [normalise_band_name(n) for n in band_names]
    if not all(n in table for n in names) or not all(b in names for b in VISIBLE):
        return s2
    vis = [names.index(b) for b in VISIBLE]
    level = s2[:, vis].mean(dim=1, keepdim=True) * reflectance_per_unit
    weight = ((level - FROM_REFLECTANCE) / (FULL_REFLECTANCE - FROM_REFLECTANCE)).clamp(0.0, 1.0)
    weight = weight * (mask > 0).to(s2.dtype)
    if not bool((weight > 0).any()):
        return s2
    cloud = torch.tensor([table[n] for n in names], dtype=s2.dtype, device=s2.device).view(1, -1, 1, 1)
    table_level = sum(table[b] for b in VISIBLE) / len(VISIBLE)
    target = cloud * (level / table_level).clamp(*LEVEL_RANGE) / reflectance_per_unit
    return s2 + weight * (target - s2)
