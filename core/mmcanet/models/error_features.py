"""The trust layer's feature predictor: per-pixel cues of where a restoration goes wrong, and a log-linear model on them.

The error of a restored pixel is larger deep inside a thick cloud (far from any clear pixel the fill
can copy from), on bright surfaces (absolute errors scale with reflectance) and on textured ones (a
small shift or blur costs more there). :func:`error_features` measures such cues from what the
network already has at inference (cloudy input, restored output, cloud mask / opacity, SAR), and
:class:`FeatureErrorModel` turns them into a predicted absolute error

    ``b = exp(intercept + sum_k coef_k * feature_k)``

whose coefficients are fitted by ``scripts/fit_trust.py`` (Laplace negative log-likelihood: the
minimiser of ``log b + |e| / b`` is ``b = E|e|``) and stored as plain numbers in the model card's
``trust.predictor`` table: data, never code. See docs/TRUST.md for the fit and the figures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

_EPS = 1e-3
"""Floor (model units, ~10 DN) under brightness / texture / change before the log."""

_NIR, _WV = 7, 9
"""Channel of B8 and B9 in the 13-band Level-1C order B1..B8, B8A, B9..B12 (mmcanet.bands.S2_BANDS_L1C)."""

FEATURE_NAMES: tuple[str, ...] = (
    "cloud", "cloud_7", "cloud_31", "cloud_95", "cloud_tile",
    "log_bright", "log_texture", "log_change", "log_cloudy_bright", "log_cloudy_bright_31", "log_nir",
    "log_water_vapour", "log_sar_texture", "no_sar", "opacity", "opacity_15", "log_opacity",
)
"""Every feature :func:`error_features` can compute, in its channel order:

* ``cloud``: the cloud mask / opacity (0-1) the network was guided by;
* ``cloud_7``, ``cloud_31``, ``cloud_95``: its mean in a 7 / 31 / 95 px box (how deep inside a cloud,
  or how close to one, a pixel lies: a smooth stand-in for the distance to the cloud edge on both sides);
* ``cloud_tile``: its mean over the tile (how much clear context the fill had);
* ``log_bright``: log of the restored reflectance, mean over the bands, in a 5 px box;
* ``log_texture``: log of the local (5 px) standard deviation of the restored band mean;
* ``log_change``: log of the mean absolute change between input and output (bands mean, 5 px box);
* ``log_cloudy_bright``: log of the input's reflectance, band mean (thick cloud is bright);
* ``log_cloudy_bright_31``: the same in a 31 px box (hazy or cloudy surroundings);
* ``log_nir``: log of the input's near-infrared reflectance (B8, band 8 of 13: vegetation is bright there);
* ``log_water_vapour``: log of the input's B9 (band 10 of 13: the water-vapour band, raised by haze and cloud);
* ``log_sar_texture``: log of the local (5 px) standard deviation of the normalised VV;
* ``no_sar``: 1 where the SAR is missing (all zero in the tile), else 0;
* ``opacity``, ``opacity_15``, ``log_opacity``: the network's own cloud-opacity estimate from the optical
  input (its opacity net, computed whether or not a mask is given), in a 15 px box, and its log: it
  also sees haze and thin cloud a detector's mask calls clear, where the errors against the clear date sit.
"""


def _box_1d(x: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Mean over a window of k along ``dim`` (centred, shrunk at the borders): cumulative sums, O(1) per pixel."""
    n = x.shape[dim]
    r = k // 2
    c = torch.cumsum(x, dim=dim)
    c = torch.cat([torch.zeros_like(c.narrow(dim, 0, 1)), c], dim=dim)  # c[i] = sum of x[:i]
    idx = torch.arange(n, device=x.device)
    hi = torch.clamp(idx + r + 1, max=n)
    lo = torch.clamp(idx - r, min=0)
    total = c.index_select(dim, hi) - c.index_select(dim, lo)
    shape = [1] * x.dim()
    shape[dim] = n
    return total / (hi - lo).to(x.dtype).view(shape)


def _box(x: torch.Tensor, k: int) -> torch.Tensor:
    """Mean in a k x k box (same size; the mean over the part of the box inside the image at borders)."""
    if k <= 1:
        return x
    return _box_1d(_box_1d(x, k, -2), k, -1)


def _local_std(x: torch.Tensor, k: int) -> torch.Tensor:
    m = _box(x, k)
    return torch.sqrt(torch.clamp(_box(x * x, k) - m * m, min=0.0))


def error_features(
    cloudy: torch.Tensor, restored: torch.Tensor, cloud: torch.Tensor, s1: torch.Tensor,
    names: Sequence[str] = FEATURE_NAMES, opacity: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-pixel error cues of a restoration.

    Args:
        cloudy: optical input (B, bands, H, W), model units (0-1).
        restored: the restored image (B, bands, H, W), same units.
        cloud: cloud mask or opacity (B, 1, H, W) in [0, 1].
        s1: SAR (B, 2, H, W) normalised 0-1; all zeros where missing.
        names: which features, in this order (each one of :data:`FEATURE_NAMES`).
        opacity: the network's opacity estimate (B, 1, H, W) in [0, 1]; ``cloud`` stands in when None.

    Returns:
        (B, len(names), H, W) float32.

    Raises:
        ValueError: an unknown feature name.
    """
    unknown = [n for n in names if n not in FEATURE_NAMES]
    if unknown:
        raise ValueError(f"unknown trust feature(s) {unknown}; known: {', '.join(FEATURE_NAMES)}")
    cloudy, restored = cloudy.float(), torch.clamp(restored.float(), 0.0, None)
    cloud = torch.clamp(cloud.float(), 0.0, 1.0)
    out: dict[str, torch.Tensor] = {}
    need = set(names)
    bright = restored.mean(1, keepdim=True)
    opa = cloud if opacity is None else torch.clamp(opacity.float(), 0.0, 1.0)
    for n in need:
        if n == "cloud":
            out[n] = cloud
        elif n == "opacity":
            out[n] = opa
        elif n == "opacity_15":
            out[n] = _box(opa, 15)
        elif n == "log_opacity":
            out[n] = torch.log(opa + _EPS)
        elif n.startswith("cloud_") and n != "cloud_tile":
            out[n] = _box(cloud, int(n.split("_")[1]))
        elif n == "cloud_tile":
            out[n] = cloud.mean(dim=(-2, -1), keepdim=True).expand_as(cloud)
        elif n == "log_bright":
            out[n] = torch.log(_box(bright, 5) + _EPS)
        elif n == "log_texture":
            out[n] = torch.log(_local_std(bright, 5) + _EPS)
        elif n == "log_change":
            out[n] = torch.log(_box((restored - cloudy).abs().mean(1, keepdim=True), 5) + _EPS)
        elif n == "log_cloudy_bright":
            out[n] = torch.log(torch.clamp(cloudy.mean(1, keepdim=True), 0.0, None) + _EPS)
        elif n == "log_cloudy_bright_31":
            out[n] = torch.log(_box(torch.clamp(cloudy.mean(1, keepdim=True), 0.0, None), 31) + _EPS)
        elif n == "log_nir":
            out[n] = torch.log(torch.clamp(cloudy[:, _NIR : _NIR + 1], 0.0, None) + _EPS)
        elif n == "log_water_vapour":
            out[n] = torch.log(torch.clamp(cloudy[:, _WV : _WV + 1], 0.0, None) + _EPS)
        elif n == "log_sar_texture":
            out[n] = torch.log(_local_std(s1[:, :1].float(), 5) + _EPS)
        elif n == "no_sar":
            missing = (s1.abs().flatten(1).amax(1) == 0).float()
            out[n] = missing.view(-1, 1, 1, 1).expand_as(cloud)
    return torch.cat([out[n] for n in names], dim=1)


class FeatureErrorModel(nn.Module):
    """Predicted absolute error ``exp(intercept + coef . features)`` (model units, mean over bands).

    Holds no learned parameters of its own: the coefficients come from the model card's
    ``trust.predictor`` table (:meth:`from_card`) and are kept in non-persistent buffers, so the
    weights file is the same with or without it.

    Args:
        names: feature names (:data:`FEATURE_NAMES`), in the order of ``coef``.
        coef: one coefficient per feature (on the standardised feature, see ``mean`` / ``std``).
        intercept: the constant term of ``log b``.
        mean, std: per-feature standardisation applied before ``coef`` (fit-time statistics).
    """

    coef: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, names: Sequence[str], coef: Sequence[float], intercept: float,
                 mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if not (len(names) == len(coef) == len(mean) == len(std)):
            raise ValueError(f"trust predictor: {len(names)} features but {len(coef)} coefficients, "
                             f"{len(mean)} means, {len(std)} stds")
        unknown = [n for n in names if n not in FEATURE_NAMES]
        if unknown:
            raise ValueError(f"trust predictor: unknown feature(s) {unknown}")
        values = [*coef, intercept, *mean, *std]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            raise ValueError("trust predictor: every coefficient, mean and std must be a finite number")
        if any(s <= 0 for s in std):
            raise ValueError("trust predictor: every std must be > 0")
        self.names = tuple(names)
        self.intercept = float(intercept)
        self.register_buffer("coef", torch.tensor(coef, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    @classmethod
    def from_card(cls, table: Mapping[str, Any]) -> FeatureErrorModel:
        """Build from a card's ``trust.predictor`` table (``features``, ``coef``, ``intercept``, ``mean``, ``std``).

        Raises:
            ValueError: a missing key or a bad value (the caller names the file).
        """
        try:
            return cls(list(table["features"]), list(table["coef"]), table["intercept"], list(table["mean"]),
                       list(table["std"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"trust.predictor must have features, coef, intercept, mean, std ({exc!r})") from None

    def to_card(self) -> dict[str, Any]:
        """The card's ``trust.predictor`` table (plain numbers)."""
        return {"kind": "log-linear", "features": list(self.names),
                "coef": [round(float(v), 6) for v in self.coef.flatten()], "intercept": round(self.intercept, 6),
                "mean": [round(float(v), 6) for v in self.mean.flatten()],
                "std": [round(float(v), 6) for v in self.std.flatten()]}

    def log_error(self, cloudy: torch.Tensor, restored: torch.Tensor, cloud: torch.Tensor, s1: torch.Tensor,
                  opacity: torch.Tensor | None = None) -> torch.Tensor:
        """Inputs as :func:`error_features` -> log predicted absolute error (B, 1, H, W), model units."""
        f = (error_features(cloudy, restored, cloud, s1, self.names, opacity) - self.mean) / self.std
        return torch.clamp((f * self.coef).sum(1, keepdim=True) + self.intercept, -12.0, 1.0)

    def forward(self, cloudy: torch.Tensor, restored: torch.Tensor, cloud: torch.Tensor, s1: torch.Tensor,
                opacity: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted absolute error (B, 1, H, W), model units (mean over bands), before the card's scale."""
        return torch.exp(self.log_error(cloudy, restored, cloud, s1, opacity))
