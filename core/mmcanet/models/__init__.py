"""The model family: MMCANet (SAR + optical), its optical-only ablation, and a DSen2-CR-style comparator.

Only nn.Modules live here; tiling, I/O and training are elsewhere (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from torch import nn

from ..names import ARCHITECTURES
from .progressive import STRATEGIES, CloudRemovalNet
from .restorers import DSen2CRRestorer, MMCARestorer, SarEncoder

DEFAULT_CONFIGS: dict[str, dict[str, Any]] = {
    "mmcanet": {"widths": [16, 32, 64, 96], "heads": 4, "window": 8, "stages": 2, "ring_px": 24, "spectral_rank": 2,
                "error_head": False, "guide_reach": 16},
    "mmcanet_optical": {"widths": [16, 32, 64, 96], "heads": 4, "window": 8, "stages": 2, "ring_px": 24, "spectral_rank": 2,
                        "error_head": False, "guide_reach": 16},
    "dsen2cr": {"width": 256, "depth": 16, "stages": 2, "ring_px": 24, "spectral_rank": 2, "error_head": False, "guide_reach": 16},
}
"""Default keyword configuration per architecture (these ARE the configuration schema).

``error_head`` (the trust layer, docs/TRUST.md) is off by default: a model file whose card lacks it
(every file written before it existed) builds without one, and a head is added to a finished model
by a second training run (configs/error_head.toml).

``guide_reach`` (px; inference only, see :class:`~.progressive.CloudRemovalNet`) is 16 by default, also for
model files written before it existed (their cards lack it): measured better on every real validation
and training triplet with a detected cloud (docs/QUALITY.md section 8); 0 restores the former rule."""


_INT_RANGES: dict[str, tuple[int, int]] = {
    "heads": (1, 64), "window": (1, 64), "stages": (1, 16), "ring_px": (1, 4096), "spectral_rank": (0, 13), "guide_reach": (0, 1024),
    "width": (1, 4096), "depth": (1, 256),
}
"""Allowed ranges of the integer options (inclusive)."""


def _check_int(key: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} must be an integer, got {value!r} ({type(value).__name__})")
    if not lo <= value <= hi:
        raise ValueError(f"{key} must be between {lo} and {hi}, got {value}")
    return value


def check_model_config(arch: str, cfg: dict[str, Any]) -> None:
    """Check the types and ranges of a full configuration, so a bad value fails with its name, not deep in torch.

    Raises:
        ValueError: naming the option, what it must be and what it was.
    """
    for key, (lo, hi) in _INT_RANGES.items():
        if key in cfg:
            _check_int(key, cfg[key], lo, hi)
    if "error_head" in cfg and not isinstance(cfg["error_head"], bool):
        raise ValueError(f"error_head must be true or false, got {cfg['error_head']!r}")
    if "widths" in cfg:
        widths = cfg["widths"]
        if not isinstance(widths, (list, tuple)) or not 2 <= len(widths) <= 6:
            raise ValueError(f"widths must be a list of 2 to 6 integers (channels per level), got {widths!r}")
        for i, w in enumerate(widths):
            _check_int(f"widths[{i}]", w, 1, 4096)
        heads = int(cfg.get("heads", 1))
        for w in widths[-2:]:  # the two coarsest levels carry the cross-attention
            if w % heads:
                raise ValueError(f"widths {list(widths)}: the attention levels' widths must be divisible by heads ({heads}); {w} is not")


def model_config(arch: str, **overrides: Any) -> dict[str, Any]:
    """Full configuration for ``arch``: defaults updated by ``overrides``; unknown keys and bad values are rejected."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    cfg = dict(DEFAULT_CONFIGS[arch])
    unknown = set(overrides) - set(cfg)
    if unknown:
        raise ValueError(f"unknown option(s) for {arch}: {', '.join(sorted(unknown))}; known: {', '.join(sorted(cfg))}")
    cfg.update(overrides)
    check_model_config(arch, cfg)
    return cfg


def build_model(arch: str = "mmcanet", strategy: str = "single", bands: int = 13, **config: Any) -> CloudRemovalNet:
    """Build a network of the family.

    Args:
        arch: one of ARCHITECTURES.
        strategy: one of STRATEGIES (progressive restoration strategy).
        bands: S2 bands (13, Level-1C order).
        **config: overrides of DEFAULT_CONFIGS[arch] (e.g. widths, heads, window, stages, width, depth).

    Returns:
        A CloudRemovalNet: ``model(s2 (B,bands,H,W), s1 (B,2,H,W), mask=None) -> (B,bands,H,W)``, all 0-1.
    """
    cfg = model_config(arch, **config)
    stages, ring_px, rank = int(cfg["stages"]), int(cfg["ring_px"]), int(cfg["spectral_rank"])
    err, reach = bool(cfg["error_head"]), int(cfg["guide_reach"])
    sar_encoder: nn.Module | None = None
    make: Callable[[], nn.Module]
    if arch == "dsen2cr":
        make = partial(DSen2CRRestorer, bands=bands, width=int(cfg["width"]), depth=int(cfg["depth"]))
        return CloudRemovalNet(make, None, strategy, stages, bands, pad_multiple=1, ring_px=ring_px, pass_raw_sar=True,
                               spectral_rank=rank, error_head=err, guide_reach=reach)
    widths = tuple(int(w) for w in cfg["widths"])
    use_sar = arch == "mmcanet"
    make = partial(MMCARestorer, bands=bands, widths=widths, heads=int(cfg["heads"]), window=int(cfg["window"]), use_sar=use_sar)
    if use_sar:
        sar_encoder = SarEncoder(widths)
    return CloudRemovalNet(make, sar_encoder, strategy, stages, bands, pad_multiple=2 ** (len(widths) - 1), ring_px=ring_px,
                           spectral_rank=rank, error_head=err, guide_reach=reach)


__all__ = ["ARCHITECTURES", "DEFAULT_CONFIGS", "STRATEGIES", "CloudRemovalNet", "build_model", "model_config"]
